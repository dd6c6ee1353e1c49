// Training checkpoints, one layout for every trainer:
//   <output_dir>/checkpoints/step-<N>/   config.json, model.safetensors (Hugging Face layout),
//                                        optimizer.pt (optimizer.h), trainer_state.json (trainer_state.h)
//   <output_dir>/checkpoints/latest      the newest complete checkpoint's folder name ("step-120")
// A checkpoint folder is written under a temporary name and renamed when complete,
// then `latest` is replaced atomically, so a crash at any moment leaves the previous
// checkpoint usable. The newest kCheckpointsKept checkpoints are kept.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>

#include "can/trainer_state.h"

namespace torch::optim {
class AdamW;
}

namespace can {

inline constexpr int kCheckpointsKept = 2;

// Writes checkpoints/step-<step>: `save_model` writes config.json and
// model.safetensors into the folder it is given. Then points `latest` at it and
// removes older checkpoints beyond kCheckpointsKept. Returns the folder.
std::filesystem::path save_training_checkpoint(const std::filesystem::path& output_dir, int64_t step,
                                               const std::function<void(const std::filesystem::path&)>& save_model,
                                               const torch::optim::AdamW& optimizer, const TrainerState& state);

// The folder `latest` names; empty when the run has no checkpoint. An error when
// `latest` names a folder that does not exist.
std::filesystem::path latest_training_checkpoint(const std::filesystem::path& output_dir);

// Reads the checkpoint's weights with `load_model` (given the folder), loads the
// optimizer state and returns the trainer state.
TrainerState load_training_checkpoint(const std::filesystem::path& checkpoint,
                                      const std::function<void(const std::filesystem::path&)>& load_model,
                                      torch::optim::AdamW& optimizer);

}  // namespace can
