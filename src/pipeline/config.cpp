#include "can/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <type_traits>
#include <utility>
#include <variant>

#include "can/atomic_file.h"
#include "can/error.h"

namespace can {
namespace {

using ConfigValue = std::variant<int64_t, double, bool, std::string, std::vector<double>, std::vector<std::string>>;

enum class ValueType { kInt, kFloat, kBool, kString, kFloatList, kStringList };

template <typename T>
constexpr ValueType value_type_of() {
  if constexpr (std::is_same_v<T, int64_t>) {
    return ValueType::kInt;
  } else if constexpr (std::is_same_v<T, double>) {
    return ValueType::kFloat;
  } else if constexpr (std::is_same_v<T, bool>) {
    return ValueType::kBool;
  } else if constexpr (std::is_same_v<T, std::string>) {
    return ValueType::kString;
  } else if constexpr (std::is_same_v<T, std::vector<double>>) {
    return ValueType::kFloatList;
  } else {
    static_assert(std::is_same_v<T, std::vector<std::string>>, "a config field of a type the schema does not know");
    return ValueType::kStringList;
  }
}

const char* type_name(ValueType type) {
  switch (type) {
    case ValueType::kInt:
      return "int";
    case ValueType::kFloat:
      return "float";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kFloatList:
      return "list of floats";
    case ValueType::kStringList:
      return "list of strings";
  }
  return "?";
}

// Follows a chain of member pointers from the config to one field:
// follow(config, &Config::dpo, &Config::Dpo::beta) is config.dpo.beta.
template <typename Object, typename Member, typename... Rest>
auto& follow(Object& object, Member member, Rest... rest) {
  if constexpr (sizeof...(Rest) == 0) {
    return object.*member;
  } else {
    return follow(object.*member, rest...);
  }
}

// ---- Text forms of values (YAML) -------------------------------------------------

bool parses_as_number(const std::string& text) {
  if (text.empty()) return false;
  char* end = nullptr;
  std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size();
}

// Plain when unambiguous, else double-quoted with escapes.
std::string yaml_string(const std::string& text) {
  static const std::set<std::string> kSpecialWords = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"};
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  const bool plain_characters = !text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '.' || c == '/' || c == '-' || c == ':' || c == '+';
  });
  if (plain_characters && std::isalnum(static_cast<unsigned char>(text.front())) && text.back() != ':' &&
      !kSpecialWords.count(lower) && !parses_as_number(text)) {
    return text;
  }
  std::string quoted = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        quoted += "\\\"";
        break;
      case '\\':
        quoted += "\\\\";
        break;
      case '\n':
        quoted += "\\n";
        break;
      case '\t':
        quoted += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          quoted += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
        } else {
          quoted += c;
        }
    }
  }
  return quoted + "\"";
}

// The shortest text that reads back as the same double, always with a '.' or exponent.
std::string yaml_float(double value) {
  std::string text = fmt::format("{}", value);
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

template <typename T, typename Format>
std::string yaml_list(const std::vector<T>& values, Format format) {
  std::string text = "[";
  for (size_t i = 0; i < values.size(); ++i) text += (i ? ", " : "") + format(values[i]);
  return text + "]";
}

std::string yaml_value(const ConfigValue& value) {
  struct Visitor {
    std::string operator()(int64_t v) const { return fmt::format("{}", v); }
    std::string operator()(double v) const { return yaml_float(v); }
    std::string operator()(bool v) const { return v ? "true" : "false"; }
    std::string operator()(const std::string& v) const { return yaml_string(v); }
    std::string operator()(const std::vector<double>& v) const { return yaml_list(v, yaml_float); }
    std::string operator()(const std::vector<std::string>& v) const { return yaml_list(v, yaml_string); }
  };
  return std::visit(Visitor{}, value);
}

// ---- The schema ---------------------------------------------------------------------

// Numbers allowed by a key: each bound optional, open or closed.
struct NumberRange {
  std::optional<double> low, high;
  bool low_open = false, high_open = false;

  bool contains(double value) const {
    if (low && (low_open ? value <= *low : value < *low)) return false;
    if (high && (high_open ? value >= *high : value > *high)) return false;
    return true;
  }
  std::string describe() const {
    if (low && high) {
      return fmt::format("{}{}, {}{}", low_open ? "(" : "[", *low, *high, high_open ? ")" : "]");
    }
    if (low) return fmt::format("{} {}", low_open ? ">" : ">=", *low);
    if (high) return fmt::format("{} {}", high_open ? "<" : "<=", *high);
    return "";
  }
};

const std::vector<std::string> kLlamaLinearLayers = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                     "gate_proj", "up_proj", "down_proj"};

struct Key {
  std::string path;
  ValueType type = ValueType::kInt;
  ConfigValue default_value;
  std::string doc;
  NumberRange range;                 // int and float keys, and each element of a float list
  std::vector<std::string> choices;  // string keys, and each element of a string list; empty: any
  bool device_name = false;          // auto, cpu, cuda or cuda:N
  bool affects_artifacts = true;
  std::function<ConfigValue(const Config&)> get;
  std::function<void(Config&, const ConfigValue&)> set;

  Key& at_least(double bound) {
    range.low = bound;
    return *this;
  }
  Key& above(double bound) {
    range.low = bound;
    range.low_open = true;
    return *this;
  }
  Key& at_most(double bound) {
    range.high = bound;
    return *this;
  }
  Key& below(double bound) {
    range.high = bound;
    range.high_open = true;
    return *this;
  }
  Key& one_of(std::vector<std::string> allowed) {
    choices = std::move(allowed);
    return *this;
  }
  Key& a_device() {
    device_name = true;
    return *this;
  }
  Key& without_effect_on_artifacts() {
    affects_artifacts = false;
    return *this;
  }

  // "one of: cosine, constant", "range: > 0" or "".
  std::string allowed_values() const {
    if (device_name) return "one of: auto, cpu, cuda, cuda:N";
    if (!choices.empty()) return fmt::format("one of: {}", fmt::join(choices, ", "));
    const std::string described = range.describe();
    return described.empty() ? "" : "range: " + described;
  }
  std::string leaf_name() const { return path.substr(path.rfind('.') + 1); }
};

struct Section {
  std::string path;
  std::string doc;
};

std::string parent_of(const std::string& path) {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? "" : path.substr(0, dot);
}

class Schema {
 public:
  void section(const std::string& path, const std::string& doc) {
    check(parent_of(path).empty() || is_section(parent_of(path)), "config schema: section '{}' before its parent",
          path);
    sections_.push_back({path, doc});
  }

  // `members` lead from Config to the field; its type is the key's type.
  template <typename Default, typename... Members>
  Key& add(const std::string& path, Default default_value, const std::string& doc, Members... members) {
    using Field = std::decay_t<decltype(follow(std::declval<Config&>(), members...))>;
    static_assert(!std::is_same_v<Field, int64_t> || std::is_integral_v<Default>, "an int key with a non-int default");
    check(parent_of(path).empty() || is_section(parent_of(path)), "config schema: key '{}' outside a section", path);
    check(!index_.count(path), "config schema: key '{}' declared twice", path);
    Key key;
    key.path = path;
    key.type = value_type_of<Field>();
    key.default_value = Field(default_value);
    key.doc = doc;
    key.get = [members...](const Config& config) { return ConfigValue(follow(config, members...)); };
    key.set = [members...](Config& config, const ConfigValue& value) {
      follow(config, members...) = std::get<Field>(value);
    };
    index_[path] = keys_.size();
    keys_.push_back(std::move(key));
    return keys_.back();
  }

  const std::vector<Key>& keys() const { return keys_; }
  const std::vector<Section>& sections() const { return sections_; }
  const Key* find(const std::string& path) const {
    const auto found = index_.find(path);
    return found == index_.end() ? nullptr : &keys_[found->second];
  }
  bool is_section(const std::string& path) const {
    return std::any_of(sections_.begin(), sections_.end(), [&](const Section& s) { return s.path == path; });
  }
  const std::string& section_doc(const std::string& path) const {
    return std::find_if(sections_.begin(), sections_.end(), [&](const Section& s) { return s.path == path; })->doc;
  }
  // Names directly under `section` ("" for the top level): its keys and subsections.
  std::vector<std::string> children(const std::string& section) const {
    std::vector<std::string> names;
    const auto add_child = [&](const std::string& path) {
      if (parent_of(path) != section) return;
      const std::string name = section.empty() ? path : path.substr(section.size() + 1);
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    };
    for (const Section& s : sections_) add_child(s.path);
    for (const Key& key : keys_) add_child(key.path);
    return names;
  }

 private:
  std::vector<Key> keys_;
  std::vector<Section> sections_;
  std::map<std::string, size_t> index_;
};

// The training options group, declared once; `to_group` leads from Config to a Config::Training.
template <typename... ToGroup>
void add_training_keys(Schema& schema, const std::string& prefix, ToGroup... to_group) {
  using T = Config::Training;
  schema.add(prefix + ".epochs", 3, "passes over the training data", to_group..., &T::epochs).at_least(1);
  schema
      .add(prefix + ".micro_batch_size", 8, "examples per forward pass (pairs for DPO and score models)", to_group...,
           &T::micro_batch_size)
      .at_least(1);
  schema
      .add(prefix + ".gradient_accumulation_steps", 1, "micro-batches per optimizer update", to_group...,
           &T::gradient_accumulation_steps)
      .at_least(1);
  schema.add(prefix + ".learning_rate", 5e-4, "peak learning rate of AdamW", to_group..., &T::learning_rate).above(0);
  schema.add(prefix + ".weight_decay", 0.0, "AdamW's decoupled weight decay", to_group..., &T::weight_decay)
      .at_least(0);
  schema.add(prefix + ".warmup_steps", 100, "optimizer updates of linear warm-up from 0", to_group..., &T::warmup_steps)
      .at_least(0);
  schema
      .add(prefix + ".lr_decay", "cosine", "after the warm-up: cosine decay to min_lr, or constant", to_group...,
           &T::lr_decay)
      .one_of({"cosine", "constant"});
  schema.add(prefix + ".min_lr", 0.0, "floor of the cosine decay, at most learning_rate", to_group..., &T::min_lr)
      .at_least(0);
  schema
      .add(prefix + ".max_grad_norm", 1.0, "clip the global gradient norm to this; 0: no clipping", to_group...,
           &T::max_grad_norm)
      .at_least(0);
  schema
      .add(prefix + ".eval_every", 0, "optimizer updates between held-out evaluations; 0: only at the end", to_group...,
           &T::eval_every)
      .at_least(0);
  schema
      .add(prefix + ".save_every", 100, "optimizer updates between checkpoints for --resume; 0: only at the end",
           to_group..., &T::save_every)
      .at_least(0);
  schema.add(prefix + ".log_every", 10, "optimizer updates between metrics lines", to_group..., &T::log_every)
      .at_least(1);
  schema
      .add(prefix + ".max_length", 512, "longest example in tokens, prompt and response together", to_group...,
           &T::max_length)
      .at_least(2);
  schema.add(prefix + ".activation_checkpointing", false,
             "recompute each decoder layer in backward instead of keeping its activations (less memory, ~1/3 "
             "more compute)",
             to_group..., &T::activation_checkpointing);
}

template <typename... ToGroup>
void add_dpo_keys(Schema& schema, const std::string& prefix, ToGroup... to_group) {
  add_training_keys(schema, prefix, to_group...);
  using D = Config::Dpo;
  schema.add(prefix + ".beta", 0.1, "β: strength of the KL tie to the reference policy", to_group..., &D::beta)
      .above(0);
  schema
      .add(prefix + ".label_smoothing", 0.0, "ε: assumed fraction of flipped labels (conservative DPO, sigmoid loss)",
           to_group..., &D::label_smoothing)
      .at_least(0)
      .below(0.5);
  schema.add(prefix + ".loss", "sigmoid", "sigmoid: DPO; ipo: IPO", to_group..., &D::loss).one_of({"sigmoid", "ipo"});
}

Schema build_schema() {
  using C = Config;
  Schema s;
  s.section("run", "Where and how the run happens.");
  s.add("run.dir", "runs/can", "run directory: resolved config, log, stage timings, one folder per finished stage",
        &C::run, &C::Run::dir)
      .without_effect_on_artifacts();
  s.add("run.seed", 1, "seed of the run's random streams (initialisation, data order, sampling)", &C::run,
        &C::Run::seed)
      .at_least(0);
  s.add("run.device", "auto", "where tensors live; auto: CUDA when present, else CPU", &C::run, &C::Run::device)
      .a_device()
      .without_effect_on_artifacts();
  s.add("run.threads", 0, "CPU threads for LibTorch's intra-op parallelism; 0: every core", &C::run, &C::Run::threads)
      .at_least(0)
      .without_effect_on_artifacts();
  s.add("run.log_level", "info", "verbosity of the console and of can-train.log", &C::run, &C::Run::log_level)
      .one_of({"trace", "debug", "info", "warn", "error", "off"})
      .without_effect_on_artifacts();
  s.add("run.compute_dtype", "float32",
        "dtype of every model's matmuls; weights, optimizer state, norms, softmax and losses stay float32 "
        "(bfloat16 is for GPUs: on a CPU it is slower)",
        &C::run, &C::Run::compute_dtype)
      .one_of({"float32", "bfloat16"});

  s.add("pipeline", "mocan",
        "mocan: reward and cost models score the samples; pecan: helpfulness and safety DPO models do", &C::pipeline)
      .one_of({"mocan", "pecan"});

  s.section("world",
            "The embedded synthetic safety world, built in the run: prompts, preference pairs, SFT data, a judge.");
  s.add("world.enabled", true, "take prompts, pairs and SFT data from the world; false: from the data.* files",
        &C::world, &C::World::enabled);
  s.add("world.seed", 1, "seed of the world's prompts, responses and label noise", &C::world, &C::World::seed)
      .at_least(0);
  s.add("world.num_train_prompts", 2000, "train prompts, one preference pair each", &C::world,
        &C::World::num_train_prompts)
      .at_least(1);
  s.add("world.num_test_prompts", 300, "held-out test prompts, for evaluation", &C::world, &C::World::num_test_prompts)
      .at_least(1);
  s.add("world.harmful_fraction", 0.5, "fraction of harmful requests among train and test prompts", &C::world,
        &C::World::harmful_fraction)
      .at_least(0)
      .at_most(1);
  s.add("world.label_noise", 0.1, "probability that a pair's better or safer label is flipped from the judge's",
        &C::world, &C::World::label_noise)
      .at_least(0)
      .at_most(0.5);

  s.section("data", "External inputs, JSON Lines files; used instead of the world when world.enabled is false.");
  s.add("data.pairs_train", "", "preference pairs (PKU-SafeRLHF schema): re-labelled for DPO, train the score models",
        &C::data, &C::Data::pairs_train);
  s.add("data.sft_train", "", "{prompt, response} lines for the reference policy's SFT; empty: models.policy is given",
        &C::data, &C::Data::sft_train);
  s.add("data.prompts_sample", "", "{prompt_id, prompt} lines sampled for the dual's offline scores", &C::data,
        &C::Data::prompts_sample);
  s.add("data.prompts_test", "", "{prompt_id, prompt} lines held out for evaluation", &C::data, &C::Data::prompts_test);
  s.add("data.chat_template", "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:",
        "prompt format, {prompt} replaced; the response follows after one space (score models depend on it)", &C::data,
        &C::Data::chat_template);

  s.section("models",
            "Hugging Face model directories (config.json, safetensors, tokenizer.model); empty: trained here.");
  s.add("models.policy", "", "reference policy π_ref; empty: SFT from scratch on the SFT data", &C::models,
        &C::Models::policy);
  s.add("models.reward", "", "reward model r (LlamaForScore); empty: trained on better_response_id (mocan)", &C::models,
        &C::Models::reward);
  s.add("models.cost", "", "cost model, g = −cost (LlamaForScore); empty: trained on safer_response_id (mocan)",
        &C::models, &C::Models::cost);

  s.section("tokenizer", "Sentencepiece tokenizer of models trained here (models.policy brings its own).");
  s.add("tokenizer.vocab_size", 1000, "vocabulary size when the tokenizer is trained here", &C::tokenizer,
        &C::Tokenizer::vocab_size)
      .at_least(16);
  s.add("tokenizer.model", "", "sentencepiece model file; empty: trained on the training texts", &C::tokenizer,
        &C::Tokenizer::model);

  s.section("policy", "Llama architecture of π_ref when trained here; the score models trained here share it.");
  s.add("policy.hidden_size", 128, "model width", &C::policy, &C::Policy::hidden_size).at_least(2);
  s.add("policy.intermediate_size", 352, "SwiGLU feed-forward width", &C::policy, &C::Policy::intermediate_size)
      .at_least(1);
  s.add("policy.num_hidden_layers", 2, "transformer blocks", &C::policy, &C::Policy::num_hidden_layers).at_least(1);
  s.add("policy.num_attention_heads", 4, "query heads; hidden_size / num_attention_heads is even", &C::policy,
        &C::Policy::num_attention_heads)
      .at_least(1);
  s.add("policy.num_key_value_heads", 2, "key/value heads (grouped-query attention), dividing num_attention_heads",
        &C::policy, &C::Policy::num_key_value_heads)
      .at_least(1);
  s.add("policy.max_position_embeddings", 512, "longest sequence in tokens", &C::policy,
        &C::Policy::max_position_embeddings)
      .at_least(2);

  s.section("sft", "Supervised fine-tuning of π_ref on the SFT data (when models.policy is empty).");
  add_training_keys(s, "sft", &C::sft);
  s.section("reward_model", "Bradley–Terry training of r on better_response_id (mocan, when models.reward is empty).");
  add_training_keys(s, "reward_model", &C::reward_model);
  s.section("cost_model",
            "Bradley–Terry training of the cost on safer_response_id (mocan, when models.cost is empty).");
  add_training_keys(s, "cost_model", &C::cost_model);
  s.section("dpo", "DPO of π_ref on the re-labelled pairs: the aligned policy (step 4).");
  add_dpo_keys(s, "dpo", &C::dpo);
  s.section("pecan", "PeCAN's pre-aligned models (step 0), also the DPO-helpfulness and DPO-safety baselines.");
  s.section("pecan.helpfulness_dpo", "π_r: DPO of π_ref on better_response_id.");
  add_dpo_keys(s, "pecan.helpfulness_dpo", &C::pecan, &C::Pecan::helpfulness_dpo);
  s.section("pecan.safety_dpo", "π_g: DPO of π_ref on safer_response_id.");
  add_dpo_keys(s, "pecan.safety_dpo", &C::pecan, &C::Pecan::safety_dpo);

  s.section("lora", "LoRA adapters of the DPO fine-tunes (dpo, pecan.*); rank 0 trains every weight.");
  s.add("lora.rank", 8, "adapter rank r; 0: no adapters, full fine-tuning", &C::lora, &C::Lora::rank).at_least(0);
  s.add("lora.alpha", 16.0, "adapter updates are scaled by alpha / rank", &C::lora, &C::Lora::alpha).above(0);
  s.add("lora.dropout", 0.0, "dropout on the adapters' input", &C::lora, &C::Lora::dropout).at_least(0).below(1);
  s.add("lora.target_modules", std::vector<std::string>{"q_proj", "v_proj"},
        "linear layers that get adapters, by Hugging Face name", &C::lora, &C::Lora::target_modules)
      .one_of(kLlamaLinearLayers);

  s.section("sampling", "Offline data: N responses to each of M prompts from π_ref, scored (step 1).");
  s.add("sampling.num_prompts", 1000, "M: prompts sampled, the first M of the sampling prompts", &C::sampling,
        &C::Sampling::num_prompts)
      .at_least(1);
  s.add("sampling.responses_per_prompt", 128, "N: responses per prompt", &C::sampling,
        &C::Sampling::responses_per_prompt)
      .at_least(2);
  s.add("sampling.temperature", 1.0, "softmax temperature; 1 samples π_ref itself, as the dual assumes", &C::sampling,
        &C::Sampling::temperature)
      .above(0);
  s.add("sampling.top_p", 0.9, "nucleus sampling mass", &C::sampling, &C::Sampling::top_p).above(0).at_most(1);
  s.add("sampling.top_k", 0, "keep the k most likely tokens; 0: no top-k filter", &C::sampling, &C::Sampling::top_k)
      .at_least(0);
  s.add("sampling.max_new_tokens", 512, "longest response in tokens", &C::sampling, &C::Sampling::max_new_tokens)
      .at_least(1);
  s.add("sampling.batch_size", 32, "sequences decoded together", &C::sampling, &C::Sampling::batch_size).at_least(1);

  s.section("dual", "The dual problem, solved once from the offline scores (step 2).");
  s.add("dual.beta", 0.1, "β, the KL coefficient of the constrained problem; equals dpo.beta", &C::dual, &C::Dual::beta)
      .above(0);
  s.add("dual.margins", std::vector<double>{1.0}, "b: required safety improvement E[g] − E_ref[g], one per constraint",
        &C::dual, &C::Dual::margins);
  s.add("dual.solver", "newton", "newton: projected Newton; pgd: the paper's projected gradient descent", &C::dual,
        &C::Dual::solver)
      .one_of({"newton", "pgd"});

  s.section("relabel", "Pseudo-preferences for DPO from s = r + λ*ᵀg (step 3).");
  s.add("relabel.mode", "bernoulli",
        "bernoulli: label drawn with P(y1 ≻ y0) = σ(s1 − s0), as the authors' code; argmax: the higher s wins",
        &C::relabel, &C::Relabel::mode)
      .one_of({"bernoulli", "argmax"});
  s.add("relabel.seed", 1, "seed of the Bernoulli draws", &C::relabel, &C::Relabel::seed).at_least(0);

  s.section("eval", "Evaluation on held-out prompts (step 5).");
  s.add("eval.num_prompts", 500, "held-out prompts evaluated (all of them when fewer)", &C::eval, &C::Eval::num_prompts)
      .at_least(1);
  s.add("eval.max_new_tokens", 512, "longest response in tokens", &C::eval, &C::Eval::max_new_tokens).at_least(1);
  s.add("eval.temperature", 1.0, "softmax temperature; 0: greedy", &C::eval, &C::Eval::temperature).at_least(0);
  s.add("eval.top_p", 0.9, "nucleus sampling mass", &C::eval, &C::Eval::top_p).above(0).at_most(1);

  s.section("sweep", "Safety-margin sweep (can-train --sweep-margins).");
  // The stages of a margin are named after it (dual-b0.5), so the list may change on --resume.
  s.add("sweep.margins", std::vector<double>{}, "margins b to align for, one aligned policy each; empty: no sweep",
        &C::sweep, &C::Sweep::margins)
      .without_effect_on_artifacts();
  return s;
}

// A value unlike `value` of the same type.
ConfigValue changed(const ConfigValue& value) {
  struct Visitor {
    ConfigValue operator()(int64_t v) const { return v + 1; }
    ConfigValue operator()(double v) const { return v + 1.5; }
    ConfigValue operator()(bool v) const { return !v; }
    ConfigValue operator()(const std::string& v) const { return v + "~"; }
    ConfigValue operator()(std::vector<double> v) const {
      v.push_back(1.0);
      return v;
    }
    ConfigValue operator()(std::vector<std::string> v) const {
      v.push_back("~");
      return v;
    }
  };
  return std::visit(Visitor{}, value);
}

// Each key must reach a field of its own: a copy-paste slip in build_schema
// (two paths on one field) would otherwise pass unnoticed.
void check_keys_bind_distinct_fields(const Schema& schema) {
  Config base{};
  for (const Key& key : schema.keys()) key.set(base, key.default_value);
  for (const Key& key : schema.keys()) {
    Config config = base;
    key.set(config, changed(key.default_value));
    for (const Key& other : schema.keys()) {
      const bool moved = other.get(config) != other.get(base);
      check(moved == (&other == &key), "config schema: setting '{}' changes '{}'", key.path, other.path);
    }
  }
}

const Schema& schema() {
  static const Schema instance = [] {
    Schema built = build_schema();
    check_keys_bind_distinct_fields(built);
    return built;
  }();
  return instance;
}

// ---- Suggestions ----------------------------------------------------------------------

// Edit distance with adjacent transpositions (optimal string alignment).
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t substitution = d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, substitution});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// " (did you mean 'x'?)" for the nearest candidates within a third of the word's length, or "".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  const size_t limit = std::max<size_t>(1, std::min<size_t>(3, word.size() / 3));
  size_t best = limit + 1;
  std::vector<std::string> nearest;
  for (const std::string& candidate : candidates) {
    const size_t distance = edit_distance(word, candidate);
    if (distance < best) {
      best = distance;
      nearest = {candidate};
    } else if (distance == best) {
      nearest.push_back(candidate);
    }
  }
  if (nearest.empty()) return "";
  return fmt::format(" (did you mean '{}'?)", fmt::join(nearest, "' or '"));
}

std::string unknown_key_message(const std::string& path) {
  const Schema& s = schema();
  std::vector<std::string> known;
  for (const Section& section : s.sections()) known.push_back(section.path);
  for (const Key& key : s.keys()) known.push_back(key.path);
  std::string suggestion = did_you_mean(path, known);
  if (suggestion.empty()) {
    // The right name in the wrong section: "sampling.beta" -> dpo.beta, dual.beta.
    const std::string leaf = path.substr(path.rfind('.') + 1);
    std::vector<std::string> same_leaf;
    for (const Key& key : s.keys()) {
      if (key.leaf_name() == leaf && key.path.find('.') != std::string::npos) {
        same_leaf.push_back(key.path);
      }
    }
    if (!same_leaf.empty()) suggestion = fmt::format(" (did you mean '{}'?)", fmt::join(same_leaf, "' or '"));
  }
  std::string parent = parent_of(path);
  while (!parent.empty() && !s.is_section(parent)) parent = parent_of(parent);
  return fmt::format("unknown key{}; {} has: {}", suggestion,
                     parent.empty() ? std::string("the top level") : "'" + parent + "'",
                     fmt::join(s.children(parent), ", "));
}

// ---- Reading values -------------------------------------------------------------------

// Where a value came from: "file.yaml:12" or "--set dpo.beta=0.2".
struct Source {
  std::string file;
  std::string override_origin;  // set for --set values

  std::string at(const YAML::Node& node) const {
    if (!override_origin.empty()) return override_origin;
    return fmt::format("{}:{}", file, node.Mark().line + 1);
  }
};

[[noreturn]] void fail_at(const std::string& where, const std::string& path, const std::string& problem) {
  fail("{}: {}: {}", where, path, problem);
}

std::string node_kind(const YAML::Node& node) {
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  if (node.IsNull()) return "no value";
  return fmt::format("'{}'", node.Scalar());
}

// yaml-cpp tags quoted scalars "!" and plain ones "?": a quoted "3" is a string, not a number.
bool is_quoted(const YAML::Node& node) { return node.Tag() == "!"; }

const std::string& scalar_text(const YAML::Node& node, const std::string& expected, const std::string& where,
                               const std::string& path) {
  if (!node.IsScalar()) fail_at(where, path, fmt::format("expected {}, got {}", expected, node_kind(node)));
  return node.Scalar();
}

int64_t read_int(const YAML::Node& node, const std::string& where, const std::string& path) {
  std::string text = scalar_text(node, "an int", where, path);
  if (is_quoted(node)) fail_at(where, path, fmt::format("expected an int, got the quoted string \"{}\"", text));
  if (!text.empty() && text.front() == '+') text.erase(0, 1);
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error == std::errc::result_out_of_range) fail_at(where, path, fmt::format("{} overflows a 64-bit int", text));
  if (error != std::errc() || end != text.data() + text.size()) {
    fail_at(where, path, fmt::format("expected an int, got {}", node_kind(node)));
  }
  return value;
}

double read_float(const YAML::Node& node, const std::string& where, const std::string& path) {
  const std::string text = scalar_text(node, "a float", where, path);
  if (is_quoted(node)) fail_at(where, path, fmt::format("expected a float, got the quoted string \"{}\"", text));
  const bool number_characters = !text.empty() && text.find_first_not_of("0123456789+-.eE") == std::string::npos;
  char* end = nullptr;
  const double value = number_characters ? std::strtod(text.c_str(), &end) : 0.0;
  if (!number_characters || end != text.c_str() + text.size()) {
    fail_at(where, path, fmt::format("expected a float, got {}", node_kind(node)));
  }
  if (!std::isfinite(value)) fail_at(where, path, fmt::format("{} is not a finite float", text));
  return value;
}

bool read_bool(const YAML::Node& node, const std::string& where, const std::string& path) {
  const std::string text = scalar_text(node, "true or false", where, path);
  if (!is_quoted(node)) {
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
  }
  fail_at(where, path, fmt::format("expected true or false, got {}", node_kind(node)));
}

std::string read_string(const YAML::Node& node, const std::string& where, const std::string& path) {
  if (node.IsNull()) fail_at(where, path, "has no value; write \"\" for an empty string, or leave the key out");
  return scalar_text(node, "a string", where, path);
}

template <typename T, typename Read>
std::vector<T> read_list(const YAML::Node& node, const std::string& where, const Source& source,
                         const std::string& path, const std::string& example, Read read_element) {
  if (!node.IsSequence()) {
    fail_at(where, path, fmt::format("expected a list like {}, got {}", example, node_kind(node)));
  }
  std::vector<T> values;
  for (size_t i = 0; i < node.size(); ++i) {
    values.push_back(read_element(node[i], source.at(node[i]), fmt::format("{}[{}]", path, i)));
  }
  return values;
}

bool is_device_name(const std::string& name) {
  if (name == "auto" || name == "cpu" || name == "cuda") return true;
  if (name.rfind("cuda:", 0) != 0 || name.size() == 5) return false;
  return name.find_first_not_of("0123456789", 5) == std::string::npos;
}

void check_number(const Key& key, double value, const std::string& where, const std::string& path) {
  if (!key.range.contains(value)) {
    fail_at(where, path, fmt::format("{} is out of range (allowed: {})", value, key.range.describe()));
  }
}

void check_choice(const Key& key, const std::string& value, const std::string& where, const std::string& path) {
  if (key.device_name && !is_device_name(value)) {
    fail_at(where, path, fmt::format("'{}' is not a device (expected auto, cpu, cuda or cuda:N)", value));
  }
  if (!key.choices.empty() && std::find(key.choices.begin(), key.choices.end(), value) == key.choices.end()) {
    fail_at(
        where, path,
        fmt::format("'{}' is not one of: {}{}", value, fmt::join(key.choices, ", "), did_you_mean(value, key.choices)));
  }
}

// Reads and checks one key's value; `where` names the key's line or the --set argument,
// list elements are named by their own lines.
ConfigValue read_value(const Key& key, const YAML::Node& node, const std::string& where, const Source& source) {
  const std::string& path = key.path;
  switch (key.type) {
    case ValueType::kInt: {
      const int64_t value = read_int(node, where, path);
      check_number(key, static_cast<double>(value), where, path);
      return value;
    }
    case ValueType::kFloat: {
      const double value = read_float(node, where, path);
      check_number(key, value, where, path);
      return value;
    }
    case ValueType::kBool:
      return read_bool(node, where, path);
    case ValueType::kString: {
      std::string value = read_string(node, where, path);
      check_choice(key, value, where, path);
      return value;
    }
    case ValueType::kFloatList:
      return read_list<double>(node, where, source, path, "[1.0, 2.0]",
                               [&](const YAML::Node& element, const std::string& at, const std::string& element_path) {
                                 const double value = read_float(element, at, element_path);
                                 check_number(key, value, at, element_path);
                                 return value;
                               });
    case ValueType::kStringList:
      return read_list<std::string>(
          node, where, source, path, "[a, b]",
          [&](const YAML::Node& element, const std::string& at, const std::string& element_path) {
            std::string value = read_string(element, at, element_path);
            check_choice(key, value, at, element_path);
            return value;
          });
  }
  fail("unreachable");
}

// ---- Loading -----------------------------------------------------------------------

class ConfigReader {
 public:
  explicit ConfigReader(std::string file) : file_(std::move(file)), config_(default_config()) {}

  void read_file_tree(const YAML::Node& root) {
    if (root.IsNull()) return;
    if (!root.IsMap()) {
      fail("{}:{}: expected a mapping of keys at the top level, got {}", file_, root.Mark().line + 1, node_kind(root));
    }
    read_mapping(root, "");
  }

  void apply(const ConfigOverride& override_value) {
    const Key* key = schema().find(override_value.key);
    if (key == nullptr) {
      const std::string problem = schema().is_section(override_value.key)
                                      ? fmt::format("is a section; set one of its keys: {}",
                                                    fmt::join(schema().children(override_value.key), ", "))
                                      : unknown_key_message(override_value.key);
      fail_at(override_value.origin, override_value.key, problem);
    }
    // An empty value is the empty string for string keys (`--set models.policy=`).
    if (override_value.value.empty() && key->type == ValueType::kString) {
      store(*key, std::string(), override_value.origin);
      return;
    }
    YAML::Node node;
    try {
      node = YAML::Load(override_value.value);
    } catch (const YAML::Exception& error) {
      fail_at(override_value.origin, override_value.key, fmt::format("not a YAML value: {}", error.msg));
    }
    store(*key, read_value(*key, node, override_value.origin, Source{file_, override_value.origin}),
          override_value.origin);
  }

  // Rules that involve several keys.
  void check_combination() const {
    const Config& c = config_;
    const std::vector<std::pair<std::string, const std::string*>> data_files = {
        {"data.pairs_train", &c.data.pairs_train},
        {"data.sft_train", &c.data.sft_train},
        {"data.prompts_sample", &c.data.prompts_sample},
        {"data.prompts_test", &c.data.prompts_test}};
    for (const auto& [path, value] : data_files) {
      if (c.world.enabled && !value->empty()) {
        fail_combination(path, "is set while world.enabled is true; set world.enabled: false to read data files");
      }
      if (!c.world.enabled && path != "data.sft_train" && value->empty()) {
        fail_combination(path, "is required when world.enabled is false");
      }
    }
    if (!c.world.enabled && c.data.sft_train.empty() && c.models.policy.empty()) {
      fail_combination("data.sft_train", "is required to train π_ref when models.policy is empty");
    }
    if (c.data.chat_template.find("{prompt}") == std::string::npos) {
      fail_combination("data.chat_template", "must contain {prompt}");
    }
    const Config::Policy& p = c.policy;
    if (p.hidden_size % p.num_attention_heads != 0 || (p.hidden_size / p.num_attention_heads) % 2 != 0) {
      fail_combination("policy.num_attention_heads",
                       fmt::format("hidden_size {} / num_attention_heads {} must be an even integer (rotary halves)",
                                   p.hidden_size, p.num_attention_heads));
    }
    if (p.num_attention_heads % p.num_key_value_heads != 0) {
      fail_combination("policy.num_key_value_heads", fmt::format("{} does not divide num_attention_heads {}",
                                                                 p.num_key_value_heads, p.num_attention_heads));
    }
    const std::vector<std::pair<std::string, const Config::Training*>> trainings = {
        {"sft", &c.sft},
        {"reward_model", &c.reward_model},
        {"cost_model", &c.cost_model},
        {"dpo", &c.dpo},
        {"pecan.helpfulness_dpo", &c.pecan.helpfulness_dpo},
        {"pecan.safety_dpo", &c.pecan.safety_dpo}};
    for (const auto& [prefix, training] : trainings) {
      if (training->min_lr > training->learning_rate) {
        fail_combination(prefix + ".min_lr",
                         fmt::format("{} exceeds learning_rate {}", training->min_lr, training->learning_rate));
      }
      if (c.models.policy.empty() && training->max_length > p.max_position_embeddings) {
        fail_combination(prefix + ".max_length", fmt::format("{} exceeds policy.max_position_embeddings {}",
                                                             training->max_length, p.max_position_embeddings));
      }
    }
    if (c.dual.margins.size() != 1) {
      fail_combination("dual.margins",
                       fmt::format("has {} values; the pipelines have one safety constraint, so give exactly one",
                                   c.dual.margins.size()));
    }
    if (c.dual.beta != c.dpo.beta) {
      fail_combination("dual.beta", fmt::format("{} differs from dpo.beta {}: DPO with β solves the problem whose "
                                                "dual is solved with β, so they must be equal",
                                                c.dual.beta, c.dpo.beta));
    }
  }

  Config take() { return std::move(config_); }

 private:
  void read_mapping(const YAML::Node& mapping, const std::string& prefix) {
    std::map<std::string, int> first_line;
    for (const auto& entry : mapping) {
      const YAML::Node& name_node = entry.first;
      const std::string where = fmt::format("{}:{}", file_, name_node.Mark().line + 1);
      if (!name_node.IsScalar()) fail("{}: a key must be a plain name, got {}", where, node_kind(name_node));
      const std::string path = prefix.empty() ? name_node.Scalar() : prefix + "." + name_node.Scalar();
      const auto [previous, inserted] = first_line.emplace(path, name_node.Mark().line + 1);
      if (!inserted) fail_at(where, path, fmt::format("appears twice (first at line {})", previous->second));
      if (const Key* key = schema().find(path)) {
        store(*key, read_value(*key, entry.second, where, Source{file_, ""}), where);
      } else if (schema().is_section(path)) {
        if (entry.second.IsNull()) continue;
        if (!entry.second.IsMap()) {
          fail_at(where, path,
                  fmt::format("is a section; expected a mapping of its keys ({}), got {}",
                              fmt::join(schema().children(path), ", "), node_kind(entry.second)));
        }
        read_mapping(entry.second, path);
      } else {
        fail_at(where, path, unknown_key_message(path));
      }
    }
  }

  void store(const Key& key, const ConfigValue& value, const std::string& where) {
    key.set(config_, value);
    origin_[key.path] = where;
  }

  [[noreturn]] void fail_combination(const std::string& path, const std::string& problem) const {
    const auto found = origin_.find(path);
    fail_at(found == origin_.end() ? file_ + " (default)" : found->second, path, problem);
  }

  std::string file_;
  Config config_;
  std::map<std::string, std::string> origin_;  // key path -> where its value was set
};

}  // namespace

ConfigOverride parse_set_option(const std::string& assignment) {
  const size_t equals = assignment.find('=');
  check(equals != std::string::npos && equals > 0, "--set {}: expected key.path=value, like --set dpo.beta=0.2",
        assignment);
  return {assignment.substr(0, equals), assignment.substr(equals + 1), "--set " + assignment};
}

Config default_config() {
  Config config{};
  for (const Key& key : schema().keys()) key.set(config, key.default_value);
  return config;
}

Config load_config(const std::filesystem::path& file, const std::vector<ConfigOverride>& overrides) {
  const std::string text = read_text_file(file);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& error) {
    fail("{}:{}: not valid YAML: {}", file.string(), error.mark.line + 1, error.msg);
  }
  ConfigReader reader(file.string());
  reader.read_file_tree(root);
  for (const ConfigOverride& override_value : overrides) reader.apply(override_value);
  reader.check_combination();
  return reader.take();
}

std::string config_to_yaml(const Config& config) {
  const Schema& s = schema();
  std::string out =
      "# can-train configuration: every key, its meaning and (type, default, allowed values).\n"
      "# Keys left out take their defaults. Written by: can-train --config FILE --print-config\n";
  std::string open_section;  // the section of the previous key
  for (const Key& key : s.keys()) {
    const std::string section = parent_of(key.path);
    if (section != open_section) {
      // Open the sections between the common ancestor and this key's section.
      std::string common = open_section;
      while (!common.empty() && section != common && section.rfind(common + ".", 0) != 0) common = parent_of(common);
      std::vector<std::string> to_open;
      for (std::string path = section; path != common; path = parent_of(path)) to_open.push_back(path);
      for (auto path = to_open.rbegin(); path != to_open.rend(); ++path) {
        const size_t depth = std::count(path->begin(), path->end(), '.');
        const std::string indent(2 * depth, ' ');
        if (depth == 0) out += "\n";
        out += fmt::format("{}# {}\n{}{}:\n", indent, s.section_doc(*path), indent, path->substr(path->rfind('.') + 1));
      }
      if (section.empty()) out += "\n";
      open_section = section;
    }
    const std::string indent(section.empty() ? 0 : 2 * (std::count(section.begin(), section.end(), '.') + 1), ' ');
    std::string details = fmt::format("{}, default: {}", type_name(key.type), yaml_value(key.default_value));
    if (const std::string allowed = key.allowed_values(); !allowed.empty()) details += ", " + allowed;
    // The details go on a line of their own when the comment would pass 120 columns.
    std::string comment = fmt::format("{}# {} ({})", indent, key.doc, details);
    if (comment.size() > 120) comment = fmt::format("{}# {}\n{}# ({})", indent, key.doc, indent, details);
    out += fmt::format("{}\n{}{}: {}\n", comment, indent, key.leaf_name(), yaml_value(key.get(config)));
  }
  return out;
}

std::vector<ConfigDifference> artifact_config_differences(const Config& before, const Config& after) {
  std::vector<ConfigDifference> differences;
  for (const Key& key : schema().keys()) {
    if (!key.affects_artifacts) continue;
    const ConfigValue old_value = key.get(before), new_value = key.get(after);
    if (old_value != new_value) differences.push_back({key.path, yaml_value(old_value), yaml_value(new_value)});
  }
  return differences;
}

}  // namespace can
