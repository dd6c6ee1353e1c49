// What a process's work costs, counted where the work happens: the stage runner
// records each stage's counts in stages.json, so that runs and pipelines can be
// compared by what they spend, not only by how long they took.
#pragma once

#include <cstdint>

namespace can {

struct ComputeCounts {
  // Token positions through a decoder's forward pass, padding included (what the
  // matmuls process); a KV-cache step counts its new positions only.
  int64_t forward_tokens = 0;
  // Of those, the positions of forwards run with gradients enabled: the trainers
  // backpropagate every such forward (evaluation, scoring and sampling run without).
  int64_t backward_tokens = 0;
  int64_t sampled_tokens = 0;     // new tokens generated, EOS included
  int64_t optimizer_updates = 0;  // of every trainer (SFT, score models, DPO)
};

// Process-wide and thread-safe.
void count_forward_tokens(int64_t positions, bool with_gradients);
void count_sampled_tokens(int64_t tokens);
void count_optimizer_update();
ComputeCounts compute_counts();
void reset_compute_counts();

}  // namespace can
