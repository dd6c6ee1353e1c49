#include "can/svg_plot.h"

#include <gtest/gtest.h>

#include <cmath>
#include <regex>

#include "can/error.h"

namespace can {
namespace {

size_t count(const std::string& text, const std::string& part) {
  size_t found = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++found;
  return found;
}

PlotFigure one_panel(std::vector<double> x, std::vector<double> y) {
  PlotSeries series;
  series.label = "a < b & c";
  series.x = std::move(x);
  series.y = std::move(y);
  PlotPanel panel;
  panel.title = "T";
  panel.x_label = "margin";
  panel.y_label = "λ*";
  panel.series.push_back(series);
  PlotFigure figure;
  figure.panels.push_back(panel);
  return figure;
}

TEST(SvgPlot, DrawsEachSeriesWithNiceTicksAndEscapedText) {
  const std::string svg = render_svg(one_panel({0, 0.5, 1}, {0, 0.37, 0.93}));
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_EQ(count(svg, "<svg "), 1u);
  EXPECT_EQ(count(svg, "</svg>"), 1u);
  EXPECT_EQ(count(svg, "<path "), 1u);
  EXPECT_EQ(count(svg, "<circle "), 3u);
  // y from 0 to 0.93: step 0.2, axis 0.0 to 1.0.
  for (const char* tick : {">0.0<", ">0.2<", ">0.4<", ">0.6<", ">0.8<", ">1.0<"})
    EXPECT_EQ(count(svg, tick), 2u) << tick;
  EXPECT_EQ(count(svg, "a &lt; b &amp; c"), 1u);
  EXPECT_EQ(count(svg, "λ*"), 1u);
}

TEST(SvgPlot, NonFinitePointsBreakTheLine) {
  const std::string svg = render_svg(one_panel({0, 1, 2, 3}, {1, 2, NAN, 4}));
  const std::smatch path = [&] {
    std::smatch match;
    std::regex_search(svg, match, std::regex("<path d=\"([^\"]*)\""));
    return match;
  }();
  ASSERT_FALSE(path.empty());
  const std::string d = path[1];
  EXPECT_EQ(count(d, "M"), 2u);  // two pieces: points 0-1, then point 3
  EXPECT_EQ(count(d, "L"), 1u);
  EXPECT_EQ(count(svg, "<circle "), 3u);
}

TEST(SvgPlot, ConstantDataStillGetsAnAxis) {
  const std::string svg = render_svg(one_panel({2, 2}, {5, 5}));
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}

TEST(SvgPlot, PanelsAreLaidOutInAGrid) {
  PlotFigure figure = one_panel({0, 1}, {0, 1});
  figure.panels.resize(3, figure.panels[0]);
  figure.columns = 2;
  figure.title = "grid";
  const std::string svg = render_svg(figure);
  // Two columns, two rows, a title band of 32 pixels.
  EXPECT_NE(svg.find("width=\"840\" height=\"632\""), std::string::npos);
}

// The legend's box goes to the corner with the fewest points: with points in both top corners
// and the bottom left, to the bottom right; with points only low, to the top right.
TEST(SvgPlot, TheLegendTakesTheCornerWithTheFewestPoints) {
  const auto legend_and_frame = [](const std::string& svg) {
    std::smatch legend, frame;
    const std::regex legend_box(R"re(<rect x="[0-9.]+" y="([0-9.]+)" width="[0-9.]+" height="[0-9]+" fill="white")re");
    const std::regex frame_box(R"re(<rect x="[0-9.]+" y="([0-9.]+)" width="[0-9.]+" height="([0-9.]+)" fill="none")re");
    EXPECT_TRUE(std::regex_search(svg, legend, legend_box)) << svg;
    EXPECT_TRUE(std::regex_search(svg, frame, frame_box)) << svg;
    return std::pair{std::stod(legend[1]), std::stod(frame[1]) + std::stod(frame[2]) / 2};  // legend top, frame middle
  };
  const auto [high_corners_legend, high_corners_middle] =
      legend_and_frame(render_svg(one_panel({0, 0.05, 0.95, 1, 0, 0.05}, {1, 0.95, 0.95, 1, 0, 0.05})));
  EXPECT_GT(high_corners_legend, high_corners_middle);
  const auto [low_legend, low_middle] = legend_and_frame(render_svg(one_panel({0, 0.5, 1}, {0, 0.02, 0.01})));
  EXPECT_LT(low_legend, low_middle);
}

TEST(SvgPlot, MismatchedSeriesIsAnErrorNamingIt) {
  try {
    render_svg(one_panel({0, 1, 2}, {0, 1}));
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("series 'a < b & c': 3 x values but 2 y values"), std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace can
