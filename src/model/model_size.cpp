#include "can/model_size.h"

#include <algorithm>
#include <functional>
#include <numeric>

#include "can/error.h"

namespace can {

namespace {

// [in, out] of each projection of a decoder layer, by its Hugging Face name.
std::map<std::string, std::pair<int64_t, int64_t>> projection_sizes(const LlamaConfig& config) {
  const int64_t hidden = config.hidden_size;
  const int64_t key_value = config.num_key_value_heads * config.head_dim();
  const int64_t query = config.num_attention_heads * config.head_dim();
  return {{"self_attn.q_proj", {hidden, query}},         {"self_attn.k_proj", {hidden, key_value}},
          {"self_attn.v_proj", {hidden, key_value}},     {"self_attn.o_proj", {query, hidden}},
          {"mlp.gate_proj", {hidden, config.intermediate_size}}, {"mlp.up_proj", {hidden, config.intermediate_size}},
          {"mlp.down_proj", {config.intermediate_size, hidden}}};
}

}  // namespace

std::map<std::string, std::vector<int64_t>> llama_tensor_shapes(const LlamaConfig& config, ModelKind kind) {
  const int64_t hidden = config.hidden_size;
  std::map<std::string, std::vector<int64_t>> shapes;
  shapes["model.embed_tokens.weight"] = {config.vocab_size, hidden};
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    for (const auto& [name, size] : projection_sizes(config)) {
      shapes[prefix + name + ".weight"] = {size.second, size.first};  // [out, in]
      const bool attention_input = name == "self_attn.q_proj" || name == "self_attn.k_proj" || name == "self_attn.v_proj";
      if ((attention_input && config.qkv_bias) || (name == "self_attn.o_proj" && config.o_bias)) {
        shapes[prefix + name + ".bias"] = {size.second};
      }
    }
    shapes[prefix + "input_layernorm.weight"] = {hidden};
    shapes[prefix + "post_attention_layernorm.weight"] = {hidden};
  }
  shapes["model.norm.weight"] = {hidden};
  if (kind == ModelKind::kCausalLm && !config.tie_word_embeddings) shapes["lm_head.weight"] = {config.vocab_size, hidden};
  if (kind == ModelKind::kScore) {
    shapes[config.score_head_name() + ".weight"] = {config.score_dim, hidden};
    if (config.score_bias) shapes[config.score_head_name() + ".bias"] = {config.score_dim};
  }
  return shapes;
}

int64_t parameter_count(const std::map<std::string, std::vector<int64_t>>& shapes) {
  int64_t count = 0;
  for (const auto& [name, shape] : shapes) {
    count += std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
  }
  return count;
}

int64_t lora_parameter_count(const LlamaConfig& config, const LoraOptions& lora) {
  if (lora.rank <= 0) return 0;
  const auto sizes = projection_sizes(config);
  int64_t per_layer = 0;
  for (const std::string& target : lora.target_modules) {
    const auto found = std::find_if(sizes.begin(), sizes.end(), [&](const auto& entry) {
      return entry.first.substr(entry.first.find('.') + 1) == target;
    });
    check(found != sizes.end(), "lora.target_modules: unknown projection '{}'", target);
    per_layer += lora.rank * (found->second.first + found->second.second);
  }
  return per_layer * config.num_hidden_layers;
}

}  // namespace can
