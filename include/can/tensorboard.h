// TensorBoard scalars, written natively: an events file is a sequence of TFRecords
// (uint64 length, uint32 masked CRC-32C of the length, the data, uint32 masked CRC-32C
// of the data; little-endian), each record one tensorflow.Event protocol-buffer message,
// encoded here by hand (no protobuf library):
//   Event    { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary  { repeated Value value = 1; }
//   Value    { string tag = 1; float simple_value = 2; }
// The first record carries file_version "brain.Event:2", then one record per step with
// that step's scalars. The file is named events.out.tfevents.can (TensorBoard reads every
// file whose name holds "tfevents"); a fixed name lets a resumed run rewrite it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

namespace can {

// The events file beside a metrics.jsonl.
inline constexpr const char* kEventsFileName = "events.out.tfevents.can";

// CRC-32C (Castagnoli) of `size` bytes, and TFRecord's mask of it.
uint32_t crc32c(const uint8_t* data, size_t size);
uint32_t masked_crc32c(const uint8_t* data, size_t size);

// One Event message with the scalars of `step` (tag -> value, stored as float).
std::string scalar_event(double wall_time, int64_t step, const std::map<std::string, double>& scalars);
// The first Event of a file: wall_time and file_version "brain.Event:2".
std::string file_version_event(double wall_time);
// `message` framed as one TFRecord.
std::string tf_record(const std::string& message);

// Appends records to an events file, flushing each.
class EventsWriter {
 public:
  // A fresh file (the version record first) unless `append` and the file exists.
  EventsWriter(const std::filesystem::path& path, bool append, double wall_time);
  void write(double wall_time, int64_t step, const std::map<std::string, double>& scalars);

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

// The TensorBoard tag of a metric under transformers' convention (what TRL's runs show):
// "eval_loss" -> "eval/loss", "loss" -> "train/loss".
std::string tensorboard_tag(const std::string& metric);

}  // namespace can
