// Step 1 of both pipelines (docs/design.md §3): sample N responses for each of M prompts
// from the reference policy, then score them through a Scorer — reward and cost
// models (MoCAN), or the implicit rewards β·log(π/π_ref) of pre-aligned DPO
// models (PeCAN) — into the offline scores the dual is solved on.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "can/batch_inference.h"
#include "can/chat_template.h"
#include "can/offline_scores.h"
#include "can/sampling.h"
#include "can/scorer.h"
#include "can/tokenizer.h"

namespace can {

struct SampledPrompt {
  std::string prompt_id;
  std::string prompt;
  std::vector<int64_t> prompt_ids;              // BOS + chat-templated prompt
  std::vector<std::vector<int64_t>> responses;  // [N] sampled token ids, EOS last when the model stopped
};

// can-train's sampling section (config.h).
struct OfflineSamplingOptions {
  int64_t num_prompts = 1000;           // M: the first M sampling prompts
  int64_t responses_per_prompt = 128;   // N
  SamplingOptions generation = {.max_new_tokens = 512, .top_p = 0.9};  // its seed is run.seed
};

// N responses per prompt; the sampling options' seed makes it reproducible.
std::vector<SampledPrompt> sample_responses(LlamaForCausalLM& policy, const Tokenizer& tokenizer,
                                            const ChatTemplate& chat_template,
                                            const std::vector<std::pair<std::string, std::string>>& prompts,
                                            int64_t responses_per_prompt, const SamplingOptions& options);

// The offline scores: r and g (scorer.h) of every sampled response as it was
// sampled, grouped by prompt.
OfflineScores score_samples(const std::vector<SampledPrompt>& samples, Scorer& scorer,
                            const BatchInferenceOptions& options);

// responses.jsonl: one line per prompt {prompt_id, prompt, responses: [decoded texts]}.
void write_sampled_responses(const std::filesystem::path& path, const std::vector<SampledPrompt>& samples,
                             const Tokenizer& tokenizer);

}  // namespace can
