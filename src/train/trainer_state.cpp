#include "can/trainer_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <mutex>
#include <nlohmann/json.hpp>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can/json_fields.h"

namespace can {

namespace {

std::string to_hex(const at::Tensor& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  const auto contiguous = bytes.contiguous();
  const auto* data = contiguous.data_ptr<uint8_t>();
  std::string hex;
  hex.reserve(2 * contiguous.numel());
  for (int64_t i = 0; i < contiguous.numel(); ++i) {
    hex.push_back(kDigits[data[i] >> 4]);
    hex.push_back(kDigits[data[i] & 15]);
  }
  return hex;
}

at::Tensor from_hex(const std::string& hex, const std::string& where) {
  const auto digit = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    fail("{}: cpu_rng_state holds '{}', not a lowercase hex digit", where, c);
  };
  check(hex.size() % 2 == 0, "{}: cpu_rng_state has an odd number of hex digits", where);
  auto bytes = torch::empty({static_cast<int64_t>(hex.size() / 2)}, torch::kUInt8);
  auto* data = bytes.data_ptr<uint8_t>();
  for (size_t i = 0; i < hex.size() / 2; ++i)
    data[i] = static_cast<uint8_t>(digit(hex[2 * i]) * 16 + digit(hex[2 * i + 1]));
  return bytes;
}

}  // namespace

TrainerState capture_trainer_state(int64_t step, const EpochShuffler& shuffler, int64_t world_size) {
  TrainerState state;
  state.step = step;
  state.world_size = world_size;
  state.num_items = shuffler.num_items();
  state.shuffle_seed = shuffler.seed();
  state.data = shuffler.state();
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  state.cpu_rng_state = generator.get_state();
  return state;
}

void restore_trainer_state(const TrainerState& state, EpochShuffler& shuffler, int64_t world_size) {
  check(state.world_size == world_size,
        "the checkpoint was written by a job of {} process(es), but this job has {}: each update's examples depend on "
        "the job's size (micro_batch_size × processes); resume with {} process(es)",
        state.world_size, world_size, state.world_size);
  check(state.num_items == shuffler.num_items() && state.shuffle_seed == shuffler.seed(),
        "the checkpoint was trained on {} items shuffled with seed {}, but this run has {} items and seed {}: "
        "resume with the same data and seed",
        state.num_items, state.shuffle_seed, shuffler.num_items(), shuffler.seed());
  check(state.cpu_rng_state.defined(), "the trainer state has no CPU generator state");
  shuffler.restore(state.data);
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state.cpu_rng_state);
}

void save_trainer_state(const std::filesystem::path& path, const TrainerState& state) {
  check(state.cpu_rng_state.defined(), "cannot save a trainer state without CPU generator state to '{}'",
        path.string());
  const nlohmann::json json = {
      {"step", state.step},        {"world_size", state.world_size},  {"num_items", state.num_items},
      {"shuffle_seed", state.shuffle_seed},
      {"epoch", state.data.epoch}, {"position", state.data.position}, {"cpu_rng_state", to_hex(state.cpu_rng_state)}};
  write_text_atomically(path, json.dump(2) + "\n");
}

TrainerState load_trainer_state(const std::filesystem::path& path) {
  const std::string where = path.string();
  const nlohmann::json json = read_json_file(path);
  TrainerState state;
  state.step = integer_field(json, "step", where);
  // Absent from checkpoints written before jobs of several processes: one process.
  if (optional_field(json, "world_size") != nullptr) state.world_size = integer_field(json, "world_size", where);
  state.num_items = integer_field(json, "num_items", where);
  state.shuffle_seed = unsigned_field(json, "shuffle_seed", where);
  state.data.epoch = integer_field(json, "epoch", where);
  state.data.position = integer_field(json, "position", where);
  state.cpu_rng_state = from_hex(string_field(json, "cpu_rng_state", where), where);
  return state;
}

}  // namespace can
