#include "can/lora.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can/json_fields.h"
#include "can/linear.h"
#include "can/safetensors.h"

namespace can {

namespace fs = std::filesystem;

namespace {

constexpr const char* kPeftPrefix = "base_model.model.";
constexpr const char* kAdapterWeights = "adapter_model.safetensors";
constexpr const char* kAdapterConfig = "adapter_config.json";

std::string last_component(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Every can::Linear of `model` that carries an adapter, by module name.
std::vector<std::pair<std::string, LinearImpl*>> adapted_layers(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, LinearImpl*>> layers;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto* linear = dynamic_cast<LinearImpl*>(item.value().get());
    if (linear != nullptr && linear->has_adapter()) layers.emplace_back(item.key(), linear);
  }
  return layers;
}

// PEFT's file keys of the adapters' tensors, with the tensors.
std::map<std::string, at::Tensor> peft_tensors(const torch::nn::Module& model) {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, layer] : adapted_layers(model)) {
    tensors[kPeftPrefix + name + ".lora_A.weight"] = layer->lora_A->weight;
    tensors[kPeftPrefix + name + ".lora_B.weight"] = layer->lora_B->weight;
  }
  return tensors;
}

}  // namespace

const std::vector<std::string>& lora_target_names() {
  static const std::vector<std::string> names = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

void attach_lora(torch::nn::Module& model, const LoraOptions& options) {
  check(!options.target_modules.empty(), "LoRA needs at least one target module (one of: {})",
        fmt::join(lora_target_names(), ", "));
  for (const auto& target : options.target_modules) {
    const auto& valid = lora_target_names();
    check(std::find(valid.begin(), valid.end(), target) != valid.end(), "LoRA target module '{}' is not one of: {}",
          target, fmt::join(valid, ", "));
  }
  check(options.rank > 0, "LoRA rank must be positive, got {}", options.rank);
  check(!has_lora(model), "the model has LoRA adapters already");
  int64_t attached = 0;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto* linear = dynamic_cast<LinearImpl*>(item.value().get());
    const std::string name = last_component(item.key());
    if (linear == nullptr ||
        std::find(options.target_modules.begin(), options.target_modules.end(), name) == options.target_modules.end()) {
      continue;
    }
    linear->add_adapter(options.rank, options.alpha, options.dropout);
    ++attached;
  }
  check(attached > 0, "the model has no projection named {} to attach LoRA adapters to",
        fmt::join(options.target_modules, ", "));
}

bool has_lora(const torch::nn::Module& model) { return !adapted_layers(model).empty(); }

bool is_lora_parameter(const std::string& name) {
  return ends_with(name, "lora_A.weight") || ends_with(name, "lora_B.weight");
}

LoraOptions lora_options(const torch::nn::Module& model) {
  const auto layers = adapted_layers(model);
  check(!layers.empty(), "the model has no LoRA adapters");
  const LinearImpl& first = *layers.front().second;
  LoraOptions options;
  options.rank = first.lora_A->out_features;
  options.alpha = first.lora_scaling * static_cast<double>(options.rank);
  options.dropout = first.lora_dropout;
  options.target_modules.clear();
  for (const auto& target : lora_target_names()) {
    const bool used = std::any_of(layers.begin(), layers.end(),
                                  [&](const auto& layer) { return last_component(layer.first) == target; });
    if (used) options.target_modules.push_back(target);
  }
  return options;
}

void freeze_all_but_lora(torch::nn::Module& model) {
  for (auto& parameter : model.named_parameters()) parameter.value().requires_grad_(is_lora_parameter(parameter.key()));
}

void set_lora_enabled(torch::nn::Module& model, bool enabled) {
  for (const auto& layer : adapted_layers(model)) layer.second->adapter_enabled = enabled;
}

LoraDisabled::LoraDisabled(torch::nn::Module& model) : model_(model) { set_lora_enabled(model_, false); }

LoraDisabled::~LoraDisabled() { set_lora_enabled(model_, true); }

void merge_lora(torch::nn::Module& model) {
  for (const auto& layer : adapted_layers(model)) layer.second->merge_adapter();
}

std::vector<std::pair<std::string, at::Tensor>> merged_named_tensors(const torch::nn::Module& model) {
  std::map<std::string, LinearImpl*> merged;  // "<module>.weight" of enabled adapters
  for (const auto& [name, layer] : adapted_layers(model)) {
    if (layer->adapter_enabled) merged[name + ".weight"] = layer;
  }
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& parameter : model.named_parameters(/*recurse=*/true)) {
    if (is_lora_parameter(parameter.key())) continue;
    const auto found = merged.find(parameter.key());
    tensors.emplace_back(parameter.key(),
                         found != merged.end() ? found->second->merged_weight() : parameter.value().detach());
  }
  return tensors;
}

void save_lora_adapters(const torch::nn::Module& model, const fs::path& directory,
                        const std::string& base_model_name_or_path) {
  const LoraOptions options = lora_options(model);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, tensor] : peft_tensors(model)) tensors.emplace_back(name, tensor.detach());
  fs::create_directories(directory);
  save_safetensors(directory / kAdapterWeights, tensors, {{"format", "pt"}});
  const nlohmann::json config = {{"peft_type", "LORA"},
                                 {"task_type", "CAUSAL_LM"},
                                 {"r", options.rank},
                                 {"lora_alpha", options.alpha},
                                 {"lora_dropout", options.dropout},
                                 {"target_modules", options.target_modules},
                                 {"bias", "none"},
                                 {"fan_in_fan_out", false},
                                 {"inference_mode", true},
                                 {"init_lora_weights", true},
                                 {"modules_to_save", nullptr},
                                 {"base_model_name_or_path", base_model_name_or_path}};
  write_text_atomically(directory / kAdapterConfig, config.dump(2) + "\n");
}

void load_lora_adapters(torch::nn::Module& model, const fs::path& directory) {
  const fs::path config_path = directory / kAdapterConfig;
  const nlohmann::json config = read_json_file(config_path);
  const std::string where = config_path.string();
  LoraOptions options;
  const std::string peft_type = string_field(config, "peft_type", where);
  check(peft_type == "LORA", "{}: peft_type is '{}', not LORA", where, peft_type);
  const std::string bias = optional_field(config, "bias") ? string_field(config, "bias", where) : "none";
  check(bias == "none", "{}: bias is '{}'; only \"none\" is supported", where, bias);
  // PEFT writes every LoraConfig field. These are read here or do not change what
  // loaded adapters compute (initialisation, bookkeeping); every other one must be
  // unset (null, false or empty): rsLoRA's alpha/sqrt(r), DoRA, per-module rank or
  // alpha patterns, layer subsets, extra trained modules would each compute
  // something else, so they are refused by name rather than ignored.
  static const std::set<std::string> kInertKeys = {
      "peft_type", "task_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
      "inference_mode", "r", "lora_alpha", "lora_dropout", "target_modules", "bias", "init_lora_weights",
      "loftq_config", "eva_config", "corda_config", "lora_ga_config", "megatron_core", "qalora_group_size",
      "layers_pattern", "ensure_weight_tying"};
  for (const auto& [key, value] : config.items()) {
    if (kInertKeys.count(key) != 0) continue;
    const bool unset = value.is_null() || (value.is_boolean() && !value.get<bool>()) ||
                       ((value.is_object() || value.is_array() || value.is_string()) && value.empty());
    check(unset, "{}: {} = {} is not supported: CAN computes plain LoRA, W x + (lora_alpha / r)·B A x on the "
          "target_modules of every layer", where, key, value.dump());
  }
  check(required_field(config, "target_modules", where).is_array(),
        "{}: target_modules is {}; only a list of projection names ({}) is supported", where,
        config.at("target_modules").dump(), fmt::join(lora_target_names(), ", "));
  options.rank = integer_field(config, "r", where);
  options.alpha = number_field(config, "lora_alpha", where);
  options.dropout = optional_field(config, "lora_dropout") ? number_field(config, "lora_dropout", where) : 0.0;
  options.target_modules = strings_field(config, "target_modules", where);
  if (!has_lora(model)) {
    attach_lora(model, options);
  } else {
    const LoraOptions attached = lora_options(model);
    std::vector<std::string> targets = options.target_modules;
    std::vector<std::string> attached_targets = attached.target_modules;
    std::sort(targets.begin(), targets.end());
    std::sort(attached_targets.begin(), attached_targets.end());
    check(attached.rank == options.rank && attached.alpha == options.alpha && attached_targets == targets,
          "{}: adapters of rank {}, alpha {} on [{}] do not match the model's, of rank {}, alpha {} on [{}]",
          config_path.string(), options.rank, options.alpha, fmt::join(options.target_modules, ", "),
          attached.rank, attached.alpha, fmt::join(attached.target_modules, ", "));
  }

  const fs::path weights_path = directory / kAdapterWeights;
  const auto file = SafetensorsFile::open(weights_path);
  const auto expected = peft_tensors(model);
  std::vector<std::string> problems;
  for (const auto& [name, tensor] : expected) {
    if (!file.contains(name)) {
      problems.push_back(fmt::format("missing tensor {}", name));
    } else if (c10::IntArrayRef(file.shape(name)) != tensor.sizes()) {
      problems.push_back(fmt::format("tensor {} has shape {} but the model's is {}", name,
                                     c10::str(c10::IntArrayRef(file.shape(name))), c10::str(tensor.sizes())));
    }
  }
  for (const auto& name : file.names()) {
    if (expected.count(name) == 0) problems.push_back(fmt::format("unexpected tensor {}", name));
  }
  check(problems.empty(), "{}: the adapters do not match the model: {}", weights_path.string(),
        fmt::join(problems, ", "));
  torch::NoGradGuard no_grad;
  for (const auto& [name, tensor] : expected) tensor.copy_(file.tensor(name));
}

}  // namespace can
