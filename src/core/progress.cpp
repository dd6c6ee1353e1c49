#include "can/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

namespace can {

namespace {

std::atomic<bool> progress_bars_hidden{false};

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{:02}:{:02}", s / 60, s % 60);
}

}  // namespace

void hide_progress_bars() { progress_bars_hidden = true; }

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      enabled_(!progress_bars_hidden && isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() { finish(); }

double ProgressBar::rate() const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
}

void ProgressBar::advance(int64_t count, const std::string& status) {
  done_ += count;
  if (!status.empty()) status_ = status;
  draw(false);
}

void ProgressBar::clear() {
  if (!enabled_ || finished_) return;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  last_draw_ = start_;  // the next advance redraws at once
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
  if (enabled_) std::fputc('\n', stderr);
}

void ProgressBar::draw(bool force) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double per_second = rate();
  std::string bar;
  if (total_ > 0) {
    constexpr int kWidth = 24;
    const double fraction = std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_));
    const int filled = static_cast<int>(fraction * kWidth);
    bar = fmt::format("[{}{}] {}/{} ", std::string(filled, '#'), std::string(kWidth - filled, '.'), done_, total_);
    const double eta = per_second > 0 ? static_cast<double>(total_ - done_) / per_second : -1.0;
    bar += fmt::format("{:.1f} {}/s elapsed {} eta {}", per_second, unit_, format_duration(elapsed),
                       format_duration(eta));
  } else {
    bar = fmt::format("{} {} {:.1f} {}/s elapsed {}", done_, unit_, per_second, unit_, format_duration(elapsed));
  }
  std::fprintf(stderr, "\r\033[K%s %s %s", label_.c_str(), bar.c_str(), status_.c_str());
  std::fflush(stderr);
}

}  // namespace can
