// Where λ* comes from (the paper's Figure 1): D̂ on a grid, λ*, PGD's path from λ₀ = 1.
#include "can/dual_landscape.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "assertions.h"

namespace {

using can::testing::contains;
using can::testing::error_message;

// Identical prompts with responses (r, g) = (1, 0) and (0, 1): λ* = 1 + β·logit(½ + b), reach ½.
can::OfflineScores two_response_prompts() {
  return can::OfflineScores({"a", "b", "c"}, {{1, 0}, {1, 0}, {1, 0}}, {{{0, 1}}, {{0, 1}}, {{0, 1}}});
}

TEST(DualLandscape, CurvesAreTheDualOnTheGridWithTheClosedFormMinimiser) {
  can::DualOptions options;
  options.beta = 0.1;
  const std::vector<double> margins = {0.1, 0.3, 0.7};
  const can::DualLandscape landscape = can::dual_landscape(two_response_prompts(), options, margins, 41, 200);
  EXPECT_EQ(landscape.safety, (std::vector<double>{0, 1, 0, 1, 0, 1}));
  ASSERT_EQ(landscape.lambda_grid.size(), 41u);
  const double largest = 1 + 0.1 * std::log(0.8 / 0.2);  // b = 0.3
  EXPECT_EQ(landscape.lambda_grid.front(), 0.0);
  EXPECT_DOUBLE_EQ(landscape.lambda_grid.back(), 2 * largest);
  ASSERT_EQ(landscape.curves.size(), 3u);
  for (size_t c = 0; c < 2; ++c) {
    const can::DualCurve& curve = landscape.curves[c];
    const double expected = 1 + 0.1 * std::log((0.5 + margins[c]) / (0.5 - margins[c]));
    ASSERT_TRUE(curve.solution.converged);
    EXPECT_NEAR(curve.solution.lambda[0], expected, 1e-9);
    const can::DualProblem problem(two_response_prompts(), 0.1, {margins[c]});
    for (size_t k = 0; k < landscape.lambda_grid.size(); k += 10) {
      EXPECT_EQ(curve.dual_value[k], problem.evaluate({landscape.lambda_grid[k]}, false).value);
      EXPECT_GE(curve.dual_value[k], curve.solution.dual_value - 1e-12);  // λ* minimises
    }
    // PGD starts at the paper's λ₀ = 1 and ends at λ*.
    EXPECT_EQ(curve.pgd_lambda.front(), 1.0);
    EXPECT_NEAR(curve.pgd_lambda.back(), expected, 1e-6);
    EXPECT_GT(curve.pgd_lambda.size(), 2u);
  }
  // b = 0.7 is beyond the reach ½: a curve, but no λ* and no PGD.
  EXPECT_FALSE(landscape.curves[2].solution.feasible);
  EXPECT_TRUE(landscape.curves[2].pgd_lambda.empty());
  const nlohmann::json written = can::to_json(landscape);
  EXPECT_TRUE(written.at("curves").at(2).at("lambda").is_null());
  EXPECT_NEAR(written.at("curves").at(1).at("lambda").get<double>(), largest, 1e-9);
  const std::string svg = can::render_svg(can::landscape_figure(landscape, "fig1"));
  EXPECT_TRUE(contains(svg, "PGD from λ₀ = 1"));
  EXPECT_TRUE(contains(svg, "b = 0.3"));
}

TEST(DualLandscape, OneConstraintOnly) {
  const can::OfflineScores two({"a"}, {{1, 0}}, {{{0, 1}, {1, 0}}});
  EXPECT_TRUE(contains(error_message([&] { can::dual_landscape(two, can::DualOptions{}, {0.1}); }),
                       "the scores have 2 constraints"));
}

}  // namespace
