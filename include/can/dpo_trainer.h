// Direct preference optimization (losses.h: sigmoid DPO with β and label
// smoothing, or IPO) on preference pairs, against reference log-probabilities
// computed once and cached in <output_dir>/reference_logprobs.safetensors
// (reference_logprobs.h), so no reference model is held during training.
#pragma once

#include <vector>

#include "can/batching.h"
#include "can/llama.h"
#include "can/losses.h"
#include "can/preference_data.h"
#include "can/training_loop.h"

namespace can {

class ChatTemplate;
class Tokenizer;

struct DpoTrainingOptions {
  DpoOptions loss;                                   // β, label smoothing, sigmoid or IPO
  PreferenceLabel label = PreferenceLabel::kBetter;  // which id names the chosen response
  // π_ref when training does not start from it (the primal-dual pipeline's later rounds
  // continue from the last round's policy); null: `model` as it is on entry. Only its
  // log-probs are read, before the first update.
  LlamaForCausalLM* reference = nullptr;
};

// `model` holds the weights training starts from on entry, also when resuming, and the
// trained policy on return. The reference log-probs are read or computed from
// dpo.reference, or without one from `model` on entry, before the loop loads a
// checkpoint. With LoRA adapters attached (lora.h; fresh
// ones, also when resuming) only they train: every other parameter is frozen,
// the reference log-probs come from the model with its adapters disabled,
// checkpoints hold the adapters (PEFT layout) and the optimizer state of them
// alone, and <output_dir>/model gets the merged weights. A pair whose better_probability is
// below 1 (a soft pseudo-preference; chosen by PreferenceLabel::kBetter) is a soft label
// of the sigmoid loss (losses.h). Log-probs are sequence sums in nats; IPO
// divides each log-ratio by its response's token count, as TRL does (losses.h). Stage "dpo"; metrics as TRL names
// them: loss, rewards/chosen, rewards/rejected, rewards/margins,
// rewards/accuracies, logps/chosen, logps/rejected, grad_norm, learning_rate; the
// same with "eval_" on `eval` when it is not empty.
TrainingSummary train_dpo(LlamaForCausalLM& model, const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                          const std::vector<PreferencePair>& train, const std::vector<PreferencePair>& eval,
                          const TrainingOptions& options, const DpoTrainingOptions& dpo);

// One micro-batch's DPO loss: the policy's log-probs (with gradients) of a pair
// batch (make_pair_batch, on the policy's device) against reference_logprobs [2B]
// (chosen rows, then rejected rows); chosen_probability [B] as dpo_loss takes it.
LossOutput dpo_pair_batch_loss(LlamaForCausalLM& policy, const SequenceBatch& pair_batch,
                               const at::Tensor& reference_logprobs, const DpoOptions& options,
                               const at::Tensor& chosen_probability = at::Tensor());

}  // namespace can
