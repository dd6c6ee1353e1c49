// Checkpoint bookkeeping: trainer state save/load and resume, and metrics.jsonl.
#include "can/atomic_file.h"
#include "can/trainer_state.h"

#include <gtest/gtest.h>

#include <cstring>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "can/error.h"
#include "can/json_lines.h"
#include "can/metrics_writer.h"
#include "can/tensorboard.h"
#include "json_files.h"

namespace {

namespace fs = std::filesystem;

class TemporaryDirectory : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ =
        fs::temp_directory_path() / fmt::format("can_trainer_state_{}_{}", getpid(),
                                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(directory_);
  }
  void TearDown() override { can::remove_tree(directory_); }
  fs::path directory_;
};

using TrainerStateFile = TemporaryDirectory;
using MetricsWriterFile = TemporaryDirectory;

TEST_F(TrainerStateFile, ResumedRunDrawsTheSameBatchesAndRandomNumbers) {
  torch::manual_seed(11);
  can::EpochShuffler shuffler(10, 5);
  for (int i = 0; i < 5; ++i) shuffler.next_batch(3);  // mid-epoch 1
  torch::rand({7});
  const auto path = directory_ / "trainer_state.json";
  can::save_trainer_state(path, can::capture_trainer_state(/*step=*/5, shuffler, /*world_size=*/1));
  const auto expected_batch = shuffler.next_batch(3);
  const auto expected_random = torch::rand({4});

  torch::manual_seed(999);  // a new process: other generator state, shuffler at the start
  can::EpochShuffler resumed(10, 5);
  const auto state = can::load_trainer_state(path);
  EXPECT_EQ(state.step, 5);
  EXPECT_EQ(state.data.epoch, 1);
  EXPECT_EQ(state.data.position, 3);
  can::restore_trainer_state(state, resumed, 1);
  EXPECT_EQ(resumed.next_batch(3), expected_batch);
  EXPECT_TRUE(torch::equal(torch::rand({4}), expected_random));
}

TEST_F(TrainerStateFile, RestoreRejectsAnotherDatasetOrSeed) {
  can::EpochShuffler shuffler(10, 5);
  const auto state = can::capture_trainer_state(0, shuffler, 2);
  can::EpochShuffler other_seed(10, 6);
  can::EpochShuffler other_size(11, 5);
  EXPECT_THROW(can::restore_trainer_state(state, other_seed, 2), can::Error);
  EXPECT_THROW(can::restore_trainer_state(state, other_size, 2), can::Error);
}

TEST_F(TrainerStateFile, AJobOfAnotherSizeIsToldToResumeWithTheSavedOne) {
  can::EpochShuffler shuffler(10, 5);
  const auto path = directory_ / "trainer_state.json";
  can::save_trainer_state(path, can::capture_trainer_state(3, shuffler, 2));
  const can::TrainerState state = can::load_trainer_state(path);
  EXPECT_EQ(state.world_size, 2);
  try {
    can::restore_trainer_state(state, shuffler, 4);
    FAIL() << "no error";
  } catch (const can::Error& error) {
    EXPECT_NE(std::string(error.what()).find("a job of 2 process(es), but this job has 4"), std::string::npos)
        << error.what();
  }
  can::restore_trainer_state(state, shuffler, 2);
  // A checkpoint from before jobs of several processes has no world_size: one process.
  auto json = nlohmann::json::parse(std::ifstream(path));
  json.erase("world_size");
  std::ofstream(path) << json.dump();
  EXPECT_EQ(can::load_trainer_state(path).world_size, 1);
}

TEST_F(TrainerStateFile, CorruptFilesAreErrorsNamingFileAndField) {
  can::EpochShuffler shuffler(4, 1);
  const auto path = directory_ / "trainer_state.json";
  can::save_trainer_state(path, can::capture_trainer_state(2, shuffler, 1));
  auto json = nlohmann::json::parse(std::ifstream(path));

  auto without_step = json;
  without_step.erase("step");
  std::ofstream(path) << without_step.dump();
  try {
    can::load_trainer_state(path);
    ADD_FAILURE() << "no error for a missing field";
  } catch (const can::Error& error) {
    EXPECT_NE(std::string(error.what()).find("trainer_state.json: missing field 'step'"), std::string::npos)
        << error.what();
  }
  auto bad_hex = json;
  bad_hex["cpu_rng_state"] = "zz";
  std::ofstream(path) << bad_hex.dump();
  EXPECT_THROW(can::load_trainer_state(path), can::Error);
  std::ofstream(path) << "{ not json";
  EXPECT_THROW(can::load_trainer_state(path), can::Error);
}

TEST_F(MetricsWriterFile, AppendsOneParsableObjectPerLineAcrossWriters) {
  const auto path = directory_ / "run" / "metrics.jsonl";
  {
    can::MetricsWriter writer(path, 0);
    writer.write("dpo", 1, {{"loss", 0.693}, {"rewards/margins", 0.0}});
    writer.write("dpo", 2, {{"loss", 0.5}, {"grad_norm", NAN}});
    writer.write("dpo", 3, {{"loss", 0.4}});  // after the checkpoint of step 2, before a kill
  }
  {
    std::ofstream torn(path, std::ios::app);
    torn << "{\"stage\": \"dpo\", \"st";  // killed mid-line
  }
  can::MetricsWriter resumed(path, 2);  // resumed from step 2: step 3 will be written again
  resumed.write("reward_model", 1, {{"accuracy", 0.75}});

  const auto lines = can::testing::read_json_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["stage"], "dpo");
  EXPECT_EQ(lines[0]["step"], 1);
  EXPECT_DOUBLE_EQ(lines[0]["loss"].get<double>(), 0.693);
  EXPECT_DOUBLE_EQ(lines[0]["rewards/margins"].get<double>(), 0.0);
  EXPECT_TRUE(lines[0]["time"].is_number());
  EXPECT_TRUE(lines[1]["grad_norm"].is_null());  // JSON has no NaN
  EXPECT_EQ(lines[2]["stage"], "reward_model");
  EXPECT_DOUBLE_EQ(lines[2]["accuracy"].get<double>(), 0.75);
  EXPECT_THROW(resumed.write("dpo", 3, {{"step", 1.0}}), can::Error);

  // TensorBoard's copy beside it, cut back likewise: the version record, then steps 1, 2
  // and the new line. Each record's length and data carry TFRecord's masked CRC-32C.
  const std::string events = can::read_text_file(path.parent_path() / can::kEventsFileName);
  std::vector<std::string> records;
  for (size_t at = 0; at < events.size();) {
    ASSERT_LE(at + 12, events.size());
    uint64_t length = 0;
    std::memcpy(&length, events.data() + at, 8);
    uint32_t length_crc = 0, data_crc = 0;
    std::memcpy(&length_crc, events.data() + at + 8, 4);
    ASSERT_LE(at + 16 + length, events.size());
    std::memcpy(&data_crc, events.data() + at + 12 + length, 4);
    const auto* bytes = reinterpret_cast<const uint8_t*>(events.data());
    EXPECT_EQ(length_crc, can::masked_crc32c(bytes + at, 8));
    EXPECT_EQ(data_crc, can::masked_crc32c(bytes + at + 12, length));
    records.push_back(events.substr(at + 12, length));
    at += 16 + length;
  }
  ASSERT_EQ(records.size(), 4u);
  EXPECT_NE(records[0].find("brain.Event:2"), std::string::npos);
  EXPECT_NE(records[1].find("train/rewards/margins"), std::string::npos);
  EXPECT_EQ(records[2].find("train/grad_norm"), std::string::npos);  // NaN is left out, as in metrics.jsonl
  EXPECT_NE(records[3].find("train/accuracy"), std::string::npos);
  EXPECT_EQ(records[1], can::scalar_event(lines[0]["time"].get<double>(), 1,
                                          {{"train/loss", 0.693}, {"train/rewards/margins", 0.0}}));
}

TEST(TensorBoard, Crc32cAndTagsFollowTheirDefinitions) {
  const std::string check = "123456789";  // CRC-32C's check value (RFC 3720)
  EXPECT_EQ(can::crc32c(reinterpret_cast<const uint8_t*>(check.data()), check.size()), 0xE3069283u);
  EXPECT_EQ(can::tensorboard_tag("eval_loss"), "eval/loss");
  EXPECT_EQ(can::tensorboard_tag("rewards/chosen"), "train/rewards/chosen");
  // Event{wall_time = 1.0 (field 1, fixed64), step = 300 (field 2, varint 0xAC 0x02), summary (field 5) {value
  // (field 1) {tag "a" (field 1), simple_value 0.5f (field 2, fixed32)}}}, byte for byte.
  const std::string expected("\x09\x00\x00\x00\x00\x00\x00\xf0\x3f\x10\xac\x02\x2a\x0a\x0a\x08\x0a\x01\x61\x15\x00\x00\x00\x3f",
                             24);
  EXPECT_EQ(can::scalar_event(1.0, 300, {{"a", 0.5}}), expected);
}

}  // namespace
