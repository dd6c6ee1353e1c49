// Runs the built can-dual and can-data (found through CAN_BINARY_DIR, set by CTest)
// as a user would, and checks exit status, JSON fields and error messages.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "can/atomic_file.h"
#include "can/offline_scores.h"

namespace {

namespace fs = std::filesystem;

struct ProcessResult {
  int status = -1;
  std::string out;
  std::string err;
};

class CanDualCli : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* binary_dir = std::getenv("CAN_BINARY_DIR");
    ASSERT_NE(binary_dir, nullptr) << "CAN_BINARY_DIR is unset; run through ctest";
    binaries_ = binary_dir;
    directory_ =
        fs::temp_directory_path() / fmt::format("can_dual_cli_test_{}_{}", getpid(),
                                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(directory_);
    // Three identical prompts, responses (r, g) = (1, 0) and (0, 1): λ* = 1 + β·logit(½ + b).
    std::ofstream(directory_ / "two.jsonl") << "{\"prompt_id\": 0, \"reward\": [1, 0], \"safety\": [0, 1]}\n"
                                               "{\"prompt_id\": 1, \"reward\": [1, 0], \"safety\": [0, 1]}\n"
                                               "{\"prompt_id\": 2, \"reward\": [1, 0], \"safety\": [0, 1]}\n";
  }
  void TearDown() override { can::remove_tree(directory_); }

  ProcessResult run(const std::string& program, const std::string& arguments) {
    const fs::path err_path = directory_ / "stderr.txt";
    const std::string command = fmt::format("cd '{}' && '{}' {} 2>'{}'", directory_.string(),
                                            (binaries_ / program).string(), arguments, err_path.string());
    ProcessResult result;
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) {
      ADD_FAILURE() << "cannot run " << command;
      return result;
    }
    char buffer[4096];
    size_t read = 0;
    while ((read = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.out.append(buffer, read);
    const int status = pclose(pipe);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::ifstream err(err_path);
    std::stringstream text;
    text << err.rdbuf();
    result.err = text.str();
    return result;
  }

  fs::path binaries_;
  fs::path directory_;
};

double logit(double p) { return std::log(p / (1 - p)); }

TEST_F(CanDualCli, SolveJsonCarriesTheDesignFields) {
  const ProcessResult result = run("can-dual", "--scores two.jsonl --margin 0.3 --json");
  ASSERT_EQ(result.status, 0) << result.err;
  const auto json = nlohmann::json::parse(result.out);
  EXPECT_EQ(json["beta"], 0.1);
  EXPECT_EQ(json["margins"], nlohmann::json::array({0.3}));
  EXPECT_NEAR(json["lambda"][0].get<double>(), 1 + 0.1 * logit(0.8), 1e-9);
  EXPECT_NEAR(json["predicted"]["safety_improvement"][0].get<double>(), 0.3, 1e-9);
  EXPECT_NEAR(json["predicted"]["reward_improvement"].get<double>(), -0.3, 1e-9);
  EXPECT_TRUE(json["predicted"]["kl"].is_number());
  EXPECT_TRUE(json["dual_value"].is_number());
  EXPECT_TRUE(json["iterations"].is_number_integer());
  EXPECT_EQ(json["converged"], true);
  EXPECT_EQ(json["feasible"], true);
  EXPECT_NEAR(json["ess"]["min"].get<double>(), 1 / (2 * (0.64 + 0.04)), 1e-9);
  EXPECT_TRUE(json["ess"]["mean"].is_number());
  EXPECT_EQ(json["num_prompts"], 3);
}

TEST_F(CanDualCli, PgdSolverAndTableOutput) {
  const ProcessResult result = run("can-dual", "--scores two.jsonl --margin 0.3 --solver pgd");
  ASSERT_EQ(result.status, 0) << result.err;
  EXPECT_NE(result.out.find("lambda*"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find(fmt::format("{:.6g}", 1 + 0.1 * logit(0.8))), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("pgd: converged"), std::string::npos) << result.out;
}

TEST_F(CanDualCli, InfeasibleMarginExitsNonZeroSayingInfeasible) {
  const ProcessResult json_run = run("can-dual", "--scores two.jsonl --margin 0.8 --json");
  EXPECT_EQ(json_run.status, 3);
  EXPECT_NE(json_run.err.find("infeasible"), std::string::npos) << json_run.err;
  const auto json = nlohmann::json::parse(json_run.out);
  EXPECT_EQ(json["feasible"], false);
  EXPECT_EQ(json["max_safety_improvement"][0], 0.5);
  const ProcessResult table_run = run("can-dual", "--scores two.jsonl --margin 0.8");
  EXPECT_EQ(table_run.status, 3);
  EXPECT_NE(table_run.out.find("infeasible"), std::string::npos) << table_run.out;
}

TEST_F(CanDualCli, SweepPrintsAnArrayAndWritesAnSvgPlot) {
  const ProcessResult result = run("can-dual", "--scores two.jsonl --sweep 0:0.6:4 --json --plot sweep.svg");
  ASSERT_EQ(result.status, 0) << result.err;
  const auto json = nlohmann::json::parse(result.out);
  ASSERT_TRUE(json.is_array());
  ASSERT_EQ(json.size(), 4u);
  EXPECT_NEAR(json[1]["margins"][0].get<double>(), 0.2, 1e-15);
  EXPECT_NEAR(json[1]["lambda"][0].get<double>(), 1 + 0.1 * logit(0.7), 1e-9);
  EXPECT_EQ(json[3]["feasible"], false);  // 0.6 > ½, the reach
  std::ifstream svg(directory_ / "sweep.svg");
  std::stringstream text;
  text << svg.rdbuf();
  EXPECT_EQ(text.str().rfind("<?xml", 0), 0u);
  EXPECT_NE(text.str().find("</svg>"), std::string::npos);
}

// J:LO:HI:COUNT sweeps constraint J of two-constraint scores while constraint 0 keeps its
// --margin; each point is the single solve with those margins.
TEST_F(CanDualCli, ASweepOfTheSecondConstraintKeepsTheFirstAtItsMargin) {
  ASSERT_EQ(run("can-data", "scores-synth --out two_constraints.jsonl --prompts 40 --responses 16 --constraints 2").status,
            0);
  const ProcessResult result = run("can-dual", "--scores two_constraints.jsonl --beta 1 --margin 0.05 --margin 0 "
                                               "--sweep 1:0:0.1:3 --json --plot sweep.svg");
  ASSERT_EQ(result.status, 0) << result.err;
  const auto sweep = nlohmann::json::parse(result.out);
  ASSERT_EQ(sweep.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(sweep[i]["margins"][0].get<double>(), 0.05);
    EXPECT_NEAR(sweep[i]["margins"][1].get<double>(), 0.05 * static_cast<double>(i), 1e-15);
    const auto single = nlohmann::json::parse(
        run("can-dual", fmt::format("--scores two_constraints.jsonl --beta 1 --margin 0.05 --margin {} --json",
                                    sweep[i]["margins"][1].get<double>()))
            .out);
    EXPECT_EQ(sweep[i]["lambda"], single["lambda"]) << i;
  }
  std::ifstream svg(directory_ / "sweep.svg");
  std::stringstream text;
  text << svg.rdbuf();
  EXPECT_NE(text.str().find("λ*, constraint 1"), std::string::npos);
  EXPECT_NE(text.str().find("margin b_1 of constraint 1"), std::string::npos);
  const ProcessResult table = run("can-dual", "--scores two_constraints.jsonl --beta 1 --margin 0.05 --margin 0 "
                                              "--sweep 1:0:0.1:3");
  EXPECT_NE(table.out.find("lambda*_0"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("largest reachable safety improvement of constraint 1"), std::string::npos) << table.out;
  // Every constraint's margin is needed; the swept constraint must exist.
  const ProcessResult missing = run("can-dual", "--scores two_constraints.jsonl --sweep 1:0:0.1:3");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("needs every constraint's margin (give --margin 2 times"), std::string::npos)
      << missing.err;
  const ProcessResult beyond = run("can-dual", "--scores two_constraints.jsonl --margin 0 --margin 0 --sweep 2:0:0.1:3");
  EXPECT_NE(beyond.err.find("margin sweep of constraint 2: the scores have 2 constraints"), std::string::npos)
      << beyond.err;
}

TEST_F(CanDualCli, SubsamplesPrintOneEntryPerSizePairAndPlotFigureFour) {
  ASSERT_EQ(run("can-data", "scores-synth --out scores.jsonl --prompts 40 --responses 16").status, 0);
  const ProcessResult result =
      run("can-dual", "--scores scores.jsonl --margin 0.1 --subsample-prompts 10,40 --subsample-responses 4,16 "
                      "--repeats 3 --seed 5 --json --plot fig4.svg");
  ASSERT_EQ(result.status, 0) << result.err;
  const auto json = nlohmann::json::parse(result.out);
  ASSERT_EQ(json.size(), 4u);
  EXPECT_EQ(json[1]["num_prompts"], 10);
  EXPECT_EQ(json[1]["num_responses"], 16);
  EXPECT_EQ(json[1]["repeats"], 3);
  EXPECT_TRUE(json[1]["lambda_mean"][0].is_number());
  // 40 prompts of 16 responses is the whole file: every repeat solves it, λ* has no spread.
  const auto full = nlohmann::json::parse(run("can-dual", "--scores scores.jsonl --margin 0.1 --json").out);
  EXPECT_EQ(json[3]["lambda_mean"][0], full["lambda"][0]);
  EXPECT_EQ(json[3]["lambda_std"][0], 0.0);
  std::ifstream svg(directory_ / "fig4.svg");
  std::stringstream text;
  text << svg.rdbuf();
  EXPECT_NE(text.str().find("responses per prompt"), std::string::npos);
  const ProcessResult table = run("can-dual", "--scores scores.jsonl --margin 0.1 --subsample-prompts 10 "
                                              "--subsample-responses 4 --repeats 2");
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_NE(table.out.find("lambda* mean"), std::string::npos) << table.out;
  const ProcessResult too_many =
      run("can-dual", "--scores scores.jsonl --margin 0.1 --subsample-prompts 10 --subsample-responses 17");
  EXPECT_EQ(too_many.status, 1);
  EXPECT_NE(too_many.err.find("response count 17 is not within 2..16"), std::string::npos) << too_many.err;
  EXPECT_EQ(run("can-dual", "--scores scores.jsonl --subsample-prompts 10 --subsample-responses 4").status, 2);
  EXPECT_EQ(run("can-dual", "--scores scores.jsonl --margin 0.1 --subsample-prompts 10").status, 2);
  EXPECT_EQ(run("can-dual", "--scores scores.jsonl --margin 0.1 --sweep 0:1:3 --subsample-prompts 10 "
                            "--subsample-responses 4").status,
            2);
  EXPECT_EQ(run("can-dual", "--scores scores.jsonl --margin 0.1 --subsample-prompts 10 --subsample-responses 1").status,
            2);
}

TEST_F(CanDualCli, LandscapeDrawsTheDualPerMarginAndPgdsPath) {
  const ProcessResult result = run("can-dual", "--scores two.jsonl --landscape 0.1,0.3 --json --plot fig1.svg");
  ASSERT_EQ(result.status, 0) << result.err;
  const auto json = nlohmann::json::parse(result.out);
  ASSERT_EQ(json["curves"].size(), 2u);
  EXPECT_NEAR(json["curves"][1]["lambda"].get<double>(), 1 + 0.1 * logit(0.8), 1e-9);
  EXPECT_EQ(json["curves"][0]["pgd_lambda"][0], 1.0);
  std::ifstream svg(directory_ / "fig1.svg");
  std::stringstream text;
  text << svg.rdbuf();
  EXPECT_NE(text.str().find("Safety scores of the reference"), std::string::npos);
  EXPECT_EQ(run("can-dual", "--scores two.jsonl --landscape 0.1 --margin 0.1").status, 2);
}

TEST_F(CanDualCli, UnwritableOutputsExitOneNamingThePath) {
  // Found by a probe of the tools: these aborted with an uncaught std::filesystem_error (exit 134).
  fs::create_directories(directory_ / "folder.svg");
  const ProcessResult onto_folder = run("can-dual", "--scores two.jsonl --sweep 0:0.6:4 --plot folder.svg");
  EXPECT_EQ(onto_folder.status, 1) << onto_folder.err;
  EXPECT_NE(onto_folder.err.find("cannot write 'folder.svg': it is a directory"), std::string::npos) << onto_folder.err;
  const ProcessResult under_file = run("can-dual", "--scores two.jsonl --sweep 0:0.6:4 --plot two.jsonl/sweep.svg");
  EXPECT_EQ(under_file.status, 1) << under_file.err;
  EXPECT_NE(under_file.err.find("cannot write 'two.jsonl/sweep.svg'"), std::string::npos) << under_file.err;
  const ProcessResult data_under_file = run("can-data", "scores-synth --out two.jsonl/x.jsonl --prompts 2");
  EXPECT_EQ(data_under_file.status, 1) << data_under_file.err;
  EXPECT_NE(data_under_file.err.find("cannot write 'two.jsonl/x.jsonl'"), std::string::npos) << data_under_file.err;
}

TEST_F(CanDualCli, MalformedFileErrorNamesTheLine) {
  std::ofstream(directory_ / "bad.jsonl") << "{\"prompt_id\": 0, \"reward\": [1, 0], \"safety\": [0, 1]}\n"
                                             "{\"prompt_id\": 1, \"reward\": [1, 0], \"safety\": [0]}\n";
  const ProcessResult result = run("can-dual", "--scores bad.jsonl --margin 0.1");
  EXPECT_EQ(result.status, 1);
  EXPECT_NE(result.err.find("bad.jsonl:2: 'safety' row 0 has 1 numbers but 'reward' has 2"), std::string::npos)
      << result.err;
}

TEST_F(CanDualCli, ArgumentsAreChecked) {
  EXPECT_NE(run("can-dual", "--scores two.jsonl --margin 0.1 --margin 0.2").err.find("one --margin per constraint"),
            std::string::npos);
  const ProcessResult margin_and_sweep = run("can-dual", "--scores two.jsonl --margin 0.1 --sweep 0:1:3");
  EXPECT_EQ(margin_and_sweep.status, 1);
  EXPECT_NE(margin_and_sweep.err.find("the sweep gives the margin; leave --margin out"), std::string::npos)
      << margin_and_sweep.err;
  EXPECT_NE(run("can-dual", "--scores two.jsonl").err.find("give --margin"), std::string::npos);
  const ProcessResult plot_alone = run("can-dual", "--scores two.jsonl --margin 0.1 --plot p.svg");
  EXPECT_EQ(plot_alone.status, 2);
  EXPECT_NE(plot_alone.err.find("needs --sweep, --subsample-prompts or --landscape"), std::string::npos) << plot_alone.err;
  EXPECT_NE(run("can-dual", "--scores two.jsonl --sweep 0:1:3 --plot p.png").err.find("SVG"), std::string::npos);
  EXPECT_NE(run("can-dual", "--scores two.jsonl --margin 0.1 --solver adam").status, 0);
  EXPECT_NE(run("can-dual", "--scores missing.jsonl --margin 0.1").status, 0);
  const ProcessResult negative = run("can-dual", "--scores two.jsonl --margin -0.2 --json");
  EXPECT_EQ(negative.status, 0) << negative.err;
}


TEST_F(CanDualCli, ScoresSynthWritesARaggedReproducibleFile) {
  ASSERT_EQ(run("can-data", "scores-synth --out a.jsonl --prompts 40 --responses 3:9 --constraints 2 --seed 4").status,
            0);
  ASSERT_EQ(run("can-data", "scores-synth --out b.jsonl --prompts 40 --responses 3:9 --constraints 2 --seed 4").status,
            0);
  const can::OfflineScores a = can::OfflineScores::load(directory_ / "a.jsonl");
  const can::OfflineScores b = can::OfflineScores::load(directory_ / "b.jsonl");
  EXPECT_EQ(a.num_prompts(), 40);
  EXPECT_EQ(a.num_constraints(), 2);
  int64_t fewest = 100, most = 0;
  for (int64_t i = 0; i < a.num_prompts(); ++i) {
    fewest = std::min(fewest, a.num_responses(i));
    most = std::max(most, a.num_responses(i));
  }
  EXPECT_GE(fewest, 3);
  EXPECT_LE(most, 9);
  EXPECT_LT(fewest, most);
  EXPECT_EQ(a.safety(), b.safety());
  EXPECT_NE(run("can-data", "scores-synth --out c.jsonl --responses 9:3").status, 0);
}

// One exit status for usage errors in every program, and range messages that print
// the bound as written (CLI11's own printed a double's 300 digits).
TEST_F(CanDualCli, EveryProgramExitsTwoOnAUsageErrorWithAShortMessage) {
  for (const char* program : {"can-data", "can-dual", "can-eval", "can-report", "can-sample", "can-score",
                              "can-train"}) {
    const ProcessResult result = run(program, "--no-such-option");
    EXPECT_EQ(result.status, 2) << program << ": " << result.err;
    EXPECT_NE(result.err.find("Run with --help"), std::string::npos) << program << ": " << result.err;
  }
  const ProcessResult beta = run("can-dual", "--scores two.jsonl --beta -1 --margin 0.3");
  EXPECT_EQ(beta.status, 2);
  EXPECT_NE(beta.err.find("--beta: -1 is not a number > 0"), std::string::npos) << beta.err;
  EXPECT_LT(beta.err.size(), 200u) << beta.err;
  const ProcessResult noise = run("can-data", "synth --out world --label-noise 0.7");
  EXPECT_EQ(noise.status, 2);
  EXPECT_NE(noise.err.find("0.7 is not a number in [0, 0.5]"), std::string::npos) << noise.err;
  EXPECT_EQ(run("can-data", "synth --out world --label-noise nan").status, 2);
  EXPECT_EQ(run("can-dual", "--scores two.jsonl --beta inf --margin 0.3").status, 2);
  // Seeds: -1 and 2^64 wrapped around to 2^64 - 1, a seed nobody typed.
  for (const char* seed : {"-1", "18446744073709551616", "1.5", "0x10"}) {
    const ProcessResult wrapped = run("can-data", fmt::format("scores-synth --out s.jsonl --prompts 2 --seed {}", seed));
    EXPECT_EQ(wrapped.status, 2) << seed;
    EXPECT_NE(wrapped.err.find("is not a seed: an integer in [0, 18446744073709551615]"), std::string::npos)
        << wrapped.err;
  }
  EXPECT_EQ(run("can-data", "scores-synth --out s.jsonl --prompts 2 --seed 18446744073709551615").status, 0);
}

// Counts are bounded before anything is allocated: a mistyped count is a clear error,
// not std::bad_alloc after minutes.
TEST_F(CanDualCli, HugeCountsAreRefusedBeforeAllocating) {
  const ProcessResult scores = run("can-data", "scores-synth --out s.jsonl --prompts 2000000000");
  EXPECT_EQ(scores.status, 1);
  EXPECT_NE(scores.err.find("more than the 100000000 allowed"), std::string::npos) << scores.err;
  EXPECT_FALSE(fs::exists(directory_ / "s.jsonl"));
  // Exit status 1 alone would pass for std::bad_alloc too: the message says the bound was hit.
  for (const char* counts : {"--prompts 3 --responses 1:2000000000", "--prompts 3 --constraints 2000000000"}) {
    const ProcessResult refused = run("can-data", fmt::format("scores-synth --out s.jsonl {}", counts));
    EXPECT_EQ(refused.status, 1) << counts;
    EXPECT_NE(refused.err.find("more than the 100000000 allowed"), std::string::npos) << counts << ": " << refused.err;
  }
  const ProcessResult world = run("can-data", "synth --out world --train-prompts 2000000000");
  EXPECT_EQ(world.status, 2);
  EXPECT_NE(world.err.find("2000000000 is not a number in [1, 1000000]"), std::string::npos) << world.err;
  EXPECT_FALSE(fs::exists(directory_ / "world"));
}

}  // namespace
