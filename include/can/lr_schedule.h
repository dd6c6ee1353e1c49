// Learning rate per optimizer step: linear warm-up from 0, then cosine decay to a
// floor or constant. The curve is Hugging Face's get_cosine_schedule_with_warmup
// (min_lr = 0) and get_constant_schedule_with_warmup, which the paper's recipe
// used, so update 0 runs at lr 0 when there is a warm-up.
#pragma once

#include <cstdint>
#include <string>

namespace can {

enum class LearningRateDecay { kCosine, kConstant };

// "cosine" or "constant"; anything else is an error.
LearningRateDecay parse_learning_rate_decay(const std::string& name);
std::string learning_rate_decay_name(LearningRateDecay decay);

struct LearningRateSchedule {
  double peak_lr = 5e-4;
  int64_t warmup_steps = 0;  // in [0, total_steps]
  int64_t total_steps = 1;   // optimizer updates of the whole run
  LearningRateDecay decay = LearningRateDecay::kCosine;
  double min_lr = 0.0;  // cosine floor, in [0, peak_lr]

  // The learning rate of update `step` (0-based: `step` updates done before it):
  //   step < W:  peak · step / W
  //   cosine:    min + (peak − min) · ½(1 + cos(π · p)),  p = (step − W) / (total − W), clamped to [0, 1]
  //   constant:  peak
  // Errors on an invalid schedule or a negative step.
  double at(int64_t step) const;
};

}  // namespace can
