// Inference over many (prompt, response) sequences at once, in length-sorted
// batches: scores under a score model and summed response log-probs under a
// causal LM. What the offline-scores stage, re-labelling and evaluation need.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "can/batching.h"
#include "can/llama.h"
#include "can/score_model.h"

namespace can {

class ProcessGroup;

struct BatchInferenceOptions {
  int64_t batch_size = 32;
  int64_t max_length = 512;  // longer sequences are truncated as truncate_sequence says
  // The job whose ranks share the batches (distributed.h, run_sharded): every rank gets
  // every result, equal to one process's. Null: this process alone. Not a config key.
  const ProcessGroup* group = nullptr;
};

// [n] scores (the score head's first output) of each sequence, in input order.
// The score is read at the last token: Safe-RLHF scores prompt + response + EOS,
// so a response that does not end with EOS should get one from the caller.
std::vector<double> score_sequences(LlamaForScore& model, const std::vector<TokenizedSequence>& sequences,
                                    const BatchInferenceOptions& options);

// [rows] float32 log π(response | prompt) in nats, summed over response tokens
// (sequence_logprobs, logprobs.h), of every row of `batch` (on the model's device),
// in eval mode and without gradients: the one forward pass of a frozen causal LM
// that DPO's reference log-probs, PeCAN's implicit rewards and the tools share.
at::Tensor frozen_sequence_logprobs(LlamaForCausalLM& model, const SequenceBatch& batch);

// [n] log π(response | prompt) of each sequence, in input order, through frozen_sequence_logprobs.
std::vector<double> response_logprobs(LlamaForCausalLM& model, const std::vector<TokenizedSequence>& sequences,
                                      const BatchInferenceOptions& options);

}  // namespace can
