#include "can/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "can/atomic_file.h"
#include "can/error.h"

namespace can {
namespace {

// Matplotlib's "tab10": distinguishable, and colour-blind safe for the first few.
constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr int kPaletteSize = sizeof(kPalette) / sizeof(kPalette[0]);

// Panel-relative pixels around the plotting area: room for ticks, labels and the title.
constexpr double kLeft = 64;
constexpr double kRight = 16;
constexpr double kTop = 30;
constexpr double kBottom = 44;
constexpr double kFigureTitleHeight = 32;
constexpr double kCharacterWidth = 6.2;  // average width of a character at font-size 11, for the legend box

std::string escape_xml(const std::string& text) {
  std::string escaped;
  for (char c : text) {
    switch (c) {
      case '&':
        escaped += "&amp;";
        break;
      case '<':
        escaped += "&lt;";
        break;
      case '>':
        escaped += "&gt;";
        break;
      case '"':
        escaped += "&quot;";
        break;
      default:
        escaped += c;
    }
  }
  return escaped;
}

// Characters, not bytes, of UTF-8 text (λ is one character).
size_t display_length(const std::string& text) {
  return static_cast<size_t>(std::count_if(text.begin(), text.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

// An axis from the data range, extended to whole multiples of a 1-2-5 step.
struct Axis {
  double low = 0;
  double high = 1;
  double step = 0.2;

  static Axis fit(double data_low, double data_high) {
    if (!(data_low <= data_high)) {  // no finite data
      data_low = 0;
      data_high = 1;
    }
    if (data_high - data_low <= 1e-12 * std::max(std::abs(data_low), std::abs(data_high))) {
      const double pad = data_low != 0 ? 0.1 * std::abs(data_low) : 1.0;
      data_low -= pad;
      data_high += pad;
    }
    Axis axis;
    const double raw_step = (data_high - data_low) / 5;
    const double magnitude = std::pow(10.0, std::floor(std::log10(raw_step)));
    const double fraction = raw_step / magnitude;
    axis.step = magnitude * (fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10);
    axis.low = std::floor(data_low / axis.step + 1e-9) * axis.step;
    axis.high = std::ceil(data_high / axis.step - 1e-9) * axis.step;
    return axis;
  }

  std::vector<double> ticks() const {
    std::vector<double> values;
    const int count = static_cast<int>(std::lround((high - low) / step));
    for (int t = 0; t <= count; ++t) values.push_back(low + t * step);
    return values;
  }

  std::string label(double value) const {
    if (std::abs(value) < 1e-9 * step) value = 0;  // no "-0"
    if (step >= 1e5 || step < 1e-4) return fmt::format("{:.3g}", value);
    const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
    return fmt::format("{:.{}f}", value, decimals);
  }
};

class PanelRenderer {
 public:
  PanelRenderer(std::ostringstream& out, const PlotPanel& panel, double origin_x, double origin_y, double width,
                double height)
      : out_(out), panel_(panel), origin_x_(origin_x), origin_y_(origin_y), width_(width), height_(height) {}

  void render() {
    fit_axes();
    const double left = origin_x_ + kLeft;
    const double top = origin_y_ + kTop;
    const double plot_width = width_ - kLeft - kRight;
    const double plot_height = height_ - kTop - kBottom;
    out_ << fmt::format(
                R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle" font-size="13" font-weight="bold">{}</text>)",
                left + plot_width / 2, origin_y_ + 19, escape_xml(panel_.title))
         << '\n';
    for (double tick : y_axis_.ticks()) {
      const double y = to_y(tick);
      out_ << fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#e6e6e6"/>)", left, y,
                          left + plot_width, y)
           << fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="end" font-size="11">{}</text>)", left - 5, y + 4,
                          y_axis_.label(tick))
           << '\n';
    }
    for (double tick : x_axis_.ticks()) {
      const double x = to_x(tick);
      out_ << fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#e6e6e6"/>)", x, top, x,
                          top + plot_height)
           << fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle" font-size="11">{}</text>)", x,
                          top + plot_height + 15, x_axis_.label(tick))
           << '\n';
    }
    out_ << fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="none" stroke="#444"/>)",
                        left, top, plot_width, plot_height)
         << '\n';
    out_ << fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle" font-size="12">{}</text>)",
                        left + plot_width / 2, origin_y_ + height_ - 8, escape_xml(panel_.x_label))
         << '\n';
    const double label_x = origin_x_ + 14;
    const double label_y = top + plot_height / 2;
    out_
        << fmt::format(
               R"svg(<text x="{:.1f}" y="{:.1f}" text-anchor="middle" font-size="12" transform="rotate(-90 {:.1f} {:.1f})">{}</text>)svg",
               label_x, label_y, label_x, label_y, escape_xml(panel_.y_label))
        << '\n';

    for (const PlotReferenceLine& line : panel_.vertical_lines) {
      if (!std::isfinite(line.x)) continue;
      const double x = to_x(line.x);
      out_
          << fmt::format(
                 R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="#888" stroke-dasharray="2 3"/>)", x,
                 top, x, top + plot_height)
          << fmt::format(
                 R"svg(<text x="{0:.1f}" y="{1:.1f}" font-size="10" fill="#555" transform="rotate(-90 {0:.1f} {1:.1f})">{2}</text>)svg",
                 x - 4, top + plot_height - 4, escape_xml(line.label))
          << '\n';
    }

    std::vector<std::string> colors;
    int next_color = 0;  // each panel starts the palette afresh, so like series match across panels
    for (const PlotSeries& series : panel_.series) {
      colors.push_back(series.color.empty() ? kPalette[next_color++ % kPaletteSize] : series.color);
      draw_series(series, colors.back());
    }
    draw_legend(colors, left, top, plot_width, plot_height);
  }

 private:
  void fit_axes() {
    double x_low = std::numeric_limits<double>::infinity();
    double x_high = -x_low;
    double y_low = x_low;
    double y_high = -x_low;
    for (const PlotSeries& series : panel_.series) {
      for (size_t p = 0; p < series.x.size(); ++p) {
        if (!std::isfinite(series.x[p]) || !std::isfinite(series.y[p])) continue;
        x_low = std::min(x_low, series.x[p]);
        x_high = std::max(x_high, series.x[p]);
        y_low = std::min(y_low, series.y[p]);
        y_high = std::max(y_high, series.y[p]);
      }
    }
    for (const PlotReferenceLine& line : panel_.vertical_lines) {
      if (!std::isfinite(line.x)) continue;
      x_low = std::min(x_low, line.x);
      x_high = std::max(x_high, line.x);
    }
    x_axis_ = Axis::fit(x_low, x_high);
    y_axis_ = Axis::fit(y_low, y_high);
  }

  double to_x(double value) const {
    return origin_x_ + kLeft + (value - x_axis_.low) / (x_axis_.high - x_axis_.low) * (width_ - kLeft - kRight);
  }
  double to_y(double value) const {
    return origin_y_ + height_ - kBottom -
           (value - y_axis_.low) / (y_axis_.high - y_axis_.low) * (height_ - kTop - kBottom);
  }

  void draw_series(const PlotSeries& series, const std::string& color) {
    std::string path;
    bool pen_down = false;
    for (size_t p = 0; p < series.x.size(); ++p) {
      if (!std::isfinite(series.x[p]) || !std::isfinite(series.y[p])) {
        pen_down = false;
        continue;
      }
      path += fmt::format("{}{:.2f},{:.2f} ", pen_down ? "L" : "M", to_x(series.x[p]), to_y(series.y[p]));
      pen_down = true;
    }
    if (!path.empty()) {
      out_ << fmt::format(R"(<path d="{}" fill="none" stroke="{}" stroke-width="1.8"{}/>)", path, color,
                          series.dashed ? R"( stroke-dasharray="6 4")" : "")
           << '\n';
    }
    if (!series.markers) return;
    for (size_t p = 0; p < series.x.size(); ++p) {
      if (!std::isfinite(series.x[p]) || !std::isfinite(series.y[p])) continue;
      out_ << fmt::format(R"(<circle cx="{:.2f}" cy="{:.2f}" r="2.6" fill="{}"/>)", to_x(series.x[p]),
                          to_y(series.y[p]), color);
    }
    out_ << '\n';
  }

  // In the corner that covers the fewest data points (top right, top left, bottom right,
  // bottom left: the first of equals), on a translucent box.
  void draw_legend(const std::vector<std::string>& colors, double left, double top, double plot_width,
                   double plot_height) {
    size_t longest = 0;
    int entries = 0;
    for (const PlotSeries& series : panel_.series) {
      if (series.label.empty()) continue;
      longest = std::max(longest, display_length(series.label));
      ++entries;
    }
    if (entries == 0) return;
    const double box_width = 34 + kCharacterWidth * static_cast<double>(longest);
    const double box_height = 16 * entries + 6;
    const double right = left + plot_width - box_width - 6, low = top + plot_height - box_height - 6;
    const std::pair<double, double> corners[] = {{right, top + 6}, {left + 6, top + 6}, {right, low}, {left + 6, low}};
    auto [box_left, box_top] = corners[0];
    int fewest = points_inside(box_left, box_top, box_width, box_height);
    for (const auto& [corner_left, corner_top] : corners) {
      const int covered = points_inside(corner_left, corner_top, box_width, box_height);
      if (covered < fewest) fewest = covered, box_left = corner_left, box_top = corner_top;
    }
    out_
        << fmt::format(
               R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{}" fill="white" fill-opacity="0.85" stroke="#ccc"/>)",
               box_left, box_top, box_width, box_height)
        << '\n';
    int row = 0;
    for (size_t s = 0; s < panel_.series.size(); ++s) {
      const PlotSeries& series = panel_.series[s];
      if (series.label.empty()) continue;
      const double y = box_top + 14 + 16 * row++;
      out_ << fmt::format(R"(<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" stroke="{}" stroke-width="1.8"{}/>)",
                          box_left + 6, y - 4, box_left + 26, y - 4, colors[s],
                          series.dashed ? R"( stroke-dasharray="6 4")" : "")
           << fmt::format(R"(<text x="{:.1f}" y="{:.1f}" font-size="11">{}</text>)", box_left + 30, y,
                          escape_xml(series.label))
           << '\n';
    }
  }

  // Data points (in pixels) that fall inside a box, to keep the legend off the data.
  int points_inside(double box_left, double box_top, double box_width, double box_height) const {
    int count = 0;
    for (const PlotSeries& series : panel_.series) {
      for (size_t p = 0; p < series.x.size(); ++p) {
        if (!std::isfinite(series.x[p]) || !std::isfinite(series.y[p])) continue;
        const double x = to_x(series.x[p]);
        const double y = to_y(series.y[p]);
        count += x >= box_left && x <= box_left + box_width && y >= box_top && y <= box_top + box_height;
      }
    }
    return count;
  }

  std::ostringstream& out_;
  const PlotPanel& panel_;
  double origin_x_, origin_y_, width_, height_;
  Axis x_axis_;
  Axis y_axis_;
};

}  // namespace

std::string palette_color(size_t index) { return kPalette[index % kPaletteSize]; }

int histogram_bins(size_t count) {
  return std::clamp(static_cast<int>(std::ceil(2 * std::cbrt(static_cast<double>(count)))), 5, 40);
}

PlotSeries histogram_series(const std::vector<double>& values, double low, double high, int bins) {
  check(bins >= 1 && high > low, "histogram: need at least one bin over a range of positive width, got {} bins "
        "over [{}, {}]", bins, low, high);
  const double width = (high - low) / bins;
  std::vector<double> fraction(bins, 0.0);  // [bins] share of the values per bin
  for (double value : values) {
    check(value >= low && value <= high, "histogram: value {} lies outside [{}, {}]", value, low, high);
    fraction[std::min(bins - 1, static_cast<int>((value - low) / width))] += 1.0 / static_cast<double>(values.size());
  }
  PlotSeries series;
  series.markers = false;
  series.x.push_back(low);
  series.y.push_back(0);
  for (int k = 0; k < bins; ++k) {
    const double left = low + k * width, right = k + 1 == bins ? high : low + (k + 1) * width;
    series.x.insert(series.x.end(), {left, right});
    series.y.insert(series.y.end(), {fraction[k], fraction[k]});
  }
  series.x.push_back(high);
  series.y.push_back(0);
  return series;
}

std::string render_svg(const PlotFigure& figure) {
  check(!figure.panels.empty(), "plot '{}': no panels", figure.title);
  check(figure.columns > 0 && figure.panel_width > kLeft + kRight && figure.panel_height > kTop + kBottom,
        "plot '{}': columns must be positive and panels at least {}×{} pixels", figure.title, kLeft + kRight + 1,
        kTop + kBottom + 1);
  for (const PlotPanel& panel : figure.panels) {
    for (const PlotSeries& series : panel.series) {
      check(series.x.size() == series.y.size(), "plot '{}', panel '{}', series '{}': {} x values but {} y values",
            figure.title, panel.title, series.label, series.x.size(), series.y.size());
    }
  }
  const int panel_count = static_cast<int>(figure.panels.size());
  const int columns = std::min(figure.columns, panel_count);
  const int rows = (panel_count + columns - 1) / columns;
  const double title_height = figure.title.empty() ? 0 : kFigureTitleHeight;
  const double width = columns * figure.panel_width;
  const double height = title_height + rows * figure.panel_height;

  std::ostringstream out;
  out << R"(<?xml version="1.0" encoding="UTF-8"?>)" << '\n'
      << fmt::format(
             R"(<svg xmlns="http://www.w3.org/2000/svg" width="{0}" height="{1}" viewBox="0 0 {0} {1}" font-family="Helvetica, Arial, sans-serif">)",
             width, height)
      << '\n'
      << R"(<rect width="100%" height="100%" fill="white"/>)" << '\n';
  if (!figure.title.empty()) {
    out << fmt::format(R"(<text x="{:.1f}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>)",
                       width / 2, escape_xml(figure.title))
        << '\n';
  }
  for (int p = 0; p < panel_count; ++p) {
    PanelRenderer(out, figure.panels[p], (p % columns) * figure.panel_width,
                  title_height + (p / columns) * figure.panel_height, figure.panel_width, figure.panel_height)
        .render();
  }
  out << "</svg>\n";
  return out.str();
}

void write_svg(const std::filesystem::path& path, const PlotFigure& figure) {
  write_text_atomically(path, render_svg(figure));
}

}  // namespace can
