// model.safetensors.index.json of a sharded checkpoint (src/io/hf_checkpoint.cpp).
// The folder holds two valid shards; the fuzzer writes the index.
#include <ATen/ATen.h>

#include "can/hf_checkpoint.h"
#include "can/safetensors.h"
#include "fuzz_input.h"

namespace {

// model-00001-of-00002.safetensors holds "a" and "b", model-00002-of-00002.safetensors holds "c".
const std::filesystem::path& checkpoint_directory() {
  static const std::filesystem::path directory = [] {
    const std::filesystem::path path = can::fuzz::scratch_directory() / "sharded";
    std::filesystem::create_directories(path);
    can::save_safetensors(path / "model-00001-of-00002.safetensors",
                          {{"a", at::arange(6, at::kFloat).reshape({2, 3})}, {"b", at::ones({4}, at::kBFloat16)}});
    can::save_safetensors(path / "model-00002-of-00002.safetensors", {{"c", at::zeros({1}, at::kLong)}});
    return path;
  }();
  return directory;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::filesystem::path directory = checkpoint_directory();
  can::fuzz::write_input("sharded/model.safetensors.index.json", data, size);
  can::fuzz::expect_clear_error([&] {
    const auto tensors = can::load_checkpoint_tensors(directory);
    // The index may name no file outside the folder and every tensor of a shard it
    // names, so an accepted index gives one or both shards' tensors: {a, b}, {c} or all.
    std::string names;
    for (const auto& entry : tensors) names += entry.first;
    can::fuzz::require(names == "ab" || names == "c" || names == "abc",
                       "an accepted index gave part of a shard, or nothing");
  });
  return 0;
}
