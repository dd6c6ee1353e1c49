#include "can/logprobs.h"

#include <torch/torch.h>

#include "can/error.h"

namespace can {

namespace {

void check_shapes(const at::Tensor& logits, const at::Tensor& input_ids) {
  check(logits.dim() == 3, "logits must be [batch, seq, vocab], got shape {}", fmt::join(logits.sizes(), "x"));
  check(input_ids.dim() == 2 && input_ids.size(0) == logits.size(0) && input_ids.size(1) == logits.size(1),
        "input_ids must be [batch, seq] = [{}, {}] like the logits, got shape {}", logits.size(0), logits.size(1),
        fmt::join(input_ids.sizes(), "x"));
  check(logits.size(1) >= 2, "sequences need at least 2 positions to score a next token, got {}", logits.size(1));
}

// [batch, seq - 1] bool: the scored positions 1..seq-1 of the response mask.
at::Tensor shifted_response_mask(const at::Tensor& response_mask, const at::Tensor& input_ids) {
  check(response_mask.sizes() == input_ids.sizes(), "response_mask must have input_ids' shape {}, got {}",
        fmt::join(input_ids.sizes(), "x"), fmt::join(response_mask.sizes(), "x"));
  return response_mask.narrow(1, 1, response_mask.size(1) - 1).to(torch::kBool);
}

}  // namespace

at::Tensor next_token_logprobs(const at::Tensor& logits, const at::Tensor& input_ids) {
  check_shapes(logits, input_ids);
  const int64_t scored = logits.size(1) - 1;
  const auto log_probs = torch::log_softmax(logits.narrow(1, 0, scored).to(torch::kFloat), -1);
  const auto targets = input_ids.narrow(1, 1, scored).to(torch::kLong).unsqueeze(-1);
  return log_probs.gather(-1, targets).squeeze(-1);
}

at::Tensor sequence_logprobs(const at::Tensor& logits, const at::Tensor& input_ids, const at::Tensor& response_mask) {
  const auto token_logprobs = next_token_logprobs(logits, input_ids);
  const auto mask = shifted_response_mask(response_mask, input_ids);
  return torch::where(mask, token_logprobs, torch::zeros_like(token_logprobs)).sum(1);
}

at::Tensor sequence_logprobs(LlamaForCausalLM& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                             const at::Tensor& response_mask) {
  check(input_ids.dim() == 2 && input_ids.size(1) >= 2,
        "input_ids must be [batch, seq] with seq >= 2 to score a next token, got shape {}",
        fmt::join(input_ids.sizes(), "x"));
  const auto scored = shifted_response_mask(response_mask, input_ids);  // [B, T-1]
  const auto hidden = model->model(input_ids, attention_mask);          // [B, T, H]
  const auto where = scored.nonzero();                                  // [N, 2]: (row, t - 1)
  const auto rows = where.select(1, 0);                                 // [N]
  const auto positions = where.select(1, 1);                            // [N]
  const auto logits = model->logits(hidden.index({rows, positions})).to(torch::kFloat);  // [N, V]
  const auto targets = input_ids.index({rows, positions + 1}).to(torch::kLong);          // [N]
  const auto token_logprobs = -at::cross_entropy_loss(logits, targets, {}, at::Reduction::None);  // [N]
  return torch::zeros({input_ids.size(0)}, token_logprobs.options()).index_add(0, rows, token_logprobs);  // [B]
}

at::Tensor response_nll(const at::Tensor& logits, const at::Tensor& input_ids, const at::Tensor& response_mask) {
  const auto token_logprobs = next_token_logprobs(logits, input_ids);
  const auto mask = shifted_response_mask(response_mask, input_ids);
  const auto total = torch::where(mask, token_logprobs, torch::zeros_like(token_logprobs)).sum();
  return -total / mask.sum().clamp_min(1).to(torch::kFloat);
}

at::Tensor response_nll(LlamaForCausalLM& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                        const at::Tensor& response_mask) {
  const auto total = sequence_logprobs(model, input_ids, attention_mask, response_mask).sum();
  return -total / shifted_response_mask(response_mask, input_ids).sum().clamp_min(1).to(torch::kFloat);
}

}  // namespace can
