// ZeRO stage 1 (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training
// Trillion Parameter Models", 2020), partitioned by whole parameters as PyTorch's
// ZeroRedundancyOptimizer does: in a job, each trainable parameter belongs to one
// rank, which alone keeps its AdamW moments and updates it. Per update:
//   1. reduce_gradients: every gradient is summed onto its owner (one reduce per
//      owner, in buckets); the others drop their copy;
//   2. clip_gradients: the job's global norm from the owners' sums of squares;
//   3. adamw_step (optimizer.h) updates what this rank owns (only it has gradients);
//   4. share_parameters: every rank takes each parameter from its owner.
// The result equals unsharded training up to float summation order, and each rank
// holds 1/N of the moments (about 2/3 of a float32 model's AdamW memory beyond the
// weights and gradients). Checkpoints stay one file in the unsharded format: before
// saving, gather_moments brings every rank's moments to rank 0 (one parameter at a
// time: the other ranks never hold more than one parameter's moments beyond their
// share), and after saving or loading, drop_moments_of_others frees what a rank does
// not own. Rank 0 holds every moment while it saves, as PyTorch's consolidate_state_dict.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/optim/adamw.h>

#include <cstdint>
#include <vector>

namespace can {

class ProcessGroup;

class ShardedOptimizer {
 public:
  // `parameters` in the optimizer's order (optimizer_parameters): each goes to the rank
  // with the fewest elements so far, in that order (deterministic, the same on every rank).
  ShardedOptimizer(const ProcessGroup& group, std::vector<at::Tensor> parameters);

  int owner(size_t parameter) const { return owners_[parameter]; }
  // Elements of the parameters this rank owns.
  int64_t owned_elements() const;

  void reduce_gradients() const;
  // Scales the owned gradients so that the job's global L2 norm is at most max_norm (> 0,
  // or infinity: no clipping) and returns the norm before clipping, as clip_gradient_norm.
  double clip_gradients(double max_norm) const;
  void share_parameters() const;
  // Collective. Rank 0's optimizer gets the moments and step counts of every parameter.
  void gather_moments(torch::optim::AdamW& optimizer) const;
  void drop_moments_of_others(torch::optim::AdamW& optimizer) const;

 private:
  // The parameters `rank` owns, in optimizer order.
  std::vector<at::Tensor> owned_by(int rank) const;

  const ProcessGroup& group_;
  std::vector<at::Tensor> parameters_;
  std::vector<int> owners_;
};

}  // namespace can
