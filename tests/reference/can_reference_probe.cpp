// can_reference_probe: CAN's library functions as a command-line program, for the
// reference tests (tests/reference/*.py), which feed it inputs that transformers,
// TRL, PEFT, safetensors and sentencepiece made and compare what it writes with
// what those libraries compute. Built with the tests, never installed. Tensors
// travel in safetensors files, everything else in JSON; the tests'
// support/can_reference.py documents the contract from the Python side.
//
//   forward   --model DIR --input IN --output OUT [--adapter DIR [--merge]] [--attention fused|reference]
//             IN: input_ids, attention_mask [B, T] int64, optional response_mask [B, T] int64.
//             OUT: logits [B, T, V] float32; response_logprobs [B] (sequence_logprobs) with a response_mask.
//   score     --model DIR --input IN --output OUT          OUT: scores [B, score_dim] float32
//   generate  --model DIR --input IN.json --output OUT.json --max-new-tokens N [--batch-size B] [--no-cache]
//             greedy decoding of {"prompts": [[ids]]} into {"generations": [{tokens, logprobs, stopped_at_eos}]}
//   tokenize  --tokenizer FILE_OR_DIR --input IN.json --output OUT.json
//             {"texts": [...]} into {"ids": [[BOS, ...]], "decoded": [...]}
//   chat      --model DIR --input IN.json --output OUT.json
//             the folder's own chat template (ChatTemplate::of_model) on {"prompts": [...]}:
//             {"texts": [formatted], "ids": [tokenize_prompt ids]}
//   dpo       --policy DIR --reference DIR --input PAIRS.json --output OUT --loss sigmoid|ipo --beta X
//             --label-smoothing E --learning-rate LR --weight-decay WD [--save DIR]
//             PAIRS.json: {"pairs": [{prompt_ids, chosen_ids, rejected_ids}], "max_length", "pad_id"}.
//             OUT: the pair batch (input_ids, attention_mask, response_mask), loss, metric.<name>,
//             grad.<parameter> and, after one AdamW step, updated.<parameter>.
//   lora-save --model DIR --output DIR --rank R --alpha A --targets a,b,... --seed S
//             fresh adapters with lora_B drawn from normal(0, 0.1), saved in PEFT's layout.
//   safetensors-copy --input FILE_OR_DIR --output FILE
//             every tensor (and a file's __metadata__) read by CAN, written by CAN.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <fstream>
#include <iostream>

#include "can/atomic_file.h"
#include "can/batch_inference.h"
#include "can/batching.h"
#include "can/chat_template.h"
#include "can/dpo_trainer.h"
#include "can/error.h"
#include "can/hf_checkpoint.h"
#include "can/json_fields.h"
#include "can/linear.h"
#include "can/llama.h"
#include "can/logging.h"
#include "can/logprobs.h"
#include "can/lora.h"
#include "can/losses.h"
#include "can/model_weights.h"
#include "can/optimizer.h"
#include "can/reference_logprobs.h"
#include "can/runtime.h"
#include "can/safetensors.h"
#include "can/sampling.h"
#include "can/score_model.h"
#include "can/tokenizer.h"

namespace {

using TensorList = std::vector<std::pair<std::string, at::Tensor>>;

at::Tensor input_tensor(const can::SafetensorsFile& file, const std::string& name) {
  can::check(file.contains(name), "{}: no tensor '{}'", file.path().string(), name);
  return file.tensor(name);
}

void write_json(const std::string& path, const nlohmann::json& value) {
  can::write_text_atomically(path, value.dump() + "\n");
}

// --- forward, score ------------------------------------------------------------------
void forward(const std::string& model_dir, const std::string& input, const std::string& output,
             const std::string& adapter, bool merge, const std::string& attention) {
  auto model = can::load_causal_lm(model_dir);
  if (!adapter.empty()) can::load_lora_adapters(*model, adapter);
  if (merge) can::merge_lora(*model);
  can::set_attention_kernel(*model, attention == "reference" ? can::AttentionKernel::Reference
                                                             : can::AttentionKernel::Fused);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto file = can::SafetensorsFile::open(input);
  const at::Tensor input_ids = input_tensor(file, "input_ids");            // [B, T]
  const at::Tensor attention_mask = input_tensor(file, "attention_mask");  // [B, T]
  const at::Tensor logits = model(input_ids, attention_mask);              // [B, T, V]
  TensorList tensors = {{"logits", logits}};
  if (file.contains("response_mask")) {
    tensors.emplace_back("response_logprobs",
                         can::sequence_logprobs(logits, input_ids, file.tensor("response_mask")));  // [B]
  }
  can::save_safetensors(output, tensors);
}

void score(const std::string& model_dir, const std::string& input, const std::string& output) {
  auto model = can::load_score_model(model_dir);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto file = can::SafetensorsFile::open(input);
  const at::Tensor scores = model(input_tensor(file, "input_ids"), input_tensor(file, "attention_mask"));
  can::save_safetensors(output, {{"scores", scores}});  // [B, score_dim]
}

// --- generate, tokenize --------------------------------------------------------------
void generate(const std::string& model_dir, const std::string& input, const std::string& output,
              int64_t max_new_tokens, int64_t batch_size, bool no_cache) {
  auto model = can::load_causal_lm(model_dir);
  model->eval();
  const auto request = can::read_json_file(input);
  const auto prompts = request.at("prompts").get<std::vector<std::vector<int64_t>>>();
  can::SamplingOptions options;
  options.max_new_tokens = max_new_tokens;
  options.temperature = 0.0;
  options.batch_size = batch_size;
  const auto generations =
      no_cache ? can::sample_without_cache(model, prompts, options) : can::sample(model, prompts, options);
  nlohmann::json result = {{"generations", nlohmann::json::array()}};
  for (const auto& generation : generations) {
    result["generations"].push_back({{"tokens", generation.tokens},
                                     {"logprobs", generation.logprobs},
                                     {"stopped_at_eos", generation.stopped_at_eos}});
  }
  write_json(output, result);
}

void tokenize(const std::string& tokenizer_file, const std::string& input, const std::string& output) {
  const auto tokenizer = can::Tokenizer::load(tokenizer_file);
  const auto texts = can::read_json_file(input).at("texts").get<std::vector<std::string>>();
  nlohmann::json result = {{"ids", nlohmann::json::array()}, {"decoded", nlohmann::json::array()}};
  for (const auto& text : texts) {
    const auto ids = tokenizer.encode(text, /*add_bos=*/true);
    result["ids"].push_back(ids);
    result["decoded"].push_back(tokenizer.decode(ids));
  }
  write_json(output, result);
}

void chat(const std::string& model_dir, const std::string& input, const std::string& output) {
  const auto tokenizer = can::Tokenizer::load(model_dir);
  const auto chat_template = can::ChatTemplate::of_model(model_dir);
  const auto prompts = can::read_json_file(input).at("prompts").get<std::vector<std::string>>();
  nlohmann::json result = {{"texts", nlohmann::json::array()}, {"ids", nlohmann::json::array()}};
  for (const auto& prompt : prompts) {
    result["texts"].push_back(chat_template.format(prompt));
    result["ids"].push_back(can::tokenize_prompt(tokenizer, chat_template, prompt));
  }
  write_json(output, result);
}

// --- dpo ---------------------------------------------------------------------------
struct DpoRequest {
  std::string policy, reference, input, output, save, loss = "sigmoid";
  double beta = 0.1, label_smoothing = 0.0, learning_rate = 1e-3, weight_decay = 0.0;
};

void dpo(const DpoRequest& request) {
  const auto pairs = can::read_json_file(request.input);
  std::vector<can::TokenizedSequence> chosen, rejected;
  for (const auto& pair : pairs.at("pairs")) {
    const auto prompt = pair.at("prompt_ids").get<std::vector<int64_t>>();
    chosen.push_back({prompt, pair.at("chosen_ids").get<std::vector<int64_t>>()});
    rejected.push_back({prompt, pair.at("rejected_ids").get<std::vector<int64_t>>()});
  }
  can::BatchingOptions batching;
  batching.max_length = pairs.at("max_length").get<int64_t>();
  batching.pad_id = pairs.at("pad_id").get<int64_t>();
  const can::SequenceBatch batch = can::make_pair_batch(chosen, rejected, batching);  // [2B, T]

  auto reference = can::load_causal_lm(request.reference);
  const at::Tensor reference_logprobs = can::frozen_sequence_logprobs(reference, batch);  // [2B]

  auto policy = can::load_causal_lm(request.policy);
  policy->train();
  can::DpoOptions options;
  options.beta = request.beta;
  options.label_smoothing = request.label_smoothing;
  options.kind = can::parse_preference_loss_kind(request.loss);
  const can::LossOutput result = can::dpo_pair_batch_loss(policy, batch, reference_logprobs, options);
  result.loss.backward();

  TensorList tensors = {{"input_ids", batch.input_ids},
                        {"attention_mask", batch.attention_mask},
                        {"response_mask", batch.response_mask},
                        {"loss", result.loss.detach()}};
  for (const auto& [name, value] : result.metrics) tensors.emplace_back("metric." + name, value);
  for (const auto& item : policy->named_parameters()) tensors.emplace_back("grad." + item.key(), item.value().grad());

  can::AdamWConfig adamw;
  adamw.weight_decay = request.weight_decay;
  auto optimizer = can::make_adamw(policy->named_parameters(), adamw);
  can::set_learning_rate(*optimizer, request.learning_rate);
  can::adamw_step(*optimizer);
  for (const auto& item : policy->named_parameters()) tensors.emplace_back("updated." + item.key(), item.value());
  can::save_safetensors(request.output, tensors);
  if (!request.save.empty()) can::save_causal_lm(policy, request.save);
}

// --- lora-save, safetensors-copy -----------------------------------------------------
void lora_save(const std::string& model_dir, const std::string& output, const can::LoraOptions& options,
               uint64_t seed) {
  auto model = can::load_causal_lm(model_dir);
  can::set_seed(seed);
  can::attach_lora(*model, options);
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    if (item.key().find("lora_B.") != std::string::npos) item.value().normal_(0.0, 0.1);
  }
  can::save_lora_adapters(*model, output, model_dir);
}

void safetensors_copy(const std::string& input, const std::string& output) {
  TensorList tensors;
  std::map<std::string, std::string> metadata;
  if (std::filesystem::is_directory(input)) {
    for (const auto& [name, tensor] : can::load_checkpoint_tensors(input)) tensors.emplace_back(name, tensor);
  } else {
    const auto file = can::SafetensorsFile::open(input);
    for (const auto& name : file.names()) tensors.emplace_back(name, file.tensor(name));
    metadata = file.metadata();
  }
  can::save_safetensors(output, tensors, metadata);
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, ',');) parts.push_back(part);
  return parts;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CAN's library functions for the reference tests (tests/reference)"};
  app.require_subcommand(1);
  std::string model, input, output, adapter, attention = "fused", tokenizer;
  bool merge = false, no_cache = false;
  int64_t max_new_tokens = 32, batch_size = 32;
  DpoRequest dpo_request;
  can::LoraOptions lora;
  std::string targets;
  uint64_t seed = 0;

  auto* forward_command = app.add_subcommand("forward", "logits and response log-probs of a causal LM");
  forward_command->add_option("--model", model)->required();
  forward_command->add_option("--input", input)->required();
  forward_command->add_option("--output", output)->required();
  forward_command->add_option("--adapter", adapter, "PEFT LoRA directory to load");
  forward_command->add_flag("--merge", merge, "merge the adapters into the weights first");
  forward_command->add_option("--attention", attention)->check(CLI::IsMember({"fused", "reference"}));

  auto* score_command = app.add_subcommand("score", "end scores of a score model");
  score_command->add_option("--model", model)->required();
  score_command->add_option("--input", input)->required();
  score_command->add_option("--output", output)->required();

  auto* generate_command = app.add_subcommand("generate", "greedy decoding");
  generate_command->add_option("--model", model)->required();
  generate_command->add_option("--input", input)->required();
  generate_command->add_option("--output", output)->required();
  generate_command->add_option("--max-new-tokens", max_new_tokens)->required();
  generate_command->add_option("--batch-size", batch_size);
  generate_command->add_flag("--no-cache", no_cache, "recompute the prefix for every token");

  auto* tokenize_command = app.add_subcommand("tokenize", "ids and decoded text");
  tokenize_command->add_option("--tokenizer", tokenizer)->required();
  tokenize_command->add_option("--input", input)->required();
  tokenize_command->add_option("--output", output)->required();

  auto* chat_command = app.add_subcommand("chat", "a model folder's chat template, rendered and tokenized");
  chat_command->add_option("--model", model)->required();
  chat_command->add_option("--input", input)->required();
  chat_command->add_option("--output", output)->required();

  auto* dpo_command = app.add_subcommand("dpo", "DPO loss, metrics, gradients and one AdamW step");
  dpo_command->add_option("--policy", dpo_request.policy)->required();
  dpo_command->add_option("--reference", dpo_request.reference)->required();
  dpo_command->add_option("--input", dpo_request.input)->required();
  dpo_command->add_option("--output", dpo_request.output)->required();
  dpo_command->add_option("--loss", dpo_request.loss)->check(CLI::IsMember({"sigmoid", "ipo"}));
  dpo_command->add_option("--beta", dpo_request.beta);
  dpo_command->add_option("--label-smoothing", dpo_request.label_smoothing);
  dpo_command->add_option("--learning-rate", dpo_request.learning_rate);
  dpo_command->add_option("--weight-decay", dpo_request.weight_decay);
  dpo_command->add_option("--save", dpo_request.save, "write the updated policy here (save_causal_lm)");

  auto* lora_command = app.add_subcommand("lora-save", "fresh adapters with random lora_B, saved for PEFT");
  lora_command->add_option("--model", model)->required();
  lora_command->add_option("--output", output)->required();
  lora_command->add_option("--rank", lora.rank)->required();
  lora_command->add_option("--alpha", lora.alpha)->required();
  lora_command->add_option("--targets", targets)->required();
  lora_command->add_option("--seed", seed);

  auto* copy_command = app.add_subcommand("safetensors-copy", "read tensors with CAN and write them with CAN");
  copy_command->add_option("--input", input)->required();
  copy_command->add_option("--output", output)->required();

  CLI11_PARSE(app, argc, argv);
  try {
    can::setup_logging("warn");
    can::configure_threads();
    if (*forward_command) forward(model, input, output, adapter, merge, attention);
    if (*score_command) score(model, input, output);
    if (*generate_command) generate(model, input, output, max_new_tokens, batch_size, no_cache);
    if (*tokenize_command) tokenize(tokenizer, input, output);
    if (*chat_command) chat(model, input, output);
    if (*dpo_command) dpo(dpo_request);
    if (*lora_command) {
      lora.target_modules = split_commas(targets);
      lora_save(model, output, lora, seed);
    }
    if (*copy_command) safetensors_copy(input, output);
  } catch (const std::exception& error) {
    std::cerr << "can_reference_probe: error: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
