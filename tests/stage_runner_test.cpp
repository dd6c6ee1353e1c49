// The stage runner: stages run in order into <stage>.partial/ and are published
// as <stage>/ only when they finish; a failed or interrupted stage keeps its work
// directory for --resume, which skips finished stages; --stages selects; a used
// run directory, a changed config and a missing input are refused up front.
#include "can/stage_runner.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/config.h"
#include "can/error.h"
#include "can/json_fields.h"
#include "temporary_directory.h"

namespace {

using can::testing::contains;
using can::testing::error_message;

namespace fs = std::filesystem;

// Three stages a -> b -> c; each writes out.txt (its name plus its input's text)
// into its work directory and counts its runs. Stage b can be told to fail.
class StageRunnerTest : public ::testing::Test {
 protected:
  StageRunnerTest() {
    config_ = can::default_config();
    config_.run.dir = (directory_.path() / "run").string();
    config_.run.log_level = "warn";
  }

  std::vector<can::Stage> stages() {
    std::vector<can::Stage> list;
    for (const std::string name : {"a", "b", "c"}) {
      can::Stage stage;
      stage.name = name;
      if (name != "a") stage.inputs = {name == "b" ? "a" : "b"};
      stage.run = [this, name, inputs = stage.inputs](const can::StageContext& context) {
        order_.push_back(name);
        resuming_[name] = context.resuming;
        std::string text = name;
        for (const std::string& input : inputs) text += fmt::format("<{}", can::read_text_file(context.artifact(input) / "out.txt"));
        if (name == "b") {
          // A trainer's checkpoint: it must survive a failure and be seen again on --resume.
          seen_checkpoint_ = fs::exists(context.work_dir / "checkpoint");
          can::write_text_atomically(context.work_dir / "checkpoint", "step 10");
          if (b_throws_interrupted_) throw can::Interrupted("stopped at step 10");
          if (b_fails_) throw can::Error(b_error_);
        }
        can::write_text_atomically(context.work_dir / "out.txt", text);
      };
      list.push_back(stage);
    }
    return list;
  }

  void run(bool resume, std::vector<std::string> only = {}) {
    can::StageSelection selection;
    selection.resume = resume;
    selection.stages = std::move(only);
    can::run_stages(config_, stages(), selection);
  }

  fs::path run_dir() const { return config_.run.dir; }

  nlohmann::json manifest_entry(const std::string& name) const {
    const auto manifest = nlohmann::json::parse(can::read_text_file(run_dir() / "stages.json"));
    for (const auto& entry : manifest.at("stages")) {
      if (entry.at("name") == name) return entry;
    }
    return nullptr;
  }

  can::testing::TemporaryDirectory directory_;
  can::Config config_;
  std::vector<std::string> order_;
  std::map<std::string, bool> resuming_;
  bool b_fails_ = false;
  std::string b_error_ = "b ran out of memory";
  bool b_throws_interrupted_ = false;
  bool seen_checkpoint_ = false;
};

TEST_F(StageRunnerTest, AnErrorQuotingBytesThatAreNotUtf8IsRecordedReadably) {
  b_fails_ = true;
  b_error_ = "pairs.jsonl:3: field 'prompt' has \xff\xfe bytes";  // a data file's bytes, quoted
  EXPECT_TRUE(contains(error_message([&] { run(false); }), "pairs.jsonl:3"));
  const nlohmann::json entry = manifest_entry("b");  // parses: the manifest is valid JSON
  EXPECT_EQ(entry.at("status"), "failed");
  EXPECT_TRUE(contains(entry.at("error").get<std::string>(), "pairs.jsonl:3: field 'prompt' has"));
}

TEST_F(StageRunnerTest, ASecondWriterOfARunIsRefusedNamingTheFirst) {
  run(false);
  order_.clear();
  // Another can-train holding the run's lock: an open file description of its own, flock'ed.
  const fs::path lock_file = run_dir() / "can-train.lock";
  ASSERT_TRUE(fs::exists(lock_file));
  const int other = ::open(lock_file.c_str(), O_RDWR);
  ASSERT_GE(other, 0);
  ASSERT_EQ(::flock(other, LOCK_EX | LOCK_NB), 0);  // the first run released it when it returned
  ASSERT_EQ(::ftruncate(other, 0), 0);
  ASSERT_EQ(::write(other, "4242\n", 5), 5);
  fs::remove_all(run_dir() / "c");  // work that a second writer would start
  const std::string message = error_message([&] { run(true); });
  EXPECT_TRUE(
      contains(message, "run directory " + run_dir().string() + " is in use by another can-train (process 4242"))
      << message;
  EXPECT_TRUE(order_.empty());
  EXPECT_FALSE(fs::exists(run_dir() / "c.partial"));
  ::close(other);  // the other process ends: the lock is free, whatever the file says
  run(true);
  EXPECT_EQ(order_, (std::vector<std::string>{"c"}));
}

TEST_F(StageRunnerTest, AManifestOfAnotherFormatVersionIsRefusedOnResume) {
  run(false);
  nlohmann::json manifest = nlohmann::json::parse(can::read_text_file(run_dir() / "stages.json"));
  EXPECT_EQ(manifest.at("format_version"), can::kArtifactFormatVersion);
  manifest.erase("format_version");
  can::write_text_atomically(run_dir() / "stages.json", manifest.dump());
  const std::string message = error_message([&] { run(true); });
  EXPECT_TRUE(contains(message, (run_dir() / "stages.json").string() + ": not a stage manifest this CAN reads"));
  EXPECT_TRUE(contains(message, "no format_version"));
}

TEST_F(StageRunnerTest, RunsStagesInOrderAndPublishesEachArtifact) {
  run(false);
  EXPECT_EQ(order_, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(can::read_text_file(run_dir() / "c" / "out.txt"), "c<b<a");
  for (const std::string name : {"a", "b", "c"}) {
    EXPECT_FALSE(fs::exists(run_dir() / (name + ".partial"))) << name;
    const nlohmann::json entry = manifest_entry(name);
    EXPECT_EQ(entry.at("status"), "done") << name;
    EXPECT_GE(entry.at("seconds").get<double>(), 0.0) << name;
    EXPECT_TRUE(entry.at("started").is_string()) << name;
  }
  EXPECT_FALSE(resuming_["a"]);
  EXPECT_TRUE(fs::exists(run_dir() / "can-train.log"));
  const can::Config resolved = can::load_config(run_dir() / "config.resolved.yaml");
  EXPECT_TRUE(can::artifact_config_differences(config_, resolved).empty());
  EXPECT_EQ(resolved.run.dir, config_.run.dir);
}

TEST_F(StageRunnerTest, FailedStageKeepsItsWorkAndResumeRerunsOnlyIt) {
  b_fails_ = true;
  const std::string message = error_message([&] { run(false); });
  EXPECT_EQ(message, "b ran out of memory");
  EXPECT_EQ(order_, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(fs::is_directory(run_dir() / "a"));
  EXPECT_FALSE(fs::exists(run_dir() / "b"));
  EXPECT_EQ(can::read_text_file(run_dir() / "b.partial" / "checkpoint"), "step 10");
  EXPECT_EQ(manifest_entry("b").at("status"), "failed");
  EXPECT_EQ(manifest_entry("b").at("error"), "b ran out of memory");
  EXPECT_FALSE(seen_checkpoint_);

  b_fails_ = false;
  order_.clear();
  run(true);
  EXPECT_EQ(order_, (std::vector<std::string>{"b", "c"}));
  EXPECT_TRUE(resuming_["b"]);
  EXPECT_TRUE(seen_checkpoint_);
  EXPECT_FALSE(fs::exists(run_dir() / "b.partial"));
  EXPECT_EQ(can::read_text_file(run_dir() / "b" / "checkpoint"), "step 10");
  EXPECT_EQ(manifest_entry("b").at("status"), "done");
  EXPECT_TRUE(manifest_entry("b").at("error").is_null());
}

TEST_F(StageRunnerTest, InterruptedPropagatesAndKeepsTheWorkDirectory) {
  b_throws_interrupted_ = true;
  EXPECT_THROW(run(false), can::Interrupted);
  EXPECT_TRUE(fs::exists(run_dir() / "b.partial" / "checkpoint"));
  EXPECT_FALSE(fs::exists(run_dir() / "b"));
  EXPECT_EQ(manifest_entry("b").at("status"), "interrupted");
  EXPECT_EQ(manifest_entry("c"), nullptr);
}

TEST_F(StageRunnerTest, ResumeSkipsFinishedStages) {
  run(false);
  order_.clear();
  run(true);
  EXPECT_TRUE(order_.empty());
}

TEST_F(StageRunnerTest, SelectedStagesRunAloneOnceTheirInputsExist) {
  run(false, {"a"});
  EXPECT_EQ(order_, std::vector<std::string>{"a"});
  EXPECT_FALSE(fs::exists(run_dir() / "b"));

  order_.clear();
  const std::string missing = error_message([&] { run(true, {"c"}); });
  EXPECT_TRUE(contains(missing, "stage 'c' needs the output of stage 'b', which has not finished"));
  EXPECT_TRUE(order_.empty());

  run(true, {"c", "b"});  // pipeline order, whatever the order given
  EXPECT_EQ(order_, (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(can::read_text_file(run_dir() / "c" / "out.txt"), "c<b<a");
}

TEST_F(StageRunnerTest, UnknownStageNamesListTheValidOnes) {
  const std::string message = error_message([&] { run(false, {"b", "sample"}); });
  EXPECT_TRUE(contains(message, "--stages: unknown stage 'sample'; the mocan stages are: a, b, c"));
  EXPECT_FALSE(fs::exists(run_dir()));
}

TEST_F(StageRunnerTest, UsedRunDirectoryWithoutResumeIsRefused) {
  can::write_text_atomically(run_dir() / "notes.txt", "mine");
  const std::string message = error_message([&] { run(false); });
  EXPECT_TRUE(contains(message, "run directory " + run_dir().string() + " is not empty; pass --resume"));
  EXPECT_TRUE(contains(message, "run.dir"));
  EXPECT_TRUE(order_.empty());
  EXPECT_FALSE(fs::exists(run_dir() / "config.resolved.yaml"));
}

TEST_F(StageRunnerTest, ResumeIntoAFolderWithoutTheRunsRecordsIsRefused) {
  // An unrelated folder, or a run whose config.resolved.yaml was deleted (then nothing says with which
  // settings its finished stages were made).
  can::write_text_atomically(run_dir() / "notes.txt", "mine");
  const std::string message = error_message([&] { run(true); });
  EXPECT_TRUE(contains(message, "cannot resume " + run_dir().string() + ": it has no config.resolved.yaml"))
      << message;
  EXPECT_TRUE(order_.empty());
  // --resume on a folder that does not exist yet starts the run.
  config_.run.dir = (directory_.path() / "fresh").string();
  run(true);
  EXPECT_EQ(order_, (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(StageRunnerTest, ResumeWithAChangedConfigListsTheDifferingKeys) {
  b_fails_ = true;
  EXPECT_THROW(run(false), can::Error);
  b_fails_ = false;
  order_.clear();
  config_.dpo.loss.beta = config_.dual.beta = 0.2;
  config_.run.threads = 3;  // where it runs, not what it computes: allowed
  const std::string message = error_message([&] { run(true); });
  EXPECT_TRUE(contains(message, "differs from " + (run_dir() / "config.resolved.yaml").string() + " in 2 key(s)"));
  EXPECT_TRUE(contains(message, "\n  dpo.beta: 0.1 (run) -> 0.2 (now)"));
  EXPECT_TRUE(contains(message, "\n  dual.beta: 0.1 (run) -> 0.2 (now)"));
  EXPECT_EQ(message.find("run.threads"), std::string::npos) << message;
  EXPECT_TRUE(order_.empty());

  config_.dpo.loss.beta = config_.dual.beta = 0.1;
  run(true);
  EXPECT_EQ(order_, (std::vector<std::string>{"b", "c"}));
}

TEST_F(StageRunnerTest, MalformedPipelinesAreRejected) {
  std::vector<can::Stage> list = stages();
  list[1].inputs = {"c"};
  EXPECT_TRUE(contains(error_message([&] { can::run_stages(config_, list, {}); }),
                       "stage 'b' lists input 'c', which is not an earlier stage"));
  list = stages();
  list[2].name = "a";
  EXPECT_TRUE(contains(error_message([&] { can::run_stages(config_, list, {}); }), "stage 'a' appears twice"));
  list = stages();
  list[0].name = "../a";
  EXPECT_TRUE(contains(error_message([&] { can::run_stages(config_, list, {}); }), "is not a folder name"));
  EXPECT_TRUE(order_.empty());
}

}  // namespace
