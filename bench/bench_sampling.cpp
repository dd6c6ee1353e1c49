// Sampling throughput with the KV cache against recomputing the whole prefix
// for every new token (issue 2's benchmark). Prints one JSON object.
//   build/bench_sampling [--new-tokens 128] [--batch 8] [--threads 0]
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <iostream>

#include "../tests/tiny_model.h"
#include "can/llama.h"
#include "can/runtime.h"
#include "can/sampling.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int64_t count_tokens(const std::vector<can::Generation>& generations) {
  int64_t total = 0;
  for (const auto& generation : generations) total += static_cast<int64_t>(generation.tokens.size());
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"KV-cache sampling against prefix recomputation"};
  int64_t new_tokens = 128, batch = 8, prompt_length = 16;
  int threads = 0;
  app.add_option("--new-tokens", new_tokens)->capture_default_str();
  app.add_option("--batch", batch, "prompts decoded together with the cache")->capture_default_str();
  app.add_option("--prompt-length", prompt_length)->capture_default_str();
  app.add_option("--threads", threads, "0: all cores")->capture_default_str();
  std::string attention = "fused";
  app.add_option("--attention", attention, "fused (SDPA) or reference (matmul-softmax)")
      ->check(CLI::IsMember({"fused", "reference"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  can::configure_threads(threads);

  // "small": ~25M parameters, the scale of the embedded default's policy and above.
  const can::LlamaConfig config = can::testing::small_llama_config();
  torch::manual_seed(0);
  can::LlamaForCausalLM model(config);
  model->eval();
  can::set_attention_kernel(*model, attention == "fused" ? can::AttentionKernel::Fused : can::AttentionKernel::Reference);
  int64_t parameters = 0;
  for (const auto& p : model->parameters()) parameters += p.numel();

  std::vector<std::vector<int64_t>> prompts;
  for (int64_t i = 0; i < batch; ++i) {
    std::vector<int64_t> prompt = {1};
    for (int64_t t = 1; t < prompt_length; ++t) prompt.push_back(3 + (i * 31 + t * 17) % (config.vocab_size - 3));
    prompts.push_back(prompt);
  }
  can::SamplingOptions options;
  options.max_new_tokens = new_tokens;
  options.eos_id = config.vocab_size + 1;  // never produced: every row generates exactly new_tokens
  options.batch_size = batch;

  auto start = std::chrono::steady_clock::now();
  const auto cached = can::sample(model, prompts, options);
  const double cached_seconds = seconds_since(start);
  options.batch_size = 1;
  start = std::chrono::steady_clock::now();
  const auto cached_single = can::sample(model, {prompts.front()}, options);
  const double cached_single_seconds = seconds_since(start);
  start = std::chrono::steady_clock::now();
  const auto recomputed = can::sample_without_cache(model, {prompts.front()}, options);
  const double recomputed_seconds = seconds_since(start);

  const nlohmann::json result = {
      {"parameters", parameters},
      {"threads", torch::get_num_threads()},
      {"attention", attention},
      {"prompt_length", prompt_length},
      {"new_tokens", new_tokens},
      {"kv_cache_batch", {{"batch", batch}, {"tokens_per_s", count_tokens(cached) / cached_seconds}}},
      {"kv_cache_batch1", {{"tokens_per_s", count_tokens(cached_single) / cached_single_seconds}}},
      {"recompute_batch1", {{"tokens_per_s", count_tokens(recomputed) / recomputed_seconds}}},
      {"speedup_batch1", recomputed_seconds / cached_single_seconds},
  };
  std::cout << result.dump(2) << std::endl;
  return 0;
}
