#include "can/sweep_report.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "assertions.h"
#include "can/atomic_file.h"
#include "temporary_directory.h"

namespace {

namespace fs = std::filesystem;
using can::testing::contains;
using can::testing::error_message;
using nlohmann::json;

// The fields of an eval report.json that a sweep reads.
json report(double lambda, double predicted, double achieved, double judge_safety) {
  return {{"lambda", {lambda}},
          {"predicted", {{"kl", 0.1}, {"safety_improvement", {predicted}}, {"reward_improvement", 0.2}}},
          {"achieved", {{"safety_improvement", {achieved}}, {"reward_improvement", 0.1}}},
          {"prediction_error", {(achieved - predicted) / predicted}},
          {"reference", {{"judge_safety", 0.8}, {"judge_helpfulness", 0.3}}},
          {"policy", {{"judge_safety", judge_safety}, {"judge_helpfulness", 0.25}}}};
}

TEST(SweepReport, ListsOneReportPerMarginInOrderWithATableRowEach) {
  can::testing::TemporaryDirectory directory;
  can::write_sweep_report(directory.path(), {{0.5, report(0.3, 0.5, 0.45, 0.85)}, {1.0, report(0.6, 1.0, 0.9, 0.9)}});

  const json sweep = json::parse(can::read_text_file(directory.path() / "sweep.json"));
  ASSERT_EQ(sweep.at("points").size(), 2u);
  EXPECT_EQ(sweep["points"][0]["margin"], 0.5);
  EXPECT_EQ(sweep["points"][1]["margin"], 1.0);
  EXPECT_EQ(sweep["points"][1]["report"], report(0.6, 1.0, 0.9, 0.9));

  const std::string table = can::read_text_file(directory.path() / "sweep.md");
  EXPECT_TRUE(contains(table, "| reference | | | | | | | | 0.8 | 0.3 |"));
  EXPECT_TRUE(contains(table, "| 0.5 | 0.3 | 0.1 | 0.5 | 0.45 | -0.1 | 0.2 | 0.1 | 0.85 | 0.25 |"));
  EXPECT_TRUE(contains(table, "| 1 | 0.6 | 0.1 | 1 | 0.9 | -0.1 | 0.2 | 0.1 | 0.9 | 0.25 |"));
  const std::string svg = can::read_text_file(directory.path() / "sweep.svg");
  EXPECT_TRUE(contains(svg, "achieved vs predicted"));
  EXPECT_TRUE(contains(svg, "judge safety"));
}

TEST(SweepReport, AMissingFieldNamesTheMarginAndWritesNothing) {
  can::testing::TemporaryDirectory directory;
  json incomplete = report(0.6, 1.0, 0.9, 0.9);
  incomplete.erase("achieved");
  const std::string message = error_message(
      [&] { can::write_sweep_report(directory.path(), {{0.5, report(0.3, 0.5, 0.45, 0.85)}, {1.0, incomplete}}); });
  EXPECT_TRUE(contains(message, "margin 1"));
  EXPECT_TRUE(contains(message, "has no field /achieved/"));
  EXPECT_FALSE(fs::exists(directory.path() / "sweep.json"));
}

}  // namespace
