// can-train as a job of two processes on localhost, launched as torchrun or a scheduler
// would (the five launch variables set by hand): the tiny MoCAN config gives one
// process's λ* and report, rank 0 alone writes, and a rank that dies or fails ends
// the job promptly with a non-zero status.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "can/atomic_file.h"
#include "can/json_fields.h"
#include "command_line.h"
#include "free_port.h"
#include "temporary_directory.h"

extern char** environ;

namespace {

using can::testing::free_port;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The tiny MoCAN config into `run_dir`, with `settings` (" --set k=v ..."): the command line.
std::string can_train(const fs::path& run_dir, const std::string& settings) {
  return can::testing::built_executable("can-train") + " --config " +
         can::testing::source_file("configs/tiny-mocan.yaml") + " --set run.dir=" + run_dir.string() +
         " --set run.threads=1" + settings;
}

// Half of each trainer's micro-batch per rank: two ranks then see the global batches of one process.
const std::string kHalfMicroBatches =
    " --set sft.micro_batch_size=16 --set reward_model.micro_batch_size=16 --set cost_model.micro_batch_size=16"
    " --set dpo.micro_batch_size=8";

struct Rank {
  pid_t pid = 0;
  fs::path log;
};

// Starts `command` as rank `rank` of `world` through the shell, its output in `log`.
Rank start_rank(const std::string& command, int rank, int world, int port, const fs::path& log) {
  const std::string line = fmt::format(
      "RANK={} LOCAL_RANK={} WORLD_SIZE={} MASTER_ADDR=127.0.0.1 MASTER_PORT={} OMP_NUM_THREADS=1 exec {} > {} 2>&1",
      rank, rank, world, port, command, log.string());
  std::string shell = "/bin/sh", flag = "-c", text = line;
  char* argv[] = {shell.data(), flag.data(), text.data(), nullptr};
  Rank started{0, log};
  EXPECT_EQ(::posix_spawn(&started.pid, "/bin/sh", nullptr, nullptr, argv, environ), 0);
  return started;
}

// The exit status (128 + signal when killed by one), or -1 after `limit` (then killed).
int wait_for(const Rank& rank, std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  int status = 0;
  while (::waitpid(rank.pid, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) {
      ::kill(rank.pid, SIGKILL);
      ::waitpid(rank.pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

nlohmann::json stage_entry(const fs::path& run_dir, const std::string& name) {
  const nlohmann::json manifest = can::read_json_file(run_dir / "stages.json");
  for (const auto& entry : manifest.at("stages")) {
    if (entry.at("name") == name) return entry;
  }
  return nullptr;
}

// Returns once stages.json lists `stage` (it has started), or after a minute.
void wait_until_started(const fs::path& run_dir, const std::string& stage) {
  const auto started = Clock::now();
  while (!(fs::exists(run_dir / "stages.json") && stage_entry(run_dir, stage).is_object()) &&
         Clock::now() - started < std::chrono::seconds(60)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

TEST(E2eDistributed, TwoRanksGiveOneProcesssLambdaAndReport) {
  const can::testing::TemporaryDirectory folder;
  const fs::path single = folder.path() / "single", job = folder.path() / "job";
  const int port = free_port();
  ASSERT_GT(port, 0);
  const Rank first = start_rank(can_train(job, kHalfMicroBatches), 0, 2, port, folder.path() / "rank0.log");
  const Rank second = start_rank(can_train(job, kHalfMicroBatches), 1, 2, port, folder.path() / "rank1.log");
  const auto alone = can::testing::run_command("OMP_NUM_THREADS=1 " + can_train(single, ""));
  ASSERT_EQ(alone.status, 0) << alone.output;
  ASSERT_EQ(wait_for(first, std::chrono::seconds(300)), 0) << can::read_text_file(first.log);
  ASSERT_EQ(wait_for(second, std::chrono::seconds(300)), 0) << can::read_text_file(second.log);

  // The samples of π_ref are the same tokens (sampling streams are per batch, whichever rank draws them).
  EXPECT_EQ(can::read_text_file(job / "offline_scores" / "responses.jsonl"),
            can::read_text_file(single / "offline_scores" / "responses.jsonl"));
  // λ* and the prediction: the models differ by float summation order only (about 1e-6 relative).
  const auto dual_of = [](const fs::path& run) { return can::read_json_file(run / "dual" / "dual.json"); };
  const double lambda = dual_of(single).at("lambda")[0].get<double>();
  EXPECT_NEAR(dual_of(job).at("lambda")[0].get<double>(), lambda, 1e-4 * lambda);
  // The report: every achieved number within a hundredth of its standard error (a
  // statistical scale: the differences are float rounding, far below the noise it states).
  const auto report_of = [](const fs::path& run) { return can::read_json_file(run / "eval" / "report.json"); };
  const auto expected = report_of(single).at("achieved"), actual = report_of(job).at("achieved");
  EXPECT_NEAR(actual.at("reward_improvement").get<double>(), expected.at("reward_improvement").get<double>(),
              0.01 * expected.at("reward_improvement_stderr").get<double>());
  EXPECT_NEAR(actual.at("safety_improvement")[0].get<double>(), expected.at("safety_improvement")[0].get<double>(),
              0.01 * expected.at("safety_improvement_stderr")[0].get<double>());
  EXPECT_EQ(report_of(job).at("policy").at("judge_safety"), report_of(single).at("policy").at("judge_safety"));

  // Rank 0 alone wrote: one log (its lines name it), the job's counts in stages.json.
  const std::string log = can::read_text_file(job / "can-train.log");
  EXPECT_NE(log.find("[rank 0]"), std::string::npos);
  EXPECT_NE(log.find("a job of 2 processes"), std::string::npos);
  EXPECT_EQ(log.find("[rank 1]"), std::string::npos);
  EXPECT_TRUE(can::read_text_file(second.log).empty()) << "rank 1 says nothing when all goes well";
  for (const char* stage : {"offline_scores", "dpo"}) {
    const auto counts = stage_entry(job, stage).at("compute"), alone_counts = stage_entry(single, stage).at("compute");
    EXPECT_EQ(counts.at("sampled_tokens"), alone_counts.at("sampled_tokens")) << stage;
    EXPECT_EQ(counts.at("optimizer_updates"), alone_counts.at("optimizer_updates")) << stage;
  }
  EXPECT_GT(stage_entry(job, "offline_scores").at("compute").at("sampled_tokens").get<int64_t>(), 0);
}

// A rank killed mid-run (SIGKILL: no word, no clean-up) ends the job: rank 0 notices at
// its next collective, says so naming itself and the rank whose process ended, and exits
// non-zero; the stage stays unfinished (.partial) and stages.json says it failed.
TEST(E2eDistributed, KillingOneRankEndsTheJobWithinAMinute) {
  const can::testing::TemporaryDirectory folder;
  const fs::path job = folder.path() / "job";
  const int port = free_port();
  ASSERT_GT(port, 0);
  // Long enough SFT that the kill lands inside it.
  const std::string settings = kHalfMicroBatches + " --set sft.epochs=200";
  const Rank first = start_rank(can_train(job, settings), 0, 2, port, folder.path() / "rank0.log");
  const Rank second = start_rank(can_train(job, settings), 1, 2, port, folder.path() / "rank1.log");
  wait_until_started(job, "reference");
  ASSERT_TRUE(stage_entry(job, "reference").is_object()) << can::read_text_file(first.log);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // inside the training loop
  ASSERT_EQ(::kill(second.pid, SIGKILL), 0);
  const auto killed = Clock::now();
  EXPECT_EQ(wait_for(second, std::chrono::seconds(10)), 128 + SIGKILL);
  const int status = wait_for(first, std::chrono::seconds(60));
  EXPECT_LT(Clock::now() - killed, std::chrono::seconds(60));
  EXPECT_EQ(status, 1) << can::read_text_file(first.log);
  const std::string said = can::read_text_file(first.log);
  EXPECT_NE(said.find("can-train (rank 0 of 2): error: rank 0:"), std::string::npos) << said;
  EXPECT_NE(said.find(fmt::format("(rank 1, process {} on this machine, has ended)", second.pid)), std::string::npos)
      << said;
  EXPECT_FALSE(fs::exists(job / "reference"));
  EXPECT_TRUE(fs::exists(job / "reference.partial"));
  EXPECT_EQ(stage_entry(job, "reference").at("status"), "failed");
}

// Ctrl-C on one rank stops both after the same update, rank 0 saving the checkpoint;
// --resume with two ranks finishes the run.
TEST(E2eDistributed, CtrlCOnOneRankStopsTheJobAndResumeFinishesIt) {
  const can::testing::TemporaryDirectory folder;
  const fs::path job = folder.path() / "job";
  const std::string settings = kHalfMicroBatches + " --set sft.epochs=30 --set sft.save_every=1000";
  int port = free_port();
  ASSERT_GT(port, 0);
  const Rank first = start_rank(can_train(job, settings), 0, 2, port, folder.path() / "rank0.log");
  const Rank second = start_rank(can_train(job, settings), 1, 2, port, folder.path() / "rank1.log");
  wait_until_started(job, "reference");
  std::this_thread::sleep_for(std::chrono::seconds(1));
  ASSERT_EQ(::kill(second.pid, SIGINT), 0);
  EXPECT_EQ(wait_for(second, std::chrono::seconds(60)), 130) << can::read_text_file(second.log);
  EXPECT_EQ(wait_for(first, std::chrono::seconds(60)), 130) << can::read_text_file(first.log);
  EXPECT_EQ(stage_entry(job, "reference").at("status"), "interrupted");
  ASSERT_TRUE(fs::exists(job / "reference.partial" / "checkpoints" / "latest")) << can::read_text_file(first.log);

  port = free_port();
  const Rank resumed_first = start_rank(can_train(job, settings + " --resume"), 0, 2, port, folder.path() / "r0.log");
  const Rank resumed_second = start_rank(can_train(job, settings + " --resume"), 1, 2, port, folder.path() / "r1.log");
  EXPECT_EQ(wait_for(resumed_first, std::chrono::seconds(300)), 0) << can::read_text_file(resumed_first.log);
  EXPECT_EQ(wait_for(resumed_second, std::chrono::seconds(300)), 0) << can::read_text_file(resumed_second.log);
  EXPECT_NE(can::read_text_file(job / "can-train.log").find("sft: resuming from"), std::string::npos);
  EXPECT_TRUE(fs::exists(job / "eval" / "report.json"));
}

// What stops rank 0 before the first stage reaches the others: here a run directory
// that is not empty, without --resume.
TEST(E2eDistributed, RankZerosRefusalReachesTheOtherRanks) {
  const can::testing::TemporaryDirectory folder;
  const fs::path job = folder.path() / "job";
  fs::create_directories(job);
  can::write_text_atomically(job / "something", "x\n");
  const int port = free_port();
  ASSERT_GT(port, 0);
  const Rank first = start_rank(can_train(job, ""), 0, 2, port, folder.path() / "rank0.log");
  const Rank second = start_rank(can_train(job, ""), 1, 2, port, folder.path() / "rank1.log");
  EXPECT_EQ(wait_for(first, std::chrono::seconds(60)), 1);
  EXPECT_EQ(wait_for(second, std::chrono::seconds(60)), 1);
  const std::string said = can::read_text_file(second.log);
  EXPECT_NE(said.find("can-train (rank 1 of 2): error: rank 0 could not start the run: run directory"),
            std::string::npos)
      << said;
  EXPECT_NE(said.find("is not empty; pass --resume"), std::string::npos) << said;
}

}  // namespace
