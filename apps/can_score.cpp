// can-score: score a response to a prompt with a score model directory
// (Safe-RLHF's LlamaForScore layout: a reward model, or a cost model where
// higher means less safe).
//   can-score --model DIR --prompt TEXT --response TEXT [--chat-template T] [--device auto] [--json]
// The text scored is chat_template(prompt) + response + EOS, encoded as the pipeline
// encodes it (the tokenizer's BOS first for a pattern template; batching.h); the score
// is read at the final EOS, as Safe-RLHF does.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <iostream>

#include "can/cli.h"
#include "can/batching.h"
#include "can/chat_template.h"
#include "can/logging.h"
#include "can/model_weights.h"
#include "can/runtime.h"
#include "can/score_model.h"
#include "can/tokenizer.h"

int main(int argc, char** argv) {
  CLI::App app{"Score a response with a Llama score model directory"};
  std::string model_dir, prompt, response, pattern = can::ChatTemplate::kSafeRlhf, device_name = "auto";
  bool json = false;
  app.add_option("--model", model_dir, "score model directory (config.json, model.safetensors, tokenizer.model or tokenizer.json)")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--prompt", prompt, "the user's request")->required();
  app.add_option("--response", response, "the response to score")->required();
  app.add_option("--chat-template", pattern, "template with one {prompt}, or 'model': the model folder's own")
        ->capture_default_str();
  app.add_option("--device", device_name, "auto, cpu, cuda or cuda:N")->capture_default_str();
  app.add_flag("--json", json, "print {\"score\": [...]} as the last line");
  if (const auto status = can::parse_arguments(app, argc, argv)) return *status;
  try {
    can::setup_logging("warn");
    can::configure_threads();
    const auto tokenizer = can::Tokenizer::load(model_dir);
    const auto chat_template = can::ChatTemplate::from_setting(pattern, model_dir);
    auto model = can::load_score_model(model_dir, can::select_device(device_name));
    tokenizer.check_fits(model->config.vocab_size, model_dir);
    model->eval();
    const auto sequence = can::tokenize_sequence(tokenizer, chat_template, prompt, response);
    std::vector<int64_t> ids = sequence.prompt_ids;
    ids.insert(ids.end(), sequence.response_ids.begin(), sequence.response_ids.end());
    const auto device = can::module_device(*model);
    const torch::Tensor input = torch::tensor(ids, torch::kInt64).unsqueeze(0).to(device);  // [1, T]
    torch::NoGradGuard no_grad;
    const torch::Tensor scores = model(input, torch::ones_like(input))[0].to(torch::kCPU, torch::kFloat64);
    const std::vector<double> values(scores.data_ptr<double>(), scores.data_ptr<double>() + scores.numel());
    if (json) {
      std::cout << nlohmann::json{{"score", values}}.dump() << std::endl;
    } else {
      for (size_t i = 0; i < values.size(); ++i) std::cout << (i ? " " : "") << values[i];
      std::cout << std::endl;
    }
  } catch (const std::exception& error) {
    std::cerr << "can-score: error: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
