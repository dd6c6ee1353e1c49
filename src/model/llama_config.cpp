#include <nlohmann/json.hpp>

#include <optional>

#include "can/error.h"
#include "can/json_fields.h"
#include "can/llama.h"

namespace can {

namespace {

// A key of config.json, or `fallback` when it is absent or null (Hugging Face's
// default); without a fallback the key is required.
int64_t read_integer(const nlohmann::json& json, const std::string& key, const std::string& source,
                     std::optional<int64_t> fallback) {
  if (optional_field(json, key) == nullptr) {
    check(fallback.has_value(), "{}: missing field '{}'", source, key);
    return *fallback;
  }
  return integer_field(json, key, source);
}

double read_number(const nlohmann::json& json, const std::string& key, const std::string& source, double fallback) {
  return optional_field(json, key) == nullptr ? fallback : number_field(json, key, source);
}

bool read_bool(const nlohmann::json& json, const std::string& key, const std::string& source, bool fallback) {
  return optional_field(json, key) == nullptr ? fallback : bool_field(json, key, source);
}

// eos_token_id may be a list in newer configs; the first entry stops generation.
int64_t read_token_id(const nlohmann::json& json, const std::string& key, const std::string& source,
                      int64_t fallback) {
  if (json.contains(key) && json.at(key).is_array() && !json.at(key).empty()) {
    const auto& first = json.at(key).front();
    check(first.is_number_integer(), "{}: field '{}' must hold integers, got {}", source, key, json.at(key).dump());
    return first.get<int64_t>();
  }
  return read_integer(json, key, source, fallback);
}

}  // namespace

LlamaConfig LlamaConfig::from_json(const nlohmann::json& json, const std::string& source) {
  check(json.is_object(), "{}: a model config must be a JSON object", source);
  if (optional_field(json, "model_type") != nullptr) {
    const std::string model_type = string_field(json, "model_type", source);
    check(model_type == "llama", "{}: model_type '{}' is not supported (only \"llama\": CAN implements Llama)",
          source, model_type);
  }
  if (json.contains("hidden_act")) {
    check(json.at("hidden_act") == "silu", "{}: hidden_act {} is not supported (only \"silu\")", source,
          json.at("hidden_act").dump());
  }
  check(!json.contains("rope_scaling") || json.at("rope_scaling").is_null(),
        "{}: rope_scaling {} is not supported (only plain rotary embeddings)", source,
        json.contains("rope_scaling") ? json.at("rope_scaling").dump() : "");
  // transformers 5 writes rope_parameters {rope_type, rope_theta} instead of rope_theta and rope_scaling.
  const bool has_rope_parameters = json.contains("rope_parameters") && json.at("rope_parameters").is_object();
  if (has_rope_parameters) {
    const auto& rope = json.at("rope_parameters");
    check(!rope.contains("rope_type") || rope.at("rope_type") == "default",
          "{}: rope_parameters {} are not supported (only plain rotary embeddings, rope_type \"default\")", source,
          rope.dump());
  }
  LlamaConfig config;
  config.vocab_size = read_integer(json, "vocab_size", source, std::nullopt);
  config.hidden_size = read_integer(json, "hidden_size", source, std::nullopt);
  config.intermediate_size = read_integer(json, "intermediate_size", source, std::nullopt);
  config.num_hidden_layers = read_integer(json, "num_hidden_layers", source, std::nullopt);
  config.num_attention_heads = read_integer(json, "num_attention_heads", source, std::nullopt);
  config.num_key_value_heads = read_integer(json, "num_key_value_heads", source, config.num_attention_heads);
  config.max_position_embeddings = read_integer(json, "max_position_embeddings", source, 2048);
  config.rms_norm_eps = read_number(json, "rms_norm_eps", source, 1e-6);
  config.rope_theta = has_rope_parameters ? read_number(json.at("rope_parameters"), "rope_theta", source, 10000.0)
                                          : read_number(json, "rope_theta", source, 10000.0);
  config.tie_word_embeddings = read_bool(json, "tie_word_embeddings", source, false);
  config.bos_token_id = read_token_id(json, "bos_token_id", source, 1);
  config.eos_token_id = read_token_id(json, "eos_token_id", source, 2);
  config.pad_token_id = read_token_id(json, "pad_token_id", source, -1);
  config.score_dim = read_integer(json, "score_dim", source, 1);
  // Safe-RLHF's current ScoreModelMixin reads `score_bias`; its 2023 version read
  // `bias`, which beaver checkpoints still carry beside it (`bias` false, `score_bias`
  // true, with a score_head.bias tensor). So `score_bias` decides, then `bias`.
  config.score_bias = read_bool(json, "score_bias", source, read_bool(json, "bias", source, false));

  if (const auto problem = config.problem()) fail("{}: {}", source, problem->message);
  if (json.contains("head_dim") && !json.at("head_dim").is_null()) {
    check(read_integer(json, "head_dim", source, std::nullopt) == config.head_dim(),
          "{}: head_dim {} differs from hidden_size / num_attention_heads = {} (not supported)", source,
          json.at("head_dim").dump(), config.head_dim());
  }
  return config;
}

void LlamaConfig::apply_generation_config(const nlohmann::json& json, const std::string& source) {
  check(json.is_object(), "{}: a generation config must be a JSON object", source);
  bos_token_id = read_token_id(json, "bos_token_id", source, bos_token_id);
  eos_token_id = read_token_id(json, "eos_token_id", source, eos_token_id);
  pad_token_id = read_token_id(json, "pad_token_id", source, pad_token_id);
  if (const auto trouble = problem()) fail("{}: {}", source, trouble->message);
}

std::optional<LlamaConfig::Problem> LlamaConfig::problem() const {
  for (const auto& [key, value] : {std::pair<const char*, int64_t>{"vocab_size", vocab_size},
                                   {"hidden_size", hidden_size},
                                   {"intermediate_size", intermediate_size},
                                   {"num_hidden_layers", num_hidden_layers},
                                   {"num_attention_heads", num_attention_heads},
                                   {"num_key_value_heads", num_key_value_heads},
                                   {"max_position_embeddings", max_position_embeddings},
                                   {"score_dim", score_dim}}) {
    if (value <= 0) return Problem{key, fmt::format("key '{}' must be positive, got {}", key, value)};
  }
  if (hidden_size % num_attention_heads != 0 || head_dim() % 2 != 0) {
    return Problem{"num_attention_heads",
                   fmt::format("hidden_size {} / num_attention_heads {} must be an even integer (the head dimension; "
                               "rotary embeddings rotate its halves)",
                               hidden_size, num_attention_heads)};
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return Problem{"num_key_value_heads",
                   fmt::format("num_attention_heads {} is not a multiple of num_key_value_heads {}",
                               num_attention_heads, num_key_value_heads)};
  }
  if (!(rms_norm_eps > 0 && rope_theta > 0)) {
    return Problem{"rms_norm_eps", "rms_norm_eps and rope_theta must be positive"};
  }
  for (const auto& [key, value] : {std::pair<const char*, int64_t>{"bos_token_id", bos_token_id},
                                   {"eos_token_id", eos_token_id},
                                   {"pad_token_id", pad_token_id}}) {
    if (value < -1 || value >= vocab_size) {
      return Problem{key, fmt::format("key '{}' = {} is outside the vocabulary of {} tokens", key, value, vocab_size)};
    }
  }
  return std::nullopt;
}

nlohmann::json LlamaConfig::to_json(const std::string& architecture) const {
  nlohmann::json json = {
      {"architectures", {architecture}},
      {"model_type", "llama"},
      {"hidden_act", "silu"},
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"max_position_embeddings", max_position_embeddings},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_theta", rope_theta},
      {"tie_word_embeddings", tie_word_embeddings},
      {"bos_token_id", bos_token_id},
      {"eos_token_id", eos_token_id},
      {"pad_token_id", pad_token_id >= 0 ? nlohmann::json(pad_token_id) : nlohmann::json(nullptr)},
  };
  if (architecture == "LlamaForScore") {
    json["score_dim"] = score_dim;
    json["score_bias"] = score_bias;  // both keys, for Safe-RLHF's current and 2023 readers
    json["bias"] = score_bias;
  }
  return json;
}

}  // namespace can
