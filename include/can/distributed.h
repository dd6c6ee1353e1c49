// Several processes, one job, on the engine the ecosystem already trusts: LibTorch's
// c10d process groups (Gloo), with rendezvous through c10d's TCPStore. A launcher
// (torchrun --no-python, Slurm's srun, or a shell loop) sets the variables torchrun
// sets; read_launch_environment reads them and ProcessGroup::join joins the job.
//
// The trainers, inference and artifacts do not use it yet (the distributed issue's
// data-parallel training, sharded inference and one-writer rule); this is the layer
// they will stand on: launch, process group and the collectives they need.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace can {

struct LaunchEnvironment {
  int rank = 0;        // RANK: this process, in [0, world_size)
  int world_size = 1;  // WORLD_SIZE: processes in the job
  int local_rank = 0;  // LOCAL_RANK: this process on its machine (its GPU, on a GPU machine)
  std::string master_addr;  // MASTER_ADDR, MASTER_PORT: where rank 0 (or torchrun's agent) serves the store
  int master_port = 0;
  // TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent already serves the store at
  // MASTER_PORT, so every rank, rank 0 included, connects to it as a client.
  bool agent_store = false;
};

// The launch variables through `getenv` (std::getenv in the programs). None of RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set: one process, as without a
// launcher. Some set and others not, a value that is not a number or out of range:
// an error naming the variable.
LaunchEnvironment read_launch_environment(const std::function<const char*(const char*)>& getenv);

class ProcessGroup {
 public:
  // Joins the job: connects to the store (rank 0 serves it unless torchrun's agent does),
  // waits for every rank, and creates a Gloo process group. Every collective, and the
  // wait for the others, fails with can::Error after `timeout` instead of hanging.
  static ProcessGroup join(const LaunchEnvironment& launch, std::chrono::milliseconds timeout);

  int rank() const;
  int world_size() const;

  // Sums each tensor across ranks, in place. Tensors of one dtype are packed into
  // buckets of at most `bucket_bytes` (a tensor larger than that is a bucket of its
  // own) and each bucket is one collective, as DDP's reducer does, not one per tensor.
  // Every rank must pass tensors of the same dtypes and shapes, in the same order.
  void all_reduce_sum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes = kDefaultBucketBytes) const;
  // Each tensor takes `root`'s values, in place.
  void broadcast(const std::vector<at::Tensor>& tensors, int root) const;
  // Returns once every rank has called it.
  void barrier() const;

  static constexpr int64_t kDefaultBucketBytes = 25 << 20;  // DDP's bucket_cap_mb default, 25 MiB

  ~ProcessGroup();
  ProcessGroup(ProcessGroup&&) noexcept;
  ProcessGroup& operator=(ProcessGroup&&) noexcept;

 private:
  struct State;
  explicit ProcessGroup(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace can
