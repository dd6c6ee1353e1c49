#include "can/score_model.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "can/error.h"
#include "can/hf_checkpoint.h"
#include "can/json_fields.h"
#include "can/model_weights.h"

namespace can {

LlamaForScoreImpl::LlamaForScoreImpl(const LlamaConfig& config_) : config(config_) {
  model = register_module("model", LlamaModel(config));
  score_head = register_module(
      config.score_head_name(),
      torch::nn::Linear(torch::nn::LinearOptions(config.hidden_size, config.score_dim).bias(config.score_bias)));
  torch::NoGradGuard no_grad;
  for (auto& parameter : named_parameters()) {
    if (parameter.key().find("norm") != std::string::npos) continue;
    if (parameter.key() == config.score_head_name() + ".bias") {
      parameter.value().zero_();
    } else {
      parameter.value().normal_(0.0, 0.02);
    }
  }
}

torch::Tensor LlamaForScoreImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) {
  // Last real token: the first position where the running count of real tokens
  // reaches its maximum (Safe-RLHF's rule; right or left padding alike).
  const torch::Tensor last = attention_mask.to(input_ids.device(), torch::kInt64).cumsum(1).argmax(1);  // [B]
  const torch::Tensor final_hidden = model->forward_at(input_ids, attention_mask, last.unsqueeze(1));  // [B, 1, H]
  return score_head(final_hidden.squeeze(1));                                                          // [B, score_dim]
}

LlamaForScore load_score_model(const std::string& directory, torch::Device device, torch::ScalarType dtype) {
  const std::string config_path = directory + "/config.json";
  const nlohmann::json config = read_json_file(config_path);
  check(!config.value("do_normalize", false),
        "{}: do_normalize is true, but CAN reads raw scores only (Safe-RLHF's normalizer is not supported)",
        config_path);
  LlamaForScore model(LlamaConfig::from_json(config, config_path));
  // Safe-RLHF's checkpoints carry the score normalizer's running statistics; unused without do_normalize.
  load_named_tensors(*model, load_checkpoint_tensors(directory), directory,
                     {"normalizer.mean", "normalizer.var", "normalizer.count"});
  model->to(device, dtype);
  return model;
}

void check_score_type(const std::string& directory, const std::string& key, const std::string& expected) {
  const std::string config_path = directory + "/config.json";
  const nlohmann::json config = read_json_file(config_path);
  if (optional_field(config, "score_type") == nullptr) return;
  const std::string score_type = string_field(config, "score_type", config_path);
  check(score_type == expected, "{}: score_type \"{}\", but the model is given as {}, which needs \"{}\"",
        config_path, score_type, key, expected);
}

void save_score_model(const LlamaForScore& model, const std::string& directory) {
  save_checkpoint(directory, model->config.to_json("LlamaForScore"), named_tensors(*model));
}

}  // namespace can
