// Where a training run stands, for checkpoint and resume: the optimizer updates
// done, the data order's position and torch's CPU random generator. With the
// model and optimizer state (optimizer.h) saved beside it, a resumed run
// continues exactly as the uninterrupted one would have, mid-epoch included.
// The CUDA generators are not saved (training draws no random numbers on the GPU).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>

#include "can/epoch_shuffler.h"

namespace can {

struct TrainerState {
  int64_t step = 0;           // optimizer updates completed
  int64_t world_size = 1;     // processes of the job that trained (distributed.h): each update's examples depend on it
  int64_t num_items = 0;      // dataset size the shuffler was built for
  uint64_t shuffle_seed = 0;  // the shuffler's seed
  EpochShuffler::State data;  // epoch and position of the next batch
  at::Tensor cpu_rng_state;   // [n] uint8: torch's default CPU generator
};

// Reads the shuffler's position and torch's CPU generator (of the rank that saves, rank 0:
// a job's other ranks resume from it too, so their dropout draws differ from an
// uninterrupted run's; with dropout 0 a resumed job is exact).
TrainerState capture_trainer_state(int64_t step, const EpochShuffler& shuffler, int64_t world_size);

// Moves `shuffler` to the saved position and restores torch's CPU generator; an
// error if the shuffler has another seed or dataset size than the saved run, or the
// job another number of processes.
void restore_trainer_state(const TrainerState& state, EpochShuffler& shuffler, int64_t world_size);

// JSON, written atomically; the generator state is stored as hex.
void save_trainer_state(const std::filesystem::path& path, const TrainerState& state);
TrainerState load_trainer_state(const std::filesystem::path& path);

}  // namespace can
