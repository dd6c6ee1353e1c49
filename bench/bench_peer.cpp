// CAN's side of the side-by-side CPU benchmark (bench/cpu_vs_python.py, which
// runs the Python peer on the same checkpoint, shapes and thread count and writes
// bench/results/cpu-vs-python-<date>.json). Times one task on a Hugging Face
// checkpoint that the driver created, and prints one JSON object with the
// wall-clock seconds of every timed repetition (after `--warmup` untimed ones).
//   build/bench_peer --task dpo|sft|sample|score --model DIR --batch B --length T
//                    [--new-tokens N] [--repetitions 5] [--warmup 1] [--threads 0]
// Tasks, each on the same synthetic token ids as the driver (ids_for below):
//   dpo     B pairs of T tokens (prompt T/2, response T - T/2; chosen and rejected
//           differ), reference log-probs computed once before timing (the cache
//           train_dpo uses); a step is policy forward + backward on chosen and
//           rejected, gradient clipping at 1.0, AdamW.
//   sft     B sequences of T tokens, loss on the response half; forward + backward,
//           clipping, AdamW.
//   sample  B prompts of T tokens, N new tokens, temperature 1, top-p 0.9, no EOS
//           stop (eos_id set past the vocabulary), KV cache.
//   score   a score model (Safe-RLHF layout) on B sequences of T tokens, no gradients.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <iostream>

#include "can/batch_inference.h"
#include "can/batching.h"
#include "can/dpo_trainer.h"
#include "can/llama.h"
#include "can/logprobs.h"
#include "can/optimizer.h"
#include "can/reference_logprobs.h"
#include "can/runtime.h"
#include "can/sampling.h"
#include "can/score_model.h"

namespace {

// Token ids in [3, vocab): the same linear congruential sequence as
// bench/cpu_vs_python.py's ids_for, so both sides see the same tokens.
std::vector<int64_t> ids_for(uint64_t stream, int64_t count, int64_t vocab) {
  uint64_t state = stream * 2654435761ULL + 1;
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < count; ++i) {
    state = (state * 6364136223846793005ULL + 1442695040888963407ULL);
    ids.push_back(3 + static_cast<int64_t>((state >> 33) % static_cast<uint64_t>(vocab - 3)));
  }
  return ids;
}

// Sequence `row` of a batch: BOS, then prompt ids, then response ids ending in EOS.
can::TokenizedSequence sequence_for(uint64_t stream, int64_t length, int64_t vocab) {
  can::TokenizedSequence sequence;
  const int64_t prompt_length = length / 2;
  sequence.prompt_ids = {1};
  const auto body = ids_for(stream, length - 2, vocab);
  sequence.prompt_ids.insert(sequence.prompt_ids.end(), body.begin(), body.begin() + (prompt_length - 1));
  sequence.response_ids.assign(body.begin() + (prompt_length - 1), body.end());
  sequence.response_ids.push_back(2);
  return sequence;
}

template <typename Step>
std::vector<double> time_repetitions(int64_t warmup, int64_t repetitions, Step&& step) {
  for (int64_t i = 0; i < warmup; ++i) step();
  std::vector<double> seconds;
  for (int64_t i = 0; i < repetitions; ++i) {
    const auto start = std::chrono::steady_clock::now();
    step();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return seconds;
}

struct Request {
  std::string task, model;
  int64_t batch = 8, length = 128, new_tokens = 64, repetitions = 5, warmup = 1;
};

nlohmann::json run(const Request& request) {
  std::vector<double> seconds;
  int64_t tokens_per_repetition = 0;
  if (request.task == "score") {
    auto model = can::load_score_model(request.model);
    model->eval();
    std::vector<can::TokenizedSequence> sequences;
    for (int64_t row = 0; row < request.batch; ++row) {
      sequences.push_back(sequence_for(row, request.length, model->config.vocab_size));
    }
    const auto batch = can::make_batch(sequences, {request.length, 0});
    tokens_per_repetition = request.batch * request.length;
    seconds = time_repetitions(request.warmup, request.repetitions, [&] {
      torch::NoGradGuard no_grad;
      model(batch.input_ids, batch.attention_mask);
    });
    return {{"seconds", seconds}, {"tokens_per_repetition", tokens_per_repetition}};
  }

  auto model = can::load_causal_lm(request.model);
  const int64_t vocab = model->config.vocab_size;
  if (request.task == "sample") {
    model->eval();
    std::vector<std::vector<int64_t>> prompts;
    for (int64_t row = 0; row < request.batch; ++row) {
      prompts.push_back(sequence_for(row, 2 * request.length, vocab).prompt_ids);  // T prompt tokens
    }
    can::SamplingOptions options;
    options.max_new_tokens = request.new_tokens;
    options.top_p = 0.9;
    options.eos_id = vocab;  // never drawn: every row decodes all new tokens
    options.batch_size = request.batch;
    tokens_per_repetition = request.batch * request.new_tokens;
    seconds = time_repetitions(request.warmup, request.repetitions, [&] { can::sample(model, prompts, options); });
    return {{"seconds", seconds}, {"tokens_per_repetition", tokens_per_repetition}};
  }

  // dpo and sft: one optimizer update per repetition.
  auto optimizer = can::make_adamw(model->named_parameters(), {});
  can::set_learning_rate(*optimizer, 1e-6);
  const auto parameters = can::optimizer_parameters(*optimizer);
  std::function<at::Tensor()> loss;
  can::SequenceBatch batch;
  at::Tensor reference_logprobs;
  if (request.task == "dpo") {
    std::vector<can::TokenizedSequence> chosen, rejected;
    for (int64_t pair = 0; pair < request.batch; ++pair) {
      chosen.push_back(sequence_for(2 * pair, request.length, vocab));
      rejected.push_back(sequence_for(2 * pair + 1, request.length, vocab));
      rejected.back().prompt_ids = chosen.back().prompt_ids;
    }
    batch = can::make_pair_batch(chosen, rejected, {request.length, 0});  // [2B, T]
    reference_logprobs = can::frozen_sequence_logprobs(model, batch);   // the cache, before timing
    loss = [&] { return can::dpo_pair_batch_loss(model, batch, reference_logprobs, can::DpoOptions{}).loss; };
    tokens_per_repetition = 2 * request.batch * request.length;
  } else {
    std::vector<can::TokenizedSequence> sequences;
    for (int64_t row = 0; row < request.batch; ++row) sequences.push_back(sequence_for(row, request.length, vocab));
    batch = can::make_batch(sequences, {request.length, 0});  // [B, T]
    loss = [&] {
      return can::response_nll(model, batch.input_ids, batch.attention_mask, batch.response_mask);
    };
    tokens_per_repetition = request.batch * request.length;
  }
  model->train();
  seconds = time_repetitions(request.warmup, request.repetitions, [&] {
    optimizer->zero_grad();
    loss().backward();
    can::clip_gradient_norm(parameters, 1.0);
    can::adamw_step(*optimizer);
  });
  return {{"seconds", seconds}, {"tokens_per_repetition", tokens_per_repetition}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CAN's timings for bench/cpu_vs_python.py"};
  Request request;
  int threads = 0;
  app.add_option("--task", request.task)->required()->check(CLI::IsMember({"dpo", "sft", "sample", "score"}));
  app.add_option("--model", request.model, "Hugging Face directory (causal LM, or score model for --task score)")
      ->required();
  app.add_option("--batch", request.batch, "pairs (dpo), sequences or prompts")->capture_default_str();
  app.add_option("--length", request.length, "tokens per sequence, or per prompt (sample)")->capture_default_str();
  app.add_option("--new-tokens", request.new_tokens, "sample only")->capture_default_str();
  app.add_option("--repetitions", request.repetitions)->capture_default_str();
  app.add_option("--warmup", request.warmup)->capture_default_str();
  app.add_option("--threads", threads, "0: all cores")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    can::configure_threads(threads);
    auto result = run(request);
    result["threads"] = torch::get_num_threads();
    std::cout << result.dump() << std::endl;
  } catch (const std::exception& error) {
    std::cerr << "bench_peer: error: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
