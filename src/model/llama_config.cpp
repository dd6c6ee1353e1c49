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

// The rotary embedding's settings: transformers 5 writes rope_parameters {rope_type,
// rope_theta, and the scaling's fields}; earlier versions rope_theta beside rope_scaling
// {rope_type (or type), ...}, null without scaling.
void read_rope(const nlohmann::json& json, const std::string& source, LlamaConfig& config) {
  const nlohmann::json* parameters = optional_field(json, "rope_parameters");
  const nlohmann::json* scaling = optional_field(json, "rope_scaling");
  const std::string key = parameters != nullptr ? "rope_parameters" : "rope_scaling";
  const nlohmann::json* rope = parameters != nullptr ? parameters : scaling;
  config.rope_theta = parameters != nullptr ? read_number(*parameters, "rope_theta", source, 10000.0)
                                            : read_number(json, "rope_theta", source, 10000.0);
  if (rope == nullptr) return;
  check(rope->is_object(), "{}: field '{}' must be an object, got {}", source, key, rope->dump());
  const std::string where = source + ": " + key;
  const std::string type = optional_field(*rope, "rope_type") != nullptr ? string_field(*rope, "rope_type", where)
                           : optional_field(*rope, "type") != nullptr    ? string_field(*rope, "type", where)
                                                                          : std::string("default");
  if (type == "default") return;
  check(type == "llama3",
        "{}: rope_type '{}' is not supported: CAN implements plain rotary embeddings (\"default\") and Llama 3's "
        "scaling (\"llama3\")",
        where, type);
  Llama3RopeScaling llama3;
  llama3.factor = number_field(*rope, "factor", where);
  llama3.low_freq_factor = number_field(*rope, "low_freq_factor", where);
  llama3.high_freq_factor = number_field(*rope, "high_freq_factor", where);
  llama3.original_max_position_embeddings = integer_field(*rope, "original_max_position_embeddings", where);
  check(llama3.factor > 0 && llama3.low_freq_factor > 0 && llama3.high_freq_factor > llama3.low_freq_factor &&
            llama3.original_max_position_embeddings > 0,
        "{}: llama3 scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
        "original_max_position_embeddings > 0, got {}",
        where, rope->dump());
  config.rope_scaling = llama3;
}

// Fields that change what the model computes and that CAN does not implement: refused,
// never silently ignored.
void refuse_unimplemented(const nlohmann::json& json, const std::string& source, const std::string& model_type) {
  if (optional_field(json, "hidden_act") != nullptr) {
    check(json.at("hidden_act") == "silu", "{}: hidden_act {} is not supported (only \"silu\")", source,
          json.at("hidden_act").dump());
  }
  check(!read_bool(json, "mlp_bias", source, false), "{}: mlp_bias true is not supported (the MLP has no biases)",
        source);
  check(read_number(json, "attention_dropout", source, 0.0) == 0.0,
        "{}: attention_dropout {} is not supported (CAN trains without attention dropout)", source,
        json.value("attention_dropout", nlohmann::json()).dump());
  if (model_type != "llama") {
    check(!read_bool(json, "attention_bias", source, false),
          "{}: attention_bias true is not supported for model_type '{}'", source, model_type);
  }
  // Sliding-window attention: Qwen2 turns it on with use_sliding_window, Mistral with a sliding_window size.
  const bool qwen_window = model_type == "qwen2" && read_bool(json, "use_sliding_window", source, false);
  const bool mistral_window = model_type == "mistral" && optional_field(json, "sliding_window") != nullptr;
  check(!qwen_window && !mistral_window,
        "{}: {} enables sliding-window attention, which CAN does not implement (it attends over the whole "
        "sequence); current {} releases leave it off",
        source,
        qwen_window ? "use_sliding_window true" : "sliding_window " + json.value("sliding_window", nlohmann::json()).dump(),
        model_type == "qwen2" ? "Qwen2.5" : "Mistral");
  if (const nlohmann::json* layer_types = optional_field(json, "layer_types")) {
    check(layer_types->is_array(), "{}: field 'layer_types' must be an array", source);
    for (const auto& type : *layer_types) {
      check(type == "full_attention", "{}: layer_types lists {}, which CAN does not implement (only \"full_attention\")",
            source, type.dump());
    }
  }
}

}  // namespace

LlamaConfig LlamaConfig::from_json(const nlohmann::json& json, const std::string& source) {
  check(json.is_object(), "{}: a model config must be a JSON object", source);
  LlamaConfig config;
  if (optional_field(json, "model_type") != nullptr) config.model_type = string_field(json, "model_type", source);
  check(config.model_type == "llama" || config.model_type == "qwen2" || config.model_type == "mistral",
        "{}: model_type '{}' is not supported (CAN implements the Llama family: \"llama\", \"qwen2\", \"mistral\")",
        source, config.model_type);
  refuse_unimplemented(json, source, config.model_type);
  read_rope(json, source, config);
  config.vocab_size = read_integer(json, "vocab_size", source, std::nullopt);
  config.hidden_size = read_integer(json, "hidden_size", source, std::nullopt);
  config.intermediate_size = read_integer(json, "intermediate_size", source, std::nullopt);
  config.num_hidden_layers = read_integer(json, "num_hidden_layers", source, std::nullopt);
  config.num_attention_heads = read_integer(json, "num_attention_heads", source, std::nullopt);
  config.num_key_value_heads = read_integer(json, "num_key_value_heads", source, config.num_attention_heads);
  config.max_position_embeddings = read_integer(json, "max_position_embeddings", source, 2048);
  config.rms_norm_eps = read_number(json, "rms_norm_eps", source, 1e-6);
  config.explicit_head_dim = read_integer(json, "head_dim", source, 0);
  // Llama's attention_bias puts biases on all four projections; Qwen2 has them on q, k and v, always.
  config.qkv_bias = config.model_type == "qwen2" || read_bool(json, "attention_bias", source, false);
  config.o_bias = config.model_type == "llama" && read_bool(json, "attention_bias", source, false);
  config.tie_word_embeddings = read_bool(json, "tie_word_embeddings", source, false);
  config.bos_token_id = read_token_id(json, "bos_token_id", source, 1);
  config.eos_token_id = read_token_id(json, "eos_token_id", source, 2);
  config.pad_token_id = read_token_id(json, "pad_token_id", source, -1);
  config.score_dim = read_integer(json, "score_dim", source, 1);
  // Safe-RLHF's current ScoreModelMixin reads `score_bias`; its 2023 version read
  // `bias`, which beaver checkpoints still carry beside it (`bias` false, `score_bias`
  // true, with a score_head.bias tensor). So `score_bias` decides, then `bias`.
  config.score_bias = read_bool(json, "score_bias", source, read_bool(json, "bias", source, false));
  // transformers' sequence classifiers: `num_labels` outputs (id2label's size; 2 without one), no bias.
  if (const nlohmann::json* architectures = optional_field(json, "architectures");
      architectures != nullptr && architectures->is_array() && !architectures->empty() &&
      architectures->front().is_string()) {
    const std::string architecture = architectures->front().get<std::string>();
    const std::string suffix = "ForSequenceClassification";
    if (architecture.size() > suffix.size() && architecture.ends_with(suffix)) {
      config.sequence_classification = true;
      config.score_bias = false;
      const nlohmann::json* labels = optional_field(json, "id2label");
      config.score_dim = labels != nullptr && labels->is_object() ? static_cast<int64_t>(labels->size())
                                                                  : read_integer(json, "num_labels", source, 2);
    }
  }

  if (const auto problem = config.problem()) fail("{}: {}", source, problem->message);
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
  if (explicit_head_dim < 0 || (explicit_head_dim > 0 && explicit_head_dim % 2 != 0)) {
    return Problem{"head_dim", fmt::format("head_dim {} must be a positive even integer (rotary embeddings rotate "
                                           "its halves)",
                                           explicit_head_dim)};
  }
  if (explicit_head_dim == 0 && (hidden_size % num_attention_heads != 0 || head_dim() % 2 != 0)) {
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
  const std::string family = model_type == "qwen2" ? "Qwen2" : model_type == "mistral" ? "Mistral" : "Llama";
  nlohmann::json json = {
      {"architectures", {architecture == "LlamaForCausalLM" ? family + "ForCausalLM" : architecture}},
      {"model_type", model_type},
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
  if (explicit_head_dim > 0) json["head_dim"] = explicit_head_dim;
  if (model_type == "llama") json["attention_bias"] = qkv_bias;
  if (model_type == "qwen2") json["use_sliding_window"] = false;
  if (rope_scaling) {
    json["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", rope_scaling->factor},
                            {"low_freq_factor", rope_scaling->low_freq_factor},
                            {"high_freq_factor", rope_scaling->high_freq_factor},
                            {"original_max_position_embeddings", rope_scaling->original_max_position_embeddings}};
  }
  if (architecture == "LlamaForScore" && sequence_classification) {
    json["architectures"] = {family + "ForSequenceClassification"};
    json["id2label"] = nlohmann::json::object();
    json["label2id"] = nlohmann::json::object();
    for (int64_t label = 0; label < score_dim; ++label) {
      json["id2label"][std::to_string(label)] = fmt::format("LABEL_{}", label);
      json["label2id"][fmt::format("LABEL_{}", label)] = label;
    }
  } else if (architecture == "LlamaForScore") {
    json["score_dim"] = score_dim;
    json["score_bias"] = score_bias;  // both keys, for Safe-RLHF's current and 2023 readers
    json["bias"] = score_bias;
  }
  return json;
}

}  // namespace can
