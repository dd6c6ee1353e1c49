#include "can/compute_counts.h"

#include <atomic>

namespace can {

namespace {

std::atomic<int64_t> forward_tokens{0}, backward_tokens{0}, sampled_tokens{0}, optimizer_updates{0};

}  // namespace

void count_forward_tokens(int64_t positions, bool with_gradients) {
  forward_tokens += positions;
  if (with_gradients) backward_tokens += positions;
}

void count_sampled_tokens(int64_t tokens) { sampled_tokens += tokens; }

void count_optimizer_update() { ++optimizer_updates; }

ComputeCounts compute_counts() { return {forward_tokens, backward_tokens, sampled_tokens, optimizer_updates}; }

void reset_compute_counts() {
  forward_tokens = 0;
  backward_tokens = 0;
  sampled_tokens = 0;
  optimizer_updates = 0;
}

}  // namespace can
