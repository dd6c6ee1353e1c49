#include "can/training_checkpoint.h"

#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <vector>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can/optimizer.h"

namespace can {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStepPrefix = "step-";

// The step of a "step-<N>" folder name; -1 for any other name (temporaries included).
int64_t checkpoint_step(const std::string& name) {
  if (name.rfind(kStepPrefix, 0) != 0) return -1;
  const std::string digits = name.substr(std::string(kStepPrefix).size());
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
}

void remove_old_checkpoints(const fs::path& checkpoints) {
  std::vector<std::pair<int64_t, fs::path>> found;
  for (const auto& entry : fs::directory_iterator(checkpoints)) {
    const int64_t step = checkpoint_step(entry.path().filename().string());
    if (entry.is_directory() && step >= 0) found.emplace_back(step, entry.path());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = kCheckpointsKept; i < found.size(); ++i) remove_tree(found[i].second);
}

}  // namespace

fs::path save_training_checkpoint(const fs::path& output_dir, int64_t step,
                                  const std::function<void(const fs::path&)>& save_model,
                                  const torch::optim::AdamW& optimizer, const TrainerState& state) {
  const fs::path checkpoints = output_dir / "checkpoints";
  const std::string name = kStepPrefix + std::to_string(step);
  write_directory_atomically(checkpoints / name, [&](const fs::path& directory) {
    save_model(directory);
    save_optimizer_state(optimizer, directory / "optimizer.pt");
    save_trainer_state(directory / "trainer_state.json", state);
  });
  write_text_atomically(checkpoints / "latest", name + "\n");
  remove_old_checkpoints(checkpoints);
  return checkpoints / name;
}

fs::path latest_training_checkpoint(const fs::path& output_dir) {
  const fs::path latest = output_dir / "checkpoints" / "latest";
  if (!fs::exists(latest)) return {};
  std::string name = read_text_file(latest);
  name.erase(name.find_last_not_of(" \t\r\n") + 1);
  check(checkpoint_step(name) >= 0, "'{}' should name a checkpoint folder step-<N>, but holds '{}'", latest.string(),
        name);
  const fs::path checkpoint = output_dir / "checkpoints" / name;
  check(fs::is_directory(checkpoint), "'{}' names '{}', which does not exist", latest.string(), checkpoint.string());
  return checkpoint;
}

TrainerState load_training_checkpoint(const fs::path& checkpoint,
                                      const std::function<void(const fs::path&)>& load_model,
                                      torch::optim::AdamW& optimizer) {
  load_model(checkpoint);
  load_optimizer_state(optimizer, checkpoint / "optimizer.pt");
  return load_trainer_state(checkpoint / "trainer_state.json");
}

}  // namespace can
