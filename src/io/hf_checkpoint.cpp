#include "can/hf_checkpoint.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can/json_fields.h"
#include "can/pytorch_bin.h"
#include "can/safetensors.h"

namespace can {

namespace fs = std::filesystem;

namespace {

// The layouts transformers reads, in the order it prefers them: safetensors, then
// the older pytorch_model.bin written by torch.save. Each is one file, or shards
// listed by an index {"metadata": ..., "weight_map": {tensor name: shard file}}.
struct Layout {
  const char* single_file;
  const char* index_file;
  std::map<std::string, at::Tensor> (*load_file)(const fs::path&);
};

std::map<std::string, at::Tensor> load_safetensors(const fs::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& name : file.names()) tensors.emplace(name, file.tensor(name));
  return tensors;
}

constexpr Layout kLayouts[] = {{"model.safetensors", "model.safetensors.index.json", load_safetensors},
                               {"pytorch_model.bin", "pytorch_model.bin.index.json", load_pytorch_bin}};
constexpr const char* kSavedFile = "model.safetensors";

// The shard of every tensor an index lists, checked to name files inside the folder.
std::map<std::string, std::vector<std::string>> read_index(const fs::path& directory, const Layout& layout,
                                                           nlohmann::json& weight_map) {
  const fs::path index_path = directory / layout.index_file;
  const std::string index_file = index_path.string();
  const nlohmann::json index = read_json_file(index_path);
  check(index.is_object() && index.contains("weight_map") && index.at("weight_map").is_object(),
        "{}: expected an object with a \"weight_map\" object {{tensor name: shard file}}", index_file);
  weight_map = index.at("weight_map");
  check(!weight_map.empty(), "{}: the \"weight_map\" lists no tensors", index_file);
  std::map<std::string, std::vector<std::string>> tensors_by_shard;
  for (const auto& [tensor_name, shard] : weight_map.items()) {
    check(shard.is_string(), "{}: weight_map entry of tensor '{}' is {}, not a shard file name", index_file,
          tensor_name, shard.dump());
    // A shard is a file of the model folder: no path may lead out of it.
    const std::string name = shard.get<std::string>();
    check(!name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos,
          "{}: shard '{}' of tensor '{}' is not a file name inside the model folder", index_file, name, tensor_name);
    tensors_by_shard[name].push_back(tensor_name);
  }
  return tensors_by_shard;
}

// Every tensor of shard `shard_name` (`held`, by name) is listed for it, and it holds every tensor listed for it.
void check_shard(const std::string& index_file, const std::string& shard_name, const std::vector<std::string>& listed,
                 const std::vector<std::string>& held, const nlohmann::json& weight_map) {
  for (const auto& tensor_name : listed) {
    check(std::find(held.begin(), held.end(), tensor_name) != held.end(),
          "{}: lists tensor '{}' in shard '{}', which does not hold it", index_file, tensor_name, shard_name);
  }
  for (const auto& tensor_name : held) {
    const auto listing = weight_map.find(tensor_name);
    check(listing != weight_map.end(), "{}: shard '{}' holds tensor '{}', which the index does not list", index_file,
          shard_name, tensor_name);
    check(*listing == shard_name, "{}: shard '{}' holds tensor '{}', which the index places in shard '{}'",
          index_file, shard_name, tensor_name, listing->get<std::string>());
  }
}

std::map<std::string, at::Tensor> load_sharded(const fs::path& directory, const Layout& layout) {
  nlohmann::json weight_map;
  const auto tensors_by_shard = read_index(directory, layout, weight_map);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [shard_name, listed] : tensors_by_shard) {
    std::map<std::string, at::Tensor> shard = layout.load_file(directory / shard_name);
    std::vector<std::string> held;
    for (const auto& entry : shard) held.push_back(entry.first);
    check_shard((directory / layout.index_file).string(), shard_name, listed, held, weight_map);
    for (auto& [tensor_name, tensor] : shard) tensors.emplace(tensor_name, std::move(tensor));
  }
  return tensors;
}

// The first layout present in `directory`, and whether it is sharded.
std::pair<const Layout*, bool> find_layout(const fs::path& directory) {
  check(fs::is_directory(directory), "checkpoint directory '{}' does not exist or is not a directory",
        directory.string());
  for (const Layout& layout : kLayouts) {
    if (fs::exists(directory / layout.single_file)) return {&layout, false};
    if (fs::exists(directory / layout.index_file)) return {&layout, true};
  }
  fail("checkpoint directory '{}' holds none of model.safetensors, model.safetensors.index.json, pytorch_model.bin "
       "and pytorch_model.bin.index.json",
       directory.string());
}

}  // namespace

std::map<std::string, at::Tensor> load_checkpoint_tensors(const fs::path& directory) {
  const auto [layout, sharded] = find_layout(directory);
  return sharded ? load_sharded(directory, *layout) : layout->load_file(directory / layout->single_file);
}

CheckpointHeader read_checkpoint_header(const fs::path& directory) {
  const auto [layout, sharded] = find_layout(directory);
  const bool safetensors = layout == &kLayouts[0];
  CheckpointHeader header;
  header.shapes_known = safetensors;
  // The tensor names of one file, its shapes recorded: headers only.
  const auto read_file = [&](const std::string& file) {
    std::vector<std::string> names;
    if (safetensors) {
      const SafetensorsFile opened = SafetensorsFile::open(directory / file);
      names = opened.names();
      for (const auto& name : names) header.shapes[name] = opened.shape(name);
    } else {
      check_pytorch_bin_archive(directory / file);
    }
    header.files.push_back(file);
    return names;
  };
  if (!sharded) {
    read_file(layout->single_file);
    return header;
  }
  nlohmann::json weight_map;
  for (const auto& [shard_name, listed] : read_index(directory, *layout, weight_map)) {
    const std::vector<std::string> held = read_file(shard_name);
    if (safetensors) check_shard((directory / layout->index_file).string(), shard_name, listed, held, weight_map);
  }
  return header;
}

void save_checkpoint(const fs::path& directory, const nlohmann::json& config,
                     const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  fs::create_directories(directory);
  write_text_atomically(directory / "config.json", config.dump(2) + "\n");
  // transformers' from_pretrained rejects safetensors files without a "format" in their metadata; its
  // save_pretrained writes "pt".
  save_safetensors(directory / kSavedFile, tensors, {{"format", "pt"}});
}

}  // namespace can
