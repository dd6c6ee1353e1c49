// Hugging Face model directories: config.json plus model.safetensors, or
// model.safetensors.index.json with its shards. CAN writes the same layout, so
// what it saves loads in Python too.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace can {

// Every tensor of the checkpoint in `directory` (CPU, stored dtype), by name.
// With an index: every listed tensor is present in its shard, and no shard holds
// a tensor the index does not list; errors name the shard and tensor.
std::map<std::string, at::Tensor> load_checkpoint_tensors(const std::filesystem::path& directory);

// Writes config.json and model.safetensors into `directory`; each file is
// written atomically, so a crash leaves either the old or the new file.
void save_checkpoint(const std::filesystem::path& directory, const nlohmann::json& config,
                     const std::vector<std::pair<std::string, at::Tensor>>& tensors);

}  // namespace can
