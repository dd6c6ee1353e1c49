// Loading and saving the causal LM in Hugging Face's directory layout.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "can/hf_checkpoint.h"
#include "can/json_fields.h"
#include "can/llama.h"
#include "can/lora.h"
#include "can/model_weights.h"

namespace can {

LlamaForCausalLM load_causal_lm(const std::string& directory, torch::Device device, torch::ScalarType dtype) {
  const std::string config_path = directory + "/config.json";
  LlamaForCausalLM model(LlamaConfig::from_json(read_json_file(config_path), config_path));
  // A tied model's lm_head, when a checkpoint stores it, is the embedding again.
  std::set<std::string> ignored;
  if (model->config.tie_word_embeddings) ignored.insert("lm_head.weight");
  load_named_tensors(*model, load_checkpoint_tensors(directory), directory, ignored);
  model->to(device, dtype);
  return model;
}

void save_causal_lm(const LlamaForCausalLM& model, const std::string& directory) {
  save_checkpoint(directory, model->config.to_json("LlamaForCausalLM"), merged_named_tensors(*model));
}

}  // namespace can
