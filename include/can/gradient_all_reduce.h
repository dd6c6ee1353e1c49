// The job's gradient sum, overlapped with backward, as PyTorch DDP's reducer does it.
// The trainable parameters are split into buckets of at most bucket_bytes, in reverse
// registration order (about the order backward produces their gradients: the head
// first, the embedding last). During the update's last backward on this rank, a hook
// on each parameter's gradient accumulator marks its gradient final; a bucket whose
// gradients are all final is flattened and its all-reduce started while backward goes
// on. Buckets start strictly in index order on every rank (Gloo and NCCL match
// collectives by order), so a bucket ready early waits for the ones before it, and
// buckets whose parameters got no gradient start in finish(), with zeros.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "can/distributed.h"

namespace can {

class GradientAllReduce {
 public:
  GradientAllReduce(const ProcessGroup& group, std::vector<at::Tensor> parameters,
                    int64_t bucket_bytes = ProcessGroup::kDefaultBucketBytes);
  ~GradientAllReduce();  // removes the hooks
  GradientAllReduce(const GradientAllReduce&) = delete;
  GradientAllReduce& operator=(const GradientAllReduce&) = delete;

  // The next backward is this rank's last of the update: the gradients it leaves are
  // final and are sent as they come. Before it, gradients only accumulate.
  void arm();
  // After the update's backward passes (any number, none included): starts the buckets
  // not started yet, waits for every one, and leaves each parameter's .grad holding the
  // job's sum (zeros summed in for a parameter without a gradient here), on its
  // bucket's memory (a started bucket holds its gradients: no second copy lives meanwhile).
  void finish();

  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }
  // Buckets whose all-reduce has started in this update (all of them after backward,
  // when every parameter got its gradient there).
  int64_t started_buckets() const { return static_cast<int64_t>(next_); }

 private:
  struct Bucket {
    std::vector<size_t> members;   // indices into parameters_
    size_t pending = 0;            // members whose gradient is not final yet
    at::Tensor flat;               // [Σ numel] while its all-reduce runs
    std::function<void()> wait;    // set when started
  };
  void on_final_gradient(size_t parameter);
  void start_ready_buckets();
  void start(Bucket& bucket);

  const ProcessGroup& group_;
  std::vector<at::Tensor> parameters_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;        // [parameters] the bucket of each parameter
  std::vector<bool> final_;              // [parameters] this update's gradient is final
  size_t next_ = 0;                      // the first bucket not started
  bool armed_ = false;
  std::vector<std::function<void()>> remove_hooks_;
};

}  // namespace can
