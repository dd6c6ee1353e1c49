#include "can/losses.h"

#include <torch/torch.h>

#include "can/error.h"

namespace can {

namespace {

// Checks that every tensor is [batch], with the first one's batch.
void check_batch_vectors(std::initializer_list<std::pair<const char*, const at::Tensor*>> named_tensors) {
  const at::Tensor& first = *named_tensors.begin()->second;
  const int64_t batch_size = first.dim() == 1 ? first.size(0) : -1;
  for (const auto& [name, tensor] : named_tensors) {
    check(tensor->dim() == 1 && tensor->size(0) == batch_size && batch_size > 0,
          "{} must be a [batch] tensor like {} (shape {}), got shape {}", name, named_tensors.begin()->first,
          fmt::join(first.sizes(), "x"), fmt::join(tensor->sizes(), "x"));
  }
}

std::map<std::string, at::Tensor> to_metrics(const std::vector<std::pair<std::string, at::Tensor>>& named_values) {
  std::map<std::string, at::Tensor> metrics;
  for (const auto& [name, value] : named_values) metrics[name] = value.detach().to(torch::kFloat).reshape({});
  return metrics;
}

at::Tensor fraction(const at::Tensor& condition) { return condition.to(torch::kFloat).mean(); }

}  // namespace

PreferenceLossKind parse_preference_loss_kind(const std::string& name) {
  if (name == "sigmoid") return PreferenceLossKind::kSigmoid;
  if (name == "ipo") return PreferenceLossKind::kIpo;
  fail("unknown preference loss '{}' (expected sigmoid or ipo)", name);
}

std::string preference_loss_kind_name(PreferenceLossKind kind) {
  return kind == PreferenceLossKind::kSigmoid ? "sigmoid" : "ipo";
}

LossOutput dpo_loss(const at::Tensor& policy_chosen_logprobs, const at::Tensor& policy_rejected_logprobs,
                    const at::Tensor& reference_chosen_logprobs, const at::Tensor& reference_rejected_logprobs,
                    const at::Tensor& chosen_response_tokens, const at::Tensor& rejected_response_tokens,
                    const DpoOptions& options, const at::Tensor& chosen_probability) {
  check(options.beta > 0, "DPO beta must be positive, got {}", options.beta);
  check(options.label_smoothing >= 0 && options.label_smoothing < 0.5,
        "DPO label_smoothing must lie in [0, 0.5), got {}", options.label_smoothing);
  check_batch_vectors({{"policy_chosen_logprobs", &policy_chosen_logprobs},
                       {"policy_rejected_logprobs", &policy_rejected_logprobs},
                       {"reference_chosen_logprobs", &reference_chosen_logprobs},
                       {"reference_rejected_logprobs", &reference_rejected_logprobs},
                       {"chosen_response_tokens", &chosen_response_tokens},
                       {"rejected_response_tokens", &rejected_response_tokens}});

  const auto chosen_log_ratio =
      policy_chosen_logprobs.to(torch::kFloat) - reference_chosen_logprobs.detach().to(torch::kFloat);
  const auto rejected_log_ratio =
      policy_rejected_logprobs.to(torch::kFloat) - reference_rejected_logprobs.detach().to(torch::kFloat);
  const auto h = chosen_log_ratio - rejected_log_ratio;  // [batch]
  const double beta = options.beta;

  at::Tensor losses;
  if (chosen_probability.defined()) {
    check(options.kind == PreferenceLossKind::kSigmoid,
          "DPO: soft labels (chosen probabilities) need the sigmoid loss, not {}", preference_loss_kind_name(options.kind));
    check(chosen_probability.dim() == 1 && chosen_probability.size(0) == h.size(0),
          "DPO: chosen_probability must have shape [{}], got [{}]", h.size(0), fmt::join(chosen_probability.sizes(), "x"));
    const auto probability = chosen_probability.to(h.options());  // [batch]
    check(probability.ge(0.5).logical_and(probability.le(1)).all().item<bool>(),
          "DPO: every chosen probability must lie in [0.5, 1] (the chosen response is the likelier one)");
    const double epsilon = options.label_smoothing;
    const auto target = probability * (1 - epsilon) + (1 - probability) * epsilon;  // [batch] q
    losses = -target * torch::log_sigmoid(beta * h) - (1 - target) * torch::log_sigmoid(-beta * h);
  } else if (options.kind == PreferenceLossKind::kSigmoid) {
    const double epsilon = options.label_smoothing;
    losses = -(1 - epsilon) * torch::log_sigmoid(beta * h) - epsilon * torch::log_sigmoid(-beta * h);
  } else {
    // Every sequence keeps a response token (truncate_sequence); the clamp only guards hand-made batches.
    const auto per_token_h = chosen_log_ratio / chosen_response_tokens.to(torch::kFloat).clamp_min(1) -
                             rejected_log_ratio / rejected_response_tokens.to(torch::kFloat).clamp_min(1);  // [batch]
    losses = (per_token_h - 1 / (2 * beta)).pow(2);
  }

  const auto chosen_rewards = beta * chosen_log_ratio.detach();
  const auto rejected_rewards = beta * rejected_log_ratio.detach();
  LossOutput output;
  output.loss = losses.mean();
  output.metrics = to_metrics({{"rewards/chosen", chosen_rewards.mean()},
                               {"rewards/rejected", rejected_rewards.mean()},
                               {"rewards/margins", (chosen_rewards - rejected_rewards).mean()},
                               {"rewards/accuracies", fraction(chosen_rewards > rejected_rewards)},
                               {"logps/chosen", policy_chosen_logprobs.mean()},
                               {"logps/rejected", policy_rejected_logprobs.mean()}});
  return output;
}

LossOutput bradley_terry_loss(const at::Tensor& better_scores, const at::Tensor& worse_scores) {
  check_batch_vectors({{"better_scores", &better_scores}, {"worse_scores", &worse_scores}});
  const auto better = better_scores.to(torch::kFloat);
  const auto worse = worse_scores.to(torch::kFloat);
  LossOutput output;
  output.loss = -torch::log_sigmoid(better - worse).mean();
  output.metrics = to_metrics(
      {{"accuracy", fraction(better > worse)}, {"scores/better", better.mean()}, {"scores/worse", worse.mean()}});
  return output;
}

LossOutput cost_model_loss(const at::Tensor& safer_costs, const at::Tensor& unsafer_costs,
                           const at::Tensor& safer_is_safe, const at::Tensor& unsafer_is_safe) {
  check_batch_vectors({{"safer_costs", &safer_costs},
                       {"unsafer_costs", &unsafer_costs},
                       {"safer_is_safe", &safer_is_safe},
                       {"unsafer_is_safe", &unsafer_is_safe}});
  check(safer_is_safe.scalar_type() == torch::kBool && unsafer_is_safe.scalar_type() == torch::kBool,
        "safer_is_safe and unsafer_is_safe must be bool tensors");
  const auto safer = safer_costs.to(torch::kFloat);
  const auto unsafer = unsafer_costs.to(torch::kFloat);
  // s = +1 for unsafe, −1 for safe.
  const auto safer_sign = 1 - 2 * safer_is_safe.to(torch::kFloat);
  const auto unsafer_sign = 1 - 2 * unsafer_is_safe.to(torch::kFloat);

  LossOutput output;
  output.loss = (-torch::log_sigmoid(unsafer - safer) - torch::log_sigmoid(safer_sign * safer) -
                 torch::log_sigmoid(unsafer_sign * unsafer))
                    .mean();
  const auto sign_correct =
      torch::cat({(safer > 0) == safer_is_safe.logical_not(), (unsafer > 0) == unsafer_is_safe.logical_not()});
  output.metrics = to_metrics({{"accuracy", fraction(unsafer > safer)},
                               {"sign_accuracy", fraction(sign_correct)},
                               {"costs/safer", safer.mean()},
                               {"costs/unsafer", unsafer.mean()}});
  return output;
}

}  // namespace can
