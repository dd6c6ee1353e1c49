// One progress bar for every long loop: count, rate, ETA and a free-form status.
// It draws on stderr only when stderr is a terminal; otherwise it is quiet
// (logs carry the numbers that matter).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace can {

// From now on no progress bar of this process draws (the ranks of a job other than 0,
// whose stderr may be the same terminal as rank 0's).
void hide_progress_bars();

class ProgressBar {
 public:
  // `unit` names what is counted ("steps", "tokens"); total <= 0 means unknown.
  ProgressBar(std::string label, int64_t total, std::string unit = "it");
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Advances by `count` and sets the status shown after the bar (e.g. "loss 0.512").
  void advance(int64_t count = 1, const std::string& status = "");
  // Erases the bar so that a log line can take its place; the next advance draws it again.
  void clear();
  // Draws the final state and ends the line; called by the destructor if not before.
  void finish();

  // Items per second since construction.
  double rate() const;

 private:
  void draw(bool force);

  std::string label_;
  std::string unit_;
  std::string status_;
  int64_t total_;
  int64_t done_ = 0;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace can
