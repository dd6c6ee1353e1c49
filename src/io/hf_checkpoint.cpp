#include "can/hf_checkpoint.h"

#include <nlohmann/json.hpp>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can/json_fields.h"
#include "can/safetensors.h"

namespace can {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

std::map<std::string, at::Tensor> load_sharded(const fs::path& directory) {
  const fs::path index_path = directory / kIndexFile;
  const std::string index_file = index_path.string();
  const nlohmann::json index = read_json_file(index_path);
  check(index.is_object() && index.contains("weight_map") && index.at("weight_map").is_object(),
        "{}: expected an object with a \"weight_map\" object {{tensor name: shard file}}", index_file);
  const nlohmann::json& weight_map = index.at("weight_map");

  std::map<std::string, std::vector<std::string>> tensors_by_shard;
  for (const auto& [tensor_name, shard] : weight_map.items()) {
    check(shard.is_string(), "{}: weight_map entry of tensor '{}' is {}, not a shard file name", index_file,
          tensor_name, shard.dump());
    // A shard is a file of the model folder: no path may lead out of it.
    const std::string name = shard.get<std::string>();
    check(!name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos,
          "{}: shard '{}' of tensor '{}' is not a file name inside the model folder", index_file, name, tensor_name);
    tensors_by_shard[shard.get<std::string>()].push_back(tensor_name);
  }

  std::map<std::string, at::Tensor> tensors;
  for (const auto& [shard_name, listed] : tensors_by_shard) {
    const SafetensorsFile shard = SafetensorsFile::open(directory / shard_name);
    for (const auto& tensor_name : listed) {
      check(shard.contains(tensor_name), "{}: lists tensor '{}' in shard '{}', which does not hold it", index_file,
            tensor_name, shard_name);
    }
    for (const auto& tensor_name : shard.names()) {
      const auto listing = weight_map.find(tensor_name);
      check(listing != weight_map.end(), "{}: shard '{}' holds tensor '{}', which the index does not list", index_file,
            shard_name, tensor_name);
      check(*listing == shard_name, "{}: shard '{}' holds tensor '{}', which the index places in shard '{}'",
            index_file, shard_name, tensor_name, listing->get<std::string>());
    }
    for (const auto& tensor_name : listed) tensors.emplace(tensor_name, shard.tensor(tensor_name));
  }
  return tensors;
}

}  // namespace

std::map<std::string, at::Tensor> load_checkpoint_tensors(const fs::path& directory) {
  check(fs::is_directory(directory), "checkpoint directory '{}' does not exist or is not a directory",
        directory.string());
  if (fs::exists(directory / kSingleFile)) {
    const SafetensorsFile file = SafetensorsFile::open(directory / kSingleFile);
    std::map<std::string, at::Tensor> tensors;
    for (const auto& name : file.names()) tensors.emplace(name, file.tensor(name));
    return tensors;
  }
  check(fs::exists(directory / kIndexFile), "checkpoint directory '{}' holds neither {} nor {}", directory.string(),
        kSingleFile, kIndexFile);
  return load_sharded(directory);
}

void save_checkpoint(const fs::path& directory, const nlohmann::json& config,
                     const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  fs::create_directories(directory);
  write_text_atomically(directory / "config.json", config.dump(2) + "\n");
  // transformers' from_pretrained rejects safetensors files without a "format" in their metadata; its
  // save_pretrained writes "pt".
  save_safetensors(directory / kSingleFile, tensors, {{"format", "pt"}});
}

}  // namespace can
