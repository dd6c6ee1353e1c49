// The can-train executable: exit status 1 with file:line: key on a bad config,
// 2 on usage errors and while no pipeline stages are registered, the resolved
// config with --print-config, and --sweep-margins checked like any other key.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/config.h"
#include "command_line.h"
#include "temporary_directory.h"

namespace {

using can::testing::contains;

namespace fs = std::filesystem;

// Runs can-train with `arguments` (already shell-quoted) through the shell.
can::testing::CommandResult run_can_train(const std::string& arguments) {
  return can::testing::run_command(fmt::format("'{}' {}", can::testing::built_executable("can-train"), arguments));
}

class CanTrainCli : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    const fs::path path = directory_.path() / name;
    can::write_text_atomically(path, text);
    return path.string();
  }
  can::testing::TemporaryDirectory directory_;
};

TEST_F(CanTrainCli, BadConfigExitsOneNamingFileLineAndKey) {
  const std::string config = write("bad.yaml", "run:\n  seed: 1\ndpo:\n  beta: -1\n");
  const auto result = run_can_train("--config '" + config + "'");
  EXPECT_EQ(result.status, 1) << result.output;
  EXPECT_TRUE(
      contains(result.output, "can-train: error: " + config + ":4: dpo.beta: -1 is out of range (allowed: > 0)"));
}

TEST_F(CanTrainCli, AFolderGivenAsTheConfigExitsOne) {
  const std::string folder = directory_.path().string();
  const auto result = run_can_train(fmt::format("--config '{}'", folder));
  EXPECT_EQ(result.status, 1) << result.output;
  EXPECT_TRUE(contains(result.output, fmt::format("'{}' is a directory, not a file", folder))) << result.output;
}

TEST_F(CanTrainCli, BadOverrideExitsOneNamingTheArgument) {
  const std::string config = write("empty.yaml", "");
  const auto result = run_can_train("--config '" + config + "' --set dual.solver=netwon");
  EXPECT_EQ(result.status, 1) << result.output;
  EXPECT_TRUE(contains(result.output, "--set dual.solver=netwon: dual.solver: 'netwon' is not one of: newton, pgd"));
}

TEST_F(CanTrainCli, MoreMarginsThanSafetyScoresExitOneBeforeAnyWork) {
  const fs::path run_dir = directory_.path() / "run";
  const std::string config =
      write("two.yaml", "run:\n  dir: '" + run_dir.string() + "'\ndual:\n  margins: [1.0, 2.0]\n");
  const auto result = run_can_train("--config '" + config + "'");
  EXPECT_EQ(result.status, 1) << result.output;
  EXPECT_TRUE(contains(result.output, "two.yaml:4: dual.margins: has 2 values, but the world has 1 safety constraint"))
      << result.output;
  EXPECT_FALSE(fs::exists(run_dir));
}

TEST_F(CanTrainCli, ASecondProcessOnARunningRunExitsOneNamingTheFirst) {
  const fs::path run_dir = directory_.path() / "busy";
  const std::string config = can::testing::source_file("configs/tiny-mocan.yaml");
  const std::string first = fmt::format("'{}' --config '{}' --set run.dir='{}'",
                                        can::testing::built_executable("can-train"), config, run_dir.string());
  // The first run in the background; its process id from the shell.
  const auto started = can::testing::run_command(fmt::format("{} > '{}' 2>&1 & echo $!", first,
                                                             (directory_.path() / "first.log").string()));
  const long pid = std::stol(started.output);
  for (int wait = 0; wait < 300 && !fs::exists(run_dir / "config.resolved.yaml"); ++wait) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto second = run_can_train(fmt::format("--config '{}' --set run.dir='{}' --resume", config, run_dir.string()));
  can::testing::run_command(fmt::format("kill -9 {}", pid));
  EXPECT_EQ(second.status, 1) << second.output;
  EXPECT_TRUE(contains(second.output, fmt::format("is in use by another can-train (process {}", pid)))
      << second.output;
}

TEST_F(CanTrainCli, UsageErrorsExitTwo) {
  const std::string config = write("empty.yaml", "");
  EXPECT_EQ(run_can_train("--config '" + config + "' --no-such-flag").status, 2);
  EXPECT_EQ(run_can_train("").status, 2);  // --config is required
  const auto no_equals = run_can_train("--config '" + config + "' --set dpo.beta");
  EXPECT_EQ(no_equals.status, 2) << no_equals.output;
  EXPECT_TRUE(contains(no_equals.output, "expected key.path=value"));
  EXPECT_EQ(run_can_train("--config '" + config + "' --stages a,,b").status, 2);
}

TEST_F(CanTrainCli, PrintConfigShowsTheResolvedValuesDocumented) {
  const std::string config = write("small.yaml", "sampling:\n  num_prompts: 12\n");
  const auto result = run_can_train("--config '" + config +
                                    "' --set dpo.beta=0.2 --set dual.beta=0.2 --sweep-margins 0.5,1,2 --print-config");
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_TRUE(contains(result.output,
                       "  # M: prompts sampled, the first M of the sampling prompts (int, default: 1000, range: >= "
                       "1)\n  num_prompts: 12\n"));
  EXPECT_TRUE(contains(result.output, "dpo:\n"));
  EXPECT_TRUE(contains(result.output, "  beta: 0.2\n"));
  EXPECT_TRUE(contains(result.output,
                       "sweep:\n  # margins b to align for, one aligned policy each; empty: no sweep (list of floats, "
                       "default: [])\n  margins: [0.5, 1.0, 2.0]\n"));
}

TEST_F(CanTrainCli, SweepMarginsOfAnotherConstraintSetTheConstraintToo) {
  const std::string config = write("two.yaml", "world:\n  privacy_harm: true\ndual:\n  margins: [1.0, 2.0]\n");
  const auto result = run_can_train("--config '" + config + "' --sweep-margins 1:0.5,1 --print-config");
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_TRUE(contains(result.output, "  margins: [0.5, 1.0]\n")) << result.output;
  EXPECT_TRUE(contains(result.output, "  constraint: 1\n")) << result.output;
  const auto beyond = run_can_train("--config '" + config + "' --sweep-margins 2:0.5 --print-config");
  EXPECT_EQ(beyond.status, 1) << beyond.output;
  EXPECT_TRUE(contains(beyond.output, "--sweep-margins 2:0.5: sweep.constraint: is 2, but there are 2 constraints"))
      << beyond.output;
}

TEST_F(CanTrainCli, SweepMarginsAreCheckedLikeAnyKey) {
  const std::string config = write("empty.yaml", "");
  const auto result = run_can_train("--config '" + config + "' --sweep-margins 0.5,high --print-config");
  EXPECT_EQ(result.status, 1) << result.output;
  EXPECT_TRUE(contains(result.output, "--sweep-margins 0.5,high: sweep.margins[1]: expected a float, got 'high'"));
}

}  // namespace
