// Batched sampling from a causal LM with a preallocated KV cache.
#pragma once

#include <cstdint>
#include <vector>

#include "can/llama.h"

namespace can {

class ProcessGroup;

struct SamplingOptions {
  int64_t max_new_tokens = 128;
  double temperature = 1.0;  // 0: greedy (argmax)
  double top_p = 1.0;        // nucleus (top_p_filter): the most probable tokens, whose probability reaches top_p
  int64_t top_k = 0;         // 0: no top-k filter
  uint64_t seed = 0;         // seeds LibTorch's generators at the start of the call
  int64_t eos_id = -1;       // -1: the model's eos_token_id
  int64_t batch_size = 32;   // prompts decoded together
  // > 0: ids from vocab_limit on are never drawn, greedy or sampled: the model's rows past
  // its tokenizer's pieces (Alpaca-7B's added <pad> = 32000 over 32,000 pieces), which no
  // text can hold. Their probability is left out of the draw, not of the recorded log-probs.
  // 0: every id of the model.
  int64_t vocab_limit = 0;
  // The job whose ranks share the batches (distributed.h, run_sharded): every rank gets
  // every generation, equal to one process's. Null: this process alone. Not a config key.
  const ProcessGroup* group = nullptr;
};

struct Generation {
  std::vector<int64_t> tokens;   // new tokens, ending with EOS when the model stopped
  std::vector<double> logprobs;  // log-prob of each new token under the model (temperature 1, no filter)
  bool stopped_at_eos = false;
};

// Rows are decoded on the device without a host synchronisation per token: the
// host reads which rows have finished only every kSamplingSyncInterval steps, to
// stop when all have and to drop finished rows from the batch. Results do not
// depend on the interval: a finished row records nothing after its EOS, and the
// random draws are made for every row of the batch at every step.
inline constexpr int64_t kSamplingSyncInterval = 16;

// Samples one continuation per prompt (token ids, BOS included as the caller
// wants). Prompts are left-padded into batches so every row decodes in step.
// Each batch draws from its own stream, seeded from (seed, index of its first
// prompt), so a batch's tokens do not depend on how long earlier batches ran,
// nor on which rank of a job decodes it (options.group).
// Greedy decoding gives the same tokens whatever batch_size is; sampling gives
// the same distribution, but other draws for other batch sizes.
std::vector<Generation> sample(LlamaForCausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                               const SamplingOptions& options);

// Recomputes the whole prefix for every new token, without a cache: the slow,
// obviously correct reference used by tests and the cache benchmark. Greedy or
// sampled exactly as `sample` with batch_size 1 (same streams, same draws).
std::vector<Generation> sample_without_cache(LlamaForCausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                             const SamplingOptions& options);

// The nucleus (top-p) filter: logits [B, V] float32 -> the same with the dropped tokens
// at -inf. A token is kept when the tokens more probable than it hold less than top_p of
// the probability: the smallest set of most probable tokens whose probability reaches
// top_p, and every token tied with its least probable member (a tie is kept or dropped
// whole). On the CPU, a selection per row in linear expected time; elsewhere the sort.
torch::Tensor top_p_filter(const torch::Tensor& logits, double top_p);

// The same by sorting each row and summing in float64: the slow, obviously correct
// reference, and the path on other devices. The two agree except where the probability
// above a token is within float64 rounding of top_p.
torch::Tensor top_p_filter_by_sorting(const torch::Tensor& logits, double top_p);

}  // namespace can
