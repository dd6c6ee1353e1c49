// Hugging Face model directories: config.json plus model.safetensors, or
// model.safetensors.index.json with its shards; or, as older checkpoints on the
// hub, pytorch_model.bin or pytorch_model.bin.index.json with its shards (torch.save
// files, see pytorch_bin.h). CAN writes model.safetensors, so what it saves loads in
// Python too.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace can {

// Every tensor of the checkpoint in `directory` (CPU, stored dtype), by name; the
// first layout present wins, in transformers' order (safetensors before .bin).
// With an index: every listed tensor is present in its shard, and no shard holds
// a tensor the index does not list; errors name the shard and tensor.
std::map<std::string, at::Tensor> load_checkpoint_tensors(const std::filesystem::path& directory);

// What the weights of `directory` are, read from headers only (no tensor data):
// the layout's file names, and every tensor's shape by name for safetensors. A .bin
// checkpoint's shapes are in its pickle, which only a full load reads: its archives
// are opened and checked (pytorch_bin.h), and `shapes` is empty. The same errors as
// load_checkpoint_tensors for a missing or corrupt layout, and for safetensors shards
// that disagree with their index (.bin shards are checked against it when loaded).
struct CheckpointHeader {
  std::vector<std::string> files;  // the weight files, relative to the directory
  bool shapes_known = false;       // false for .bin
  std::map<std::string, std::vector<int64_t>> shapes;
};
CheckpointHeader read_checkpoint_header(const std::filesystem::path& directory);

// Writes config.json and model.safetensors into `directory`; each file is
// written atomically, so a crash leaves either the old or the new file.
void save_checkpoint(const std::filesystem::path& directory, const nlohmann::json& config,
                     const std::vector<std::pair<std::string, at::Tensor>>& tensors);

}  // namespace can
