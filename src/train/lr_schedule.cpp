#include "can/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "can/error.h"

namespace can {

LearningRateDecay parse_learning_rate_decay(const std::string& name) {
  if (name == "cosine") return LearningRateDecay::kCosine;
  if (name == "constant") return LearningRateDecay::kConstant;
  fail("unknown learning-rate decay '{}' (expected cosine or constant)", name);
}

std::string learning_rate_decay_name(LearningRateDecay decay) {
  return decay == LearningRateDecay::kCosine ? "cosine" : "constant";
}

double LearningRateSchedule::at(int64_t step) const {
  check(peak_lr > 0, "peak learning rate must be positive, got {}", peak_lr);
  check(total_steps > 0, "total_steps must be positive, got {}", total_steps);
  check(warmup_steps >= 0 && warmup_steps <= total_steps, "warmup_steps must lie in [0, total_steps = {}], got {}",
        total_steps, warmup_steps);
  check(min_lr >= 0 && min_lr <= peak_lr, "min_lr must lie in [0, peak_lr = {}], got {}", peak_lr, min_lr);
  check(step >= 0, "learning-rate step must be >= 0, got {}", step);
  if (step < warmup_steps) return peak_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (decay == LearningRateDecay::kConstant) return peak_lr;
  const double progress = std::clamp(
      static_cast<double>(step - warmup_steps) / static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps)),
      0.0, 1.0);
  return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace can
