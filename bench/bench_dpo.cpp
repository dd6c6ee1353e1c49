// DPO training-step throughput (issue 4's benchmark): one update = policy forward
// and backward on a pair batch, clipping and AdamW, with the reference log-probs
// read from a precomputed cache (what train_dpo does) against a reference forward
// pass every step. Prints one JSON object per configuration.
//   build/bench_dpo [--config tiny|small|both] [--steps 0] [--batch 8] [--length 128] [--threads 0]
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "../tests/tiny_model.h"
#include "can/batch_inference.h"
#include "can/batching.h"
#include "can/dpo_trainer.h"
#include "can/llama.h"
#include "can/optimizer.h"
#include "can/reference_logprobs.h"
#include "can/runtime.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// `count` pair batches of `batch` pairs, every sequence exactly `length` tokens:
// half prompt (BOS first), half response (EOS last); chosen and rejected responses differ.
std::vector<can::SequenceBatch> pair_batches(int64_t count, int64_t batch, int64_t length, int64_t vocab) {
  std::vector<can::SequenceBatch> batches;
  uint64_t state = 1;
  const auto next_id = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int64_t>(3 + (state >> 33) % static_cast<uint64_t>(vocab - 3));
  };
  for (int64_t b = 0; b < count; ++b) {
    std::vector<can::TokenizedSequence> chosen, rejected;
    for (int64_t i = 0; i < batch; ++i) {
      can::TokenizedSequence sequence;
      sequence.prompt_ids.push_back(1);
      while (static_cast<int64_t>(sequence.prompt_ids.size()) < length / 2) sequence.prompt_ids.push_back(next_id());
      for (auto* side : {&chosen, &rejected}) {
        sequence.response_ids.clear();
        while (static_cast<int64_t>(sequence.response_ids.size()) < length - length / 2 - 1) {
          sequence.response_ids.push_back(next_id());
        }
        sequence.response_ids.push_back(2);
        side->push_back(sequence);
      }
    }
    batches.push_back(can::make_pair_batch(chosen, rejected, {length, 0}));
  }
  return batches;
}

nlohmann::json run(const std::string& name, int64_t steps, int64_t batch, int64_t length) {
  const can::LlamaConfig config = can::testing::dpo_bench_llama_config(name);
  if (steps <= 0) steps = name == "tiny" ? 40 : 6;
  torch::manual_seed(0);
  can::LlamaForCausalLM policy(config);
  torch::manual_seed(0);
  can::LlamaForCausalLM reference(config);  // the same weights, held only by the uncached variant
  int64_t parameters = 0;
  for (const auto& p : policy->parameters()) parameters += p.numel();
  const auto batches = pair_batches(4, batch, length, config.vocab_size);
  const int64_t tokens_per_step = batches.front().attention_mask.sum().item<int64_t>();

  // The cache: every batch's reference log-probs, computed once.
  auto start = std::chrono::steady_clock::now();
  std::vector<at::Tensor> cached;
  for (const auto& pair_batch : batches) cached.push_back(can::frozen_sequence_logprobs(reference, pair_batch));
  const double cache_seconds = seconds_since(start);

  auto optimizer = can::make_adamw(policy->named_parameters(), {});
  can::set_learning_rate(*optimizer, 1e-5);
  const auto parameters_list = can::optimizer_parameters(*optimizer);
  const can::DpoOptions dpo;
  const auto step = [&](int64_t index, bool use_cache) {
    const auto& pair_batch = batches[index % batches.size()];
    const auto reference_logprobs =
        use_cache ? cached[index % batches.size()] : can::frozen_sequence_logprobs(reference, pair_batch);
    optimizer->zero_grad();
    can::dpo_pair_batch_loss(policy, pair_batch, reference_logprobs, dpo).loss.backward();
    can::clip_gradient_norm(parameters_list, 1.0);
    can::adamw_step(*optimizer);
  };
  const auto tokens_per_second = [&](bool use_cache) {
    step(0, use_cache);  // warm-up
    const auto begin = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < steps; ++i) step(i, use_cache);
    return static_cast<double>(steps * tokens_per_step) / seconds_since(begin);
  };
  const double with_cache = tokens_per_second(true);
  const double without_cache = tokens_per_second(false);
  return {{"config", name},
          {"parameters", parameters},
          {"threads", torch::get_num_threads()},
          {"pairs_per_step", batch},
          {"sequence_length", length},
          {"tokens_per_step", tokens_per_step},
          {"steps_timed", steps},
          {"cached_reference_tokens_per_s", with_cache},
          {"reference_forward_tokens_per_s", without_cache},
          {"speedup", with_cache / without_cache},
          {"cache_build_seconds_for_4_batches", cache_seconds}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"DPO training-step tokens/s with and without the reference log-prob cache"};
  std::string config = "both";
  int64_t steps = 0, batch = 8, length = 128;
  int threads = 0;
  app.add_option("--config", config, "tiny, small or both")
      ->check(CLI::IsMember({"tiny", "small", "both"}))
      ->capture_default_str();
  app.add_option("--steps", steps, "timed updates per variant; 0: 40 (tiny) or 6 (small)")->capture_default_str();
  app.add_option("--batch", batch, "pairs per update")->capture_default_str();
  app.add_option("--length", length, "tokens per sequence")->capture_default_str();
  app.add_option("--threads", threads, "0: all cores")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  can::configure_threads(threads);
  for (const std::string name : {"tiny", "small"}) {
    if (config == name || config == "both") std::cout << run(name, steps, batch, length).dump() << std::endl;
  }
  return 0;
}
