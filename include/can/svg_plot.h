// Small, dependency-free SVG line plots for reports and sweeps. A figure is a
// grid of panels; each panel has its own axes with "nice" ticks, axis labels, a
// legend, any number of line series and optional vertical reference lines. The
// output is a standalone UTF-8 SVG file that any browser displays.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace can {

struct PlotSeries {
  std::string label;      // legend entry; empty for none
  std::vector<double> x;  // [points]
  std::vector<double> y;  // [points]; a non-finite x or y breaks the line there
  std::string color;      // any CSS colour; empty takes the next colour of the palette
  bool dashed = false;
  bool markers = true;  // a dot at each point
};

// A vertical line across the panel at `x` (a threshold, a limit), labelled at the top.
struct PlotReferenceLine {
  double x = 0;
  std::string label;
};

struct PlotPanel {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<PlotSeries> series;
  std::vector<PlotReferenceLine> vertical_lines;
};

struct PlotFigure {
  std::string title;
  std::vector<PlotPanel> panels;  // laid out row by row
  int columns = 2;
  int panel_width = 420;   // pixels, axes and labels included
  int panel_height = 300;  // pixels
};

// Colour `index` of the palette that series without a colour take in turn (cycling).
std::string palette_color(size_t index);

// Rice's rule for a histogram of `count` values: 2·count^(1/3) bins, kept within [5, 40].
int histogram_bins(size_t count);

// A histogram as a step line: the fraction of `values` in each of `bins` equal bins over
// [low, high] (each value must lie within it; high > low), from (low, 0) to (high, 0).
// No label, colour or markers: the caller sets them.
PlotSeries histogram_series(const std::vector<double>& values, double low, double high, int bins);

// The figure as SVG text. Errors (no panels, x and y of different lengths) name the panel and series.
std::string render_svg(const PlotFigure& figure);

// Writes render_svg(figure) to `path` atomically.
void write_svg(const std::filesystem::path& path, const PlotFigure& figure);

}  // namespace can
