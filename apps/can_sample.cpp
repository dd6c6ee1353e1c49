// can-sample: sample a continuation of a prompt from a Hugging Face Llama directory.
//   can-sample --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T]
//              [--top-p P] [--top-k K] [--seed S] [--device auto] [--json]
// With --json the last line of stdout is {"text", "tokens", "logprobs"}.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>

#include "can/cli.h"
#include "can/error.h"
#include "can/llama.h"
#include "can/logging.h"
#include "can/runtime.h"
#include "can/sampling.h"
#include "can/tokenizer.h"

int main(int argc, char** argv) {
  CLI::App app{"Sample a continuation of a prompt from a Llama model directory"};
  std::string model_dir, prompt, device_name = "auto";
  can::SamplingOptions options;
  bool json = false;
  app.add_option("--model", model_dir, "model directory (config.json, model.safetensors, tokenizer.model or tokenizer.json)")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--prompt", prompt, "prompt text, encoded as is (with the tokenizer's BOS, when it adds one)")->required();
  app.add_option("--max-new-tokens", options.max_new_tokens, "new tokens at most")->capture_default_str();
  app.add_option("--temperature", options.temperature, "0 is greedy")->capture_default_str();
  app.add_option("--top-p", options.top_p, "nucleus sampling mass")->capture_default_str();
  app.add_option("--top-k", options.top_k, "0 disables top-k")->capture_default_str();
  app.add_option("--seed", options.seed, "random seed")->check(can::seed_number())->capture_default_str();
  app.add_option("--device", device_name, "auto, cpu, cuda or cuda:N")->capture_default_str();
  app.add_flag("--json", json, "print {text, tokens, logprobs} as the last line");
  if (const auto status = can::parse_arguments(app, argc, argv)) return *status;
  try {
    can::setup_logging("warn");
    can::configure_threads();
    const auto tokenizer = can::Tokenizer::load(model_dir);
    auto model = can::load_causal_lm(model_dir, can::select_device(device_name));
    tokenizer.check_fits(model->config.vocab_size, model_dir);
    model->eval();
    options.vocab_limit = tokenizer.vocab_size();  // the text is decoded: no id past the tokenizer
    const auto generation = can::sample(model, {tokenizer.encode(prompt)}, options).front();
    const std::string text = tokenizer.decode(generation.tokens);
    if (json) {
      std::cout << nlohmann::json{{"text", text}, {"tokens", generation.tokens}, {"logprobs", generation.logprobs}}.dump()
                << std::endl;
    } else {
      std::cout << text << std::endl;
    }
  } catch (const std::exception& error) {
    std::cerr << "can-sample: error: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
