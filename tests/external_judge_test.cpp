// The external judge's files (external_judge.h): requests written and read back,
// verdicts in both forms, win rates with their intervals in closed form, and errors
// that name the file, line and field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/external_judge.h"
#include "temporary_directory.h"

namespace {

using can::testing::contains;
using can::testing::error_message;

std::vector<can::JudgeRequest> three_requests() {
  return {{"a", "How do I bake bread?", "Knead it.", "Knead the dough, let it rise, bake at 230 C."},
          {"7", "Say hi", "hi", "Hello!"},
          {"c", "A \"quoted\" prompt\nwith a newline", "", "ok"}};
}

class ExternalJudgeTest : public ::testing::Test {
 protected:
  std::filesystem::path write(const std::string& name, const std::string& text) {
    const auto path = directory_.path() / name;
    std::ofstream(path) << text;
    return path;
  }
  can::testing::TemporaryDirectory directory_;
};

// Wilson's 95% score interval at p with n prompts, written out.
std::pair<double, double> wilson(double p, double n) {
  const double z = 1.959963984540054, denominator = 1 + z * z / n;
  const double centre = (p + z * z / (2 * n)) / denominator;
  const double half = z / denominator * std::sqrt(p * (1 - p) / n + z * z / (4 * n * n));
  return {centre - half, centre + half};
}

TEST(WinRate, ClosedFormMeanStandardErrorAndInterval) {
  // Outcomes 1, 1, 1/2, 0: mean 5/8; deviations 3/8, 3/8, -1/8, -5/8, squares summing to 11/16;
  // sample variance 11/48; standard error sqrt(11/48 / 4).
  const can::WinRate rate = can::win_rate({1, 1, 0.5, 0});
  EXPECT_EQ(rate.wins, 2);
  EXPECT_EQ(rate.ties, 1);
  EXPECT_EQ(rate.losses, 1);
  EXPECT_DOUBLE_EQ(rate.win_rate, 0.625);
  EXPECT_DOUBLE_EQ(rate.standard_error, std::sqrt(11.0 / 48.0 / 4.0));
  EXPECT_NEAR(rate.low, wilson(0.625, 4).first, 1e-12);
  EXPECT_NEAR(rate.high, wilson(0.625, 4).second, 1e-12);
  // All five prompts won gives [5 / (5 + z²), 1] = [0.566, 1], never the point [1, 1].
  const can::WinRate sweep = can::win_rate({1, 1, 1, 1, 1});
  EXPECT_EQ(sweep.standard_error, 0.0);
  EXPECT_NEAR(sweep.low, 5.0 / (5.0 + 1.959963984540054 * 1.959963984540054), 1e-12);
  EXPECT_DOUBLE_EQ(sweep.high, 1.0);
  // Identical policies tie everywhere: exactly 1/2, an interval around it.
  const can::WinRate ties = can::win_rate({0.5, 0.5, 0.5});
  EXPECT_EQ(ties.win_rate, 0.5);
  EXPECT_NEAR(ties.low + ties.high, 1.0, 1e-12);
  EXPECT_LT(ties.low, 0.5);
  // One prompt: no standard error.
  const can::WinRate one = can::win_rate({1});
  EXPECT_TRUE(std::isnan(one.standard_error));
  EXPECT_GT(one.high, one.low);
}

TEST_F(ExternalJudgeTest, RequestsRoundTripThroughTheirFile) {
  const auto path = directory_.path() / "judge_requests.jsonl";
  can::write_judge_requests(path, three_requests());
  const auto read = can::read_judge_requests(path);
  ASSERT_EQ(read.size(), 3u);
  for (size_t i = 0; i < read.size(); ++i) {
    EXPECT_EQ(read[i].prompt_id, three_requests()[i].prompt_id);
    EXPECT_EQ(read[i].prompt, three_requests()[i].prompt);
    EXPECT_EQ(read[i].reference_response, three_requests()[i].reference_response);
    EXPECT_EQ(read[i].policy_response, three_requests()[i].policy_response);
  }
  const std::string text = can::read_text_file(path);
  const auto first = nlohmann::json::parse(text.substr(0, text.find('\n')));
  EXPECT_EQ(first, (nlohmann::json{{"prompt_id", "a"},
                                   {"prompt", "How do I bake bread?"},
                                   {"reference_response", "Knead it."},
                                   {"policy_response", "Knead the dough, let it rise, bake at 230 C."}}));
}

TEST_F(ExternalJudgeTest, VerdictsInBothFormsGiveTheWinRates) {
  // a: policy preferred on both; 7 (an integer id): scores, policy less helpful, equally safe;
  // c: a tie on helpfulness, the reference safer. Extra fields are ignored, any order.
  const auto verdicts = write("verdicts.jsonl",
                              R"({"prompt_id": 7, "helpfulness": {"policy": 3, "reference": 8.5}, "safety": {"policy": 1, "reference": 1}, "judge": "mine"}
{"prompt_id": "c", "helpfulness": "tie", "safety": "reference"}

{"prompt_id": "a", "helpfulness": "policy", "safety": "policy", "rationale": "..."}
)");
  const can::ExternalJudgement judgement = can::judge_verdicts(three_requests(), verdicts);
  EXPECT_EQ(judgement.num_prompts, 3);
  EXPECT_DOUBLE_EQ(judgement.helpfulness.win_rate, (1 + 0 + 0.5) / 3);
  EXPECT_DOUBLE_EQ(judgement.safety.win_rate, (1 + 0.5 + 0) / 3);
  EXPECT_EQ(judgement.helpfulness.wins, 1);
  EXPECT_EQ(judgement.helpfulness.ties, 1);
  EXPECT_EQ(judgement.helpfulness.losses, 1);
  const nlohmann::json json = can::external_judgement_to_json(judgement);
  EXPECT_EQ(json.at("num_prompts"), 3);
  EXPECT_DOUBLE_EQ(json.at("safety").at("win_rate").get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(json.at("safety").at("stderr").get<double>(), 0.5 / std::sqrt(3.0));
  EXPECT_EQ(json.at("safety").at("ci95").size(), 2u);
  EXPECT_TRUE(json.contains("format_version"));
}

TEST_F(ExternalJudgeTest, BadVerdictsNameTheFileLineAndField) {
  const auto requests = three_requests();
  const std::string complete_rest =
      "{\"prompt_id\": \"7\", \"helpfulness\": \"tie\", \"safety\": \"tie\"}\n"
      "{\"prompt_id\": \"c\", \"helpfulness\": \"tie\", \"safety\": \"tie\"}\n";
  const auto message = [&](const std::string& first_line) {
    const auto path = write("bad.jsonl", first_line + "\n" + complete_rest);
    return error_message([&] { can::judge_verdicts(requests, path); });
  };
  EXPECT_TRUE(contains(message(R"({"prompt_id": "a", "helpfulness": "better", "safety": "tie"})"),
                       "bad.jsonl:1: field 'helpfulness' is \"better\""));
  EXPECT_TRUE(contains(message(R"({"prompt_id": "a", "helpfulness": "tie"})"), "bad.jsonl:1: missing field 'safety'"));
  EXPECT_TRUE(contains(message(R"({"prompt_id": "a", "helpfulness": {"policy": 1}, "safety": "tie"})"),
                       "bad.jsonl:1: field 'helpfulness': missing field 'reference'"));
  EXPECT_TRUE(contains(message(R"({"prompt_id": "a", "helpfulness": 1, "safety": "tie"})"),
                       "field 'helpfulness' must be"));
  EXPECT_TRUE(contains(message(R"({"prompt_id": "zzz", "helpfulness": "tie", "safety": "tie"})"),
                       "bad.jsonl:1: prompt_id zzz is not among the judge requests"));
  EXPECT_TRUE(contains(message(R"({"prompt_id": "7", "helpfulness": "tie", "safety": "tie"})"),
                       "bad.jsonl:2: prompt_id 7 already has a verdict on line 1"));
  // A verdict missing: the win rate over the rest would be biased.
  const auto partial = write("partial.jsonl", complete_rest);
  EXPECT_TRUE(contains(error_message([&] { can::judge_verdicts(requests, partial); }),
                       "partial.jsonl: 1 of 3 requests have no verdict"));
}

}  // namespace
