// Several processes, one job, on the engine the ecosystem already trusts: LibTorch's
// c10d process groups (Gloo; NCCL for GPUs), with rendezvous through c10d's TCPStore. A launcher
// (torchrun --no-python, Slurm's srun, or a shell loop) sets the variables torchrun
// sets; read_launch_environment reads them and ProcessGroup::join joins the job.
//
// On it stand can-train's jobs (stage_runner.h: rank 0 writes, the others wait),
// data-parallel training (training_loop.h) and sharded inference (run_sharded below:
// sampling, scoring, reference log-probs). A peer that fails or is killed closes its
// connections, and every collective of the others then fails at once with a can::Error
// naming their rank; a peer that hangs is given up after the timeout.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
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

// The buckets one collective each carries: consecutive runs of `tensors`, in the order
// given, of one dtype and device and at most `bucket_bytes` together (a tensor larger
// than that is a bucket of its own), as [begin, end) indices. ProcessGroup's bucketed
// collectives and GradientAllReduce both cut by it.
std::vector<std::pair<size_t, size_t>> bucket_ranges(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes);

class ProcessGroup {
 public:
  // Joins the job: connects to the store (rank 0 serves it unless torchrun's agent does),
  // waits for every rank, and creates a Gloo process group; with `gpus` also an NCCL one
  // (each rank on its own GPU, cuda:LOCAL_RANK), which the collectives use for CUDA
  // tensors, Gloo serving the CPU tensors (flags, counts, gathered results) as in
  // PyTorch's object collectives. A build without NCCL refuses `gpus`. Every collective,
  // and the wait for the others, fails with can::Error after `timeout` instead of hanging.
  static ProcessGroup join(const LaunchEnvironment& launch, std::chrono::milliseconds timeout, bool gpus = false);

  int rank() const;
  int world_size() const;

  // Sums each tensor across ranks, in place. Tensors of one dtype are packed into
  // buckets of at most `bucket_bytes` (a tensor larger than that is a bucket of its
  // own) and each bucket is one collective, as DDP's reducer does, not one per tensor.
  // Every rank must pass tensors of the same dtypes and shapes, in the same order.
  void all_reduce_sum(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes = kDefaultBucketBytes) const;
  // Starts summing `flat` (one contiguous tensor) across ranks and returns at once; the
  // sums are in `flat` when the returned function has returned (it fails as
  // all_reduce_sum would). Ranks must start their collectives in the same order.
  std::function<void()> start_all_reduce_sum(const at::Tensor& flat) const;
  // As all_reduce_sum, but only `root`'s tensors get the sums (the others' are left
  // with unspecified values): the reduce half of ZeRO's gradient exchange.
  void reduce_sum(const std::vector<at::Tensor>& tensors, int root, int64_t bucket_bytes = kDefaultBucketBytes) const;
  // Each tensor takes `root`'s values, in place.
  void broadcast(const std::vector<at::Tensor>& tensors, int root) const;
  // Returns once every rank has called it.
  void barrier() const;
  // Every rank's `bytes`, in rank order, on every rank (sizes may differ).
  std::vector<std::string> all_gather_bytes(const std::string& bytes) const;
  // `root`'s `bytes` on every rank (the others' argument is ignored).
  std::string broadcast_bytes(const std::string& bytes, int root) const;

  static constexpr int64_t kDefaultBucketBytes = 25 << 20;  // DDP's bucket_cap_mb default, 25 MiB

  ~ProcessGroup();
  ProcessGroup(ProcessGroup&&) noexcept;
  ProcessGroup& operator=(ProcessGroup&&) noexcept;

 private:
  struct State;
  explicit ProcessGroup(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// The units of a single process's loop (its batches) split across a job: unit u runs
// on rank u % world_size, and every rank returns every unit's result, in unit order, so
// what follows runs the same on every rank and equals a single process's. A unit's
// result is a vector of doubles (token ids and float32 values are exact in one).
// Without a group (one process) every unit runs here.
std::vector<std::vector<double>> run_sharded(const ProcessGroup* group, int64_t units,
                                             const std::function<std::vector<double>(int64_t unit)>& compute);

}  // namespace can
