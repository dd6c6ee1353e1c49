// Loading and saving the causal LM in Hugging Face's directory layout.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "can/error.h"
#include "can/hf_checkpoint.h"
#include "can/json_fields.h"
#include "can/llama.h"
#include "can/lora.h"
#include "can/model_weights.h"

namespace can {

LlamaForCausalLM load_causal_lm(const std::string& directory, torch::Device device, torch::ScalarType dtype) {
  const std::string config_path = directory + "/config.json";
  LlamaConfig config = LlamaConfig::from_json(read_json_file(config_path), config_path);
  const std::string generation_path = directory + "/generation_config.json";
  if (std::filesystem::exists(generation_path)) {
    config.apply_generation_config(read_json_file(generation_path), generation_path);
  }
  LlamaForCausalLM model(config);
  const std::map<std::string, torch::Tensor> tensors = load_checkpoint_tensors(directory);
  // A tied model's head is its embedding. Some savers store lm_head.weight all the
  // same; it is taken only when it is that embedding again, never silently dropped.
  std::set<std::string> ignored;
  const auto head = tensors.find("lm_head.weight");
  if (model->config.tie_word_embeddings && head != tensors.end()) {
    const auto embedding = tensors.find("model.embed_tokens.weight");
    check(embedding != tensors.end() && head->second.dtype() == embedding->second.dtype() &&
              head->second.sizes() == embedding->second.sizes() && torch::equal(head->second, embedding->second),
          "{}: config.json sets tie_word_embeddings: true, but the checkpoint's lm_head.weight differs from "
          "model.embed_tokens.weight, and a tied model would ignore it; set tie_word_embeddings to false to use it",
          directory);
    ignored.insert("lm_head.weight");
  }
  load_named_tensors(*model, tensors, directory, ignored);
  model->to(device, dtype);
  return model;
}

void save_causal_lm(const LlamaForCausalLM& model, const std::string& directory) {
  save_checkpoint(directory, model->config.to_json("LlamaForCausalLM"), merged_named_tensors(*model));
}

}  // namespace can
