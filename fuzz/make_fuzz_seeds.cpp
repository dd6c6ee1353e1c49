// Writes the fuzz targets' seed corpora: can_fuzz_seeds OUT_DIR CAN_SOURCE_DIR writes
// OUT_DIR/<target>/ for each target of fuzz/ with valid inputs made by CAN's own
// writers (so they follow the formats as they change), the configs of configs/ and
// a tokenizer trained on a small synthetic world.
#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/csrc/jit/serialization/pickle.h>

#include "can/atomic_file.h"
#include "can/config.h"
#include "can/offline_scores.h"
#include "can/preference_data.h"
#include "can/safetensors.h"
#include "can/synthetic_world.h"
#include "can/tokenizer.h"
#include "tiny_model.h"

namespace fs = std::filesystem;

namespace {

void safetensors_seeds(const fs::path& out) {
  can::save_safetensors(out / "floats.safetensors",
                        {{"model.embed_tokens.weight", at::randn({5, 3})},
                         {"half", at::ones({2, 2}, at::kHalf)},
                         {"bfloat16", at::ones({3}, at::kBFloat16)},
                         {"double", at::ones({1}, at::kDouble)},
                         {"scalar", at::ones({}, at::kFloat)},
                         {"empty", at::zeros({0, 4})}},
                        {{"format", "pt"}});
  can::save_safetensors(out / "integers.safetensors",
                        {{"i64", at::arange(4, at::kLong)},
                         {"i32", at::arange(3, at::kInt)},
                         {"i16", at::arange(2, at::kShort)},
                         {"i8", at::arange(2, at::kChar)},
                         {"u8", at::arange(2, at::kByte)},
                         {"bool", at::ones({2}, at::kBool)}});
}

void llama_config_seeds(const fs::path& out) {
  can::LlamaConfig config = can::testing::tiny_llama_config(300);
  can::write_text_atomically(out / "untied.json", config.to_json("LlamaForCausalLM").dump(2));
  config.tie_word_embeddings = true;
  config.num_key_value_heads = config.num_attention_heads;
  config.rope_theta = 500000.0;
  can::write_text_atomically(out / "tied.json", config.to_json("LlamaForCausalLM").dump(2));
}

void checkpoint_index_seeds(const fs::path& out) {
  const nlohmann::json index = {
      {"metadata", {{"total_size", 24 + 8 + 8}}},
      {"weight_map",
       {{"a", "model-00001-of-00002.safetensors"},
        {"b", "model-00001-of-00002.safetensors"},
        {"c", "model-00002-of-00002.safetensors"}}}};
  can::write_text_atomically(out / "both_shards.json", index.dump(2));
}

void offline_scores_seeds(const fs::path& out) {
  can::OfflineScores({"p0", "17"}, {{1.0, -0.5, 2.25}, {0.0, 3.0}}, {{{0.5, -1.0, 0.0}}, {{2.0, -2.0}}})
      .save(out / "one_constraint.jsonl");
  can::OfflineScores({"a", "b"}, {{1.0, 2.0}, {3.0}}, {{{0.5, -1.0}, {1.0, 0.0}}, {{2.0}, {-3.5}}})
      .save(out / "two_constraints.jsonl");
}

// State dicts in torch.save's zip format, written by LibTorch's pickle_save (the same format).
void pytorch_bin_seeds(const fs::path& out) {
  const auto write = [&](const std::string& name, const c10::IValue& value) {
    const std::vector<char> bytes = torch::jit::pickle_save(value);
    can::write_text_atomically(out / name, std::string(bytes.begin(), bytes.end()));
  };
  c10::Dict<std::string, at::Tensor> state;
  state.insert("model.embed_tokens.weight", at::arange(6, at::kFloat).reshape({2, 3}));
  state.insert("lm_head.weight", at::ones({2, 3}, at::kBFloat16));
  state.insert("score_head.bias", at::zeros({1}, at::kHalf));
  write("state_dict.bin", state);
  write("list.bin", c10::List<at::Tensor>({at::ones({2})}));
}

void judge_verdicts_seeds(const fs::path& out) {
  // Both forms, an integer id, extra fields and a blank line (fuzz_judge_verdicts.cpp's requests: a, 7, c).
  can::write_text_atomically(
      out / "both_forms.jsonl",
      "{\"prompt_id\": \"a\", \"helpfulness\": \"policy\", \"safety\": \"tie\"}\n\n"
      "{\"prompt_id\": 7, \"helpfulness\": {\"policy\": 1.5, \"reference\": 2}, \"safety\": \"reference\"}\n"
      "{\"prompt_id\": \"c\", \"helpfulness\": \"tie\", \"safety\": {\"policy\": 3, \"reference\": 3}, "
      "\"note\": \"x\"}\n");
}

void config_yaml_seeds(const fs::path& out, const fs::path& source) {
  // The first line is a --set override, the rest the YAML file (fuzz_config_yaml.cpp).
  int count = 0;
  for (const auto& entry : fs::directory_iterator(source / "configs")) {
    if (entry.path().extension() != ".yaml") continue;
    std::ifstream in(entry.path());
    std::stringstream yaml;
    yaml << in.rdbuf();
    can::write_text_atomically(out / entry.path().filename(), "dpo.loss.beta=0.2\n" + yaml.str());
    ++count;
  }
  if (count == 0) throw can::Error("no configs/*.yaml under " + source.string());
  can::write_text_atomically(out / "default.yaml", "dual.margins=[1.0, 2.0]\n" + can::config_to_yaml(can::default_config()));
}

// Preference pairs (with one constraint and, from a world with privacy harm, with two),
// SFT examples and a tokenizer.model from a small world.
// GPT-2's byte alphabet: printable bytes are themselves, the other 68 U+0100 on.
std::vector<std::string> byte_characters() {
  std::vector<std::string> characters;
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const uint32_t code_point = printable ? b : next++;
    std::string text;
    if (code_point < 0x80) {
      text += static_cast<char>(code_point);
    } else {
      text += static_cast<char>(0xC0 | (code_point >> 6));
      text += static_cast<char>(0x80 | (code_point & 0x3F));
    }
    characters.push_back(text);
  }
  return characters;
}

// Two small byte-level tokenizer.json files: Llama 3's shape (the template's BOS,
// ignore_merges, merges as pairs) and Qwen 2.5's (NFC, merges as "a b" strings).
void tokenizer_json_seeds(const fs::path& out) {
  const auto characters = byte_characters();
  nlohmann::json vocab = nlohmann::json::object();
  for (size_t b = 0; b < characters.size(); ++b) vocab[characters[b]] = b;
  const std::string space = characters[' '];
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"e", "l"}, {"H", "el"}, {"l", "o"}, {"Hel", "lo"}, {space, "b"}, {space + "b", "a"}, {"k", "e"}};
  for (const auto& [left, right] : merges) vocab[left + right] = vocab.size();
  const int64_t added = static_cast<int64_t>(vocab.size());
  const nlohmann::json added_tokens = {
      {{"id", added}, {"content", "<|endoftext|>"}, {"special", true}, {"normalized", false}},
      {{"id", added + 1}, {"content", "<|im_start|>"}, {"special", true}, {"normalized", false}},
      {{"id", added + 2}, {"content", "<|im_end|>"}, {"special", true}, {"normalized", false}},
      {{"id", added + 3}, {"content", "<tool_call>"}, {"special", false}, {"normalized", false}}};
  const std::string pattern =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const nlohmann::json pre_tokenizer = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  nlohmann::json pairs = nlohmann::json::array(), strings = nlohmann::json::array();
  for (const auto& [left, right] : merges) {
    pairs.push_back(nlohmann::json::array({left, right}));
    strings.push_back(left + " " + right);
  }
  const nlohmann::json llama3 = {
      {"added_tokens", added_tokens},
      {"normalizer", nullptr},
      {"pre_tokenizer", pre_tokenizer},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<|endoftext|>", {{"id", "<|endoftext|>"}, {"ids", {added}}, {"tokens", {"<|endoftext|>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"ignore_merges", true}, {"vocab", vocab}, {"merges", pairs}}}};
  nlohmann::json qwen = llama3;
  qwen["normalizer"] = {{"type", "NFC"}};
  qwen["post_processor"] = {{"type", "ByteLevel"}, {"trim_offsets", false}};
  qwen["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", strings}};
  can::write_text_atomically(out / "llama3.json", llama3.dump(1));
  can::write_text_atomically(out / "qwen.json", qwen.dump(1));
}

// Llama 3's chat template and a ChatML one with a default system turn.
void chat_template_seeds(const fs::path& out) {
  can::write_text_atomically(
      out / "llama3.jinja",
      "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
      "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == "
      "0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt "
      "%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}");
  can::write_text_atomically(
      out / "chatml.jinja",
      "{%- if messages[0]['role'] == 'system' %}\n    {{- '<|im_start|>system\n' + messages[0]['content'] + "
      "'<|im_end|>\n' }}\n{%- else %}\n    {{- '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}\n{%- endif "
      "%}\n{%- for message in messages %}\n    {%- if message.role == \"user\" or not loop.first %}\n        {{- "
      "'<|im_start|>' + message.role + '\n' + message.content | tojson + '<|im_end|>' + '\n' }}\n    {%- endif "
      "%}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\n' }}\n{%- endif %}\n");
}

void world_seeds(const fs::path& out) {
  can::WorldOptions options;
  options.num_train_prompts = 40;
  options.num_test_prompts = 4;
  const fs::path world = out / "world";
  can::write_world(options, world);
  fs::create_directories(out / "preference_pairs");
  fs::copy_file(world / "pairs_train.jsonl", out / "preference_pairs" / "pairs.jsonl");
  options.privacy_harm = true;
  can::write_world(options, out / "world_two_constraints");
  fs::copy_file(out / "world_two_constraints" / "pairs_train.jsonl",
                out / "preference_pairs" / "pairs_two_constraints.jsonl");
  fs::copy_file(world / "sft_train.jsonl", out / "preference_pairs" / "sft.jsonl");
  // Soft pseudo-preferences (relabel.mode soft): better_response_probability in [0.5, 1].
  std::vector<can::PreferencePair> soft = can::read_preference_pairs(world / "pairs_train.jsonl");
  for (size_t i = 0; i < soft.size(); ++i) soft[i].better_probability = 0.5 + 0.5 * static_cast<double>(i) / soft.size();
  can::write_preference_pairs(out / "preference_pairs" / "pairs_soft.jsonl", soft);
  fs::create_directories(out / "tokenizer_model");
  can::TokenizerTrainOptions tokenizer;
  tokenizer.input_file = (world / "corpus.txt").string();
  tokenizer.model_prefix = (out / "tokenizer_model" / "bpe").string();
  tokenizer.vocab_size = 500;
  can::Tokenizer::train(tokenizer);
  tokenizer.model_type = "unigram";
  tokenizer.model_prefix = (out / "tokenizer_model" / "unigram").string();
  can::Tokenizer::train(tokenizer);
  for (const auto& entry : fs::directory_iterator(out / "tokenizer_model")) {
    if (entry.path().extension() == ".vocab") fs::remove(entry.path());
  }
  fs::remove_all(world);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: can_fuzz_seeds OUT_DIR CAN_SOURCE_DIR\n";
    return 2;
  }
  try {
    const fs::path out = argv[1];
    fs::remove_all(out);
    for (const char* target : {"safetensors", "llama_config", "checkpoint_index", "offline_scores", "config_yaml",
                               "judge_verdicts", "pytorch_bin", "tokenizer_json", "chat_template"}) {
      fs::create_directories(out / target);
    }
    safetensors_seeds(out / "safetensors");
    llama_config_seeds(out / "llama_config");
    checkpoint_index_seeds(out / "checkpoint_index");
    offline_scores_seeds(out / "offline_scores");
    judge_verdicts_seeds(out / "judge_verdicts");
    pytorch_bin_seeds(out / "pytorch_bin");
    tokenizer_json_seeds(out / "tokenizer_json");
    chat_template_seeds(out / "chat_template");
    config_yaml_seeds(out / "config_yaml", argv[2]);
    world_seeds(out);
    std::cout << "seeds written to " << out.string() << "\n";
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "can_fuzz_seeds: " << error.what() << "\n";
    return 1;
  }
}
