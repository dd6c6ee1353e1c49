// Log-probabilities of token sequences under a causal LM, from its logits. The
// shift: the logits at position t - 1 predict the token at position t, so
// position 0 (BOS) is never scored. Computed in float32 whatever the logits'
// dtype (bf16 log-softmax over a 32k vocabulary loses too much).
#pragma once

#include <ATen/core/Tensor.h>

#include "can/llama.h"

namespace can {

// logits [batch, seq, vocab], input_ids [batch, seq] int64 ->
// [batch, seq - 1] float32, entry t = log p(input_ids[:, t + 1] | input_ids[:, :t + 1]), nats.
at::Tensor next_token_logprobs(const at::Tensor& logits, const at::Tensor& input_ids);

// [batch] float32: sum over positions t with response_mask[:, t] = 1 of
// log p(input_ids[:, t] | input_ids[:, :t]), nats. response_mask [batch, seq]
// (int or bool) as make_batch builds it; logits at prompt positions other than
// the last one do not enter. What DPO's π(y|x) and the offline scores use.
at::Tensor sequence_logprobs(const at::Tensor& logits, const at::Tensor& input_ids, const at::Tensor& response_mask);

// The same [batch] sums from `model` itself: sequence_logprobs(model(input_ids,
// attention_mask), input_ids, response_mask), but the LM head and the
// log-softmax run only at the positions that predict a response token, since no
// other logits enter (the prompt's [seq, vocab] logits are never made). What the
// trainers use; the form above is its slow, obviously correct reference. Reads
// the number of response tokens on the host (one synchronisation on a GPU).
at::Tensor sequence_logprobs(LlamaForCausalLM& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                             const at::Tensor& response_mask);

// [] float32: the SFT loss, mean negative log-likelihood per response token over
// the whole batch (every response token weighs the same, like Hugging Face's
// labels = -100 on the prompt). 0 when the batch has no response token.
at::Tensor response_nll(const at::Tensor& logits, const at::Tensor& input_ids, const at::Tensor& response_mask);
// The same from `model`, through the response-positions-only sequence_logprobs above.
at::Tensor response_nll(LlamaForCausalLM& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                        const at::Tensor& response_mask);

}  // namespace can
