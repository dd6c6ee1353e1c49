// metrics.jsonl: one JSON object per logged step, appended and flushed at once,
// so a crash loses nothing written and a resumed run appends to the same file:
//   {"stage": "dpo", "step": 120, "time": 1763815200.5, "loss": 0.61, "rewards/margins": 0.4, ...}
// time is seconds since the Unix epoch. Non-finite values are written as null
// (JSON has no NaN). A run resumed from the checkpoint of update S first cuts the
// file back to the lines of steps up to S: the lines a killed run wrote after its
// last checkpoint are written again by the resumed run, so each appears once.
// Beside it, events.out.tfevents.can holds the same finite values as TensorBoard
// scalars (tensorboard.h; tags as transformers writes them: "train/loss",
// "eval/loss"), cut back with it on resume.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "can/tensorboard.h"

namespace can {

class MetricsWriter {
 public:
  // Creates the parent directory if needed. An existing file keeps its lines of
  // steps up to `resumed_step` (0: a fresh start keeps none), rewritten
  // atomically, and is appended to; a torn last line (a kill mid-write) is dropped.
  MetricsWriter(const std::filesystem::path& path, int64_t resumed_step);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // `values` may not use the keys stage, step or time.
  void write(const std::string& stage, int64_t step, const std::map<std::string, double>& values);

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
  std::unique_ptr<EventsWriter> events_;
};

}  // namespace can
