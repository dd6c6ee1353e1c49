// The training losses of the pipeline, each with the batch metrics it is judged
// by. Inputs are [batch] tensors; every loss is the mean over the batch, computed
// in float32 with log σ(x) = logsigmoid(x) (never log of a sigmoid).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace can {

struct LossOutput {
  at::Tensor loss;  // [] float32, differentiable
  // [] float32 detached batch means on the loss's device, names below. Tensors, not
  // numbers, so a training loop reads them only when it logs (no device-to-host
  // copy per micro-batch).
  std::map<std::string, at::Tensor> metrics;
};

enum class PreferenceLossKind {
  kSigmoid,  // DPO (Rafailov et al. 2023), conservative with label smoothing ε (Mitchell 2023)
  kIpo,      // IPO (Azar et al. 2023)
};

// "sigmoid" or "ipo" (the names TRL uses for loss_type); anything else is an error.
PreferenceLossKind parse_preference_loss_kind(const std::string& name);
std::string preference_loss_kind_name(PreferenceLossKind kind);

struct DpoOptions {
  double beta = 0.1;             // > 0: strength of the KL tie to the reference
  double label_smoothing = 0.0;  // ε in [0, 0.5): assumed fraction of flipped labels (sigmoid only)
  PreferenceLossKind kind = PreferenceLossKind::kSigmoid;
};

// With log-ratios ρ_c = logπ_c − logπ_ref_c, ρ_r = logπ_r − logπ_ref_r, h = ρ_c − ρ_r:
//   sigmoid: −q·log σ(β·h) − (1 − q)·log σ(−β·h),  q = p·(1 − ε) + (1 − p)·ε
//            (q = 1 − ε with labels taken as certain, p = 1)
//   ipo:     (ρ_c/n_c − ρ_r/n_r − 1/(2β))²
// Log-probs are sequence sums in nats (sequence_logprobs); n_c, n_r [batch] are
// the response token counts of each pair, which only IPO uses: it compares
// per-token log-ratios, as TRL does (its DPOTrainer, confirmed with the IPO
// authors), so β means the same for short and long responses. Reference
// log-probs are detached. Metrics, as TRL names them: rewards/chosen = mean βρ_c,
// rewards/rejected = mean βρ_r, rewards/margins = mean of their difference,
// rewards/accuracies = fraction of pairs with βρ_c > βρ_r, logps/chosen and
// logps/rejected = mean policy log-probs.
// `chosen_probability` [batch], p in [½, 1]: how likely each chosen response is the
// preferred one (a soft pseudo-preference, relabel.h's kSoft); undefined: every label is
// certain. The sigmoid loss's minimum in h is then at β·h = log(p/(1 − p)) for ε = 0,
// finite below p = 1. IPO takes certain labels only.
LossOutput dpo_loss(const at::Tensor& policy_chosen_logprobs, const at::Tensor& policy_rejected_logprobs,
                    const at::Tensor& reference_chosen_logprobs, const at::Tensor& reference_rejected_logprobs,
                    const at::Tensor& chosen_response_tokens, const at::Tensor& rejected_response_tokens,
                    const DpoOptions& options, const at::Tensor& chosen_probability = at::Tensor());

// Bradley–Terry reward-model loss −log σ(s_better − s_worse). Metrics: accuracy
// (fraction with s_better > s_worse), scores/better, scores/worse (means).
LossOutput bradley_terry_loss(const at::Tensor& better_scores, const at::Tensor& worse_scores);

// Safe-RLHF's cost-model loss (Dai et al. 2023, arXiv 2310.12773; "sequence-wise" in its
// values/cost/trainer.py), higher cost = less safe:
//   −log σ(c_unsafer − c_safer) − log σ(s_safer·c_safer) − log σ(s_unsafer·c_unsafer)
// with s = +1 for an unsafe response and −1 for a safe one, so the classification
// terms pull cost > 0 onto unsafe responses and cost < 0 onto safe ones, which
// makes 0 the safety threshold. *_is_safe are [batch] bool. Metrics: accuracy
// (fraction with c_unsafer > c_safer), sign_accuracy (fraction of the 2·batch
// responses with cost > 0 exactly when unsafe), costs/safer, costs/unsafer (means).
LossOutput cost_model_loss(const at::Tensor& safer_costs, const at::Tensor& unsafer_costs,
                           const at::Tensor& safer_is_safe, const at::Tensor& unsafer_is_safe);

}  // namespace can
