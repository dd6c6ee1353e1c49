#include "can/dpo_trainer.h"

#include <torch/torch.h>

#include "can/logprobs.h"
#include "can/lora.h"
#include "can/model_weights.h"
#include "can/reference_logprobs.h"
#include "can/tokenizer.h"
#include "train/trainer_data.h"

namespace can {

LossOutput dpo_pair_batch_loss(LlamaForCausalLM& policy, const SequenceBatch& pair_batch,
                               const at::Tensor& reference_logprobs, const DpoOptions& options,
                               const at::Tensor& chosen_probability) {
  const auto policy_logprobs =
      sequence_logprobs(policy, pair_batch.input_ids, pair_batch.attention_mask, pair_batch.response_mask);  // [2B]
  const auto [policy_chosen, policy_rejected] = split_chosen_rejected(policy_logprobs);
  const auto [reference_chosen, reference_rejected] = split_chosen_rejected(reference_logprobs);
  const auto [chosen_tokens, rejected_tokens] = split_chosen_rejected(pair_batch.response_mask.sum(1));  // [B] each
  return dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, chosen_tokens, rejected_tokens,
                  options, chosen_probability);
}

TrainingSummary train_dpo(LlamaForCausalLM& model, const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                          const std::vector<PreferencePair>& train, const std::vector<PreferencePair>& eval,
                          const TrainingOptions& options, const DpoTrainingOptions& dpo) {
  check_tokenizer_fits(tokenizer, model->config, "dpo");
  check(!options.output_dir.empty(), "dpo: output_dir is not set");
  check(!train.empty(), "dpo: no training pairs");
  const TokenizedPairs train_pairs = tokenize_pairs(tokenizer, chat_template, train, dpo.label);
  const TokenizedPairs eval_pairs = tokenize_pairs(tokenizer, chat_template, eval, dpo.label);
  const BatchingOptions batching = batching_options(tokenizer, options.max_length);
  const c10::Device device = module_device(*model);

  // Train pairs then eval pairs, in one cache file.
  auto all_chosen = train_pairs.chosen;
  all_chosen.insert(all_chosen.end(), eval_pairs.chosen.begin(), eval_pairs.chosen.end());
  auto all_rejected = train_pairs.rejected;
  all_rejected.insert(all_rejected.end(), eval_pairs.rejected.begin(), eval_pairs.rejected.end());
  const ReferenceLogprobs reference =
      cached_reference_logprobs(dpo.reference != nullptr ? *dpo.reference : model, all_chosen, all_rejected, batching,
                                options.micro_batch_size, options.output_dir / "reference_logprobs.safetensors",
                                options.process_group);

  // offset: where the set's pairs start in the reference tensors.
  const auto loss_on = [&](const TokenizedPairs& pairs, int64_t offset, const std::vector<int64_t>& indices) {
    const SequenceBatch batch =
        make_pair_batch(select(pairs.chosen, indices), select(pairs.rejected, indices), batching);
    auto rows = torch::tensor(indices, torch::kLong) + offset;
    const auto reference_logprobs =
        torch::cat({reference.chosen.index_select(0, rows), reference.rejected.index_select(0, rows)}).to(device);
    // Soft labels only where some pair has one, so certain labels take the plain loss.
    at::Tensor probability;
    if (pairs.has_soft_labels()) {
      std::vector<double> selected;
      for (const int64_t index : indices) selected.push_back(pairs.chosen_probability[static_cast<size_t>(index)]);
      probability = torch::tensor(selected, torch::kDouble).to(device);  // [B]
    }
    MicroBatchLoss result;
    result.output = dpo_pair_batch_loss(model, batch_to_device(batch, device), reference_logprobs, dpo.loss, probability);
    result.tokens = count_tokens(batch);
    return result;
  };

  TrainingTask task;
  task.stage = "dpo";
  task.model = model.ptr();
  task.num_examples = train_pairs.size();
  task.compute_loss = [&](const std::vector<int64_t>& indices) { return loss_on(train_pairs, 0, indices); };
  if (eval_pairs.size() > 0) {
    task.evaluate = [&] {
      return evaluate_in_batches(eval_pairs.size(), options.micro_batch_size, [&](const std::vector<int64_t>& indices) {
        return loss_on(eval_pairs, train_pairs.size(), indices).output;
      }, options.process_group);
    };
  }
  task.save_model = [&](const std::filesystem::path& directory) { save_causal_lm(model, directory.string()); };
  if (has_lora(*model)) {
    freeze_all_but_lora(*model);
    task.save_trained_weights = [&](const std::filesystem::path& directory) {
      save_lora_adapters(*model, directory, "");
    };
    task.load_trained_weights = [&](const std::filesystem::path& directory) { load_lora_adapters(*model, directory); };
  }
  model->model->activation_checkpointing = options.activation_checkpointing;
  return run_training(task, options);
}

}  // namespace can
