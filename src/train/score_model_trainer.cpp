#include "can/score_model_trainer.h"

#include <torch/torch.h>

#include "can/batching.h"
#include "can/losses.h"
#include "can/model_weights.h"
#include "can/tokenizer.h"
#include "train/trainer_data.h"

namespace can {

namespace {

enum class ScoreModelKind { kReward, kCost };

TrainingSummary train_score_model(ScoreModelKind kind, LlamaForScore& model, const Tokenizer& tokenizer,
                                  const ChatTemplate& chat_template, const std::vector<PreferencePair>& train,
                                  const std::vector<PreferencePair>& eval, const TrainingOptions& options) {
  const std::string stage = kind == ScoreModelKind::kReward ? "reward_model" : "cost_model";
  check(model->config.score_dim == 1, "{}: the score model must have score_dim 1, got {}", stage,
        model->config.score_dim);
  check_tokenizer_fits(tokenizer, model->config, stage);
  // Chosen = better (reward) or safer (cost).
  const PreferenceLabel label = kind == ScoreModelKind::kReward ? PreferenceLabel::kBetter : PreferenceLabel::kSafer;
  const TokenizedPairs train_pairs = tokenize_pairs(tokenizer, chat_template, train, label);
  const TokenizedPairs eval_pairs = tokenize_pairs(tokenizer, chat_template, eval, label);
  const BatchingOptions batching = batching_options(tokenizer, options.max_length);
  const c10::Device device = module_device(*model);

  const auto loss_on = [&](const TokenizedPairs& pairs, const std::vector<int64_t>& indices) {
    const SequenceBatch batch =
        make_pair_batch(select(pairs.chosen, indices), select(pairs.rejected, indices), batching);
    const SequenceBatch on_device = batch_to_device(batch, device);
    const auto scores = model->forward(on_device.input_ids, on_device.attention_mask).squeeze(-1);  // [2B]
    const auto [chosen_scores, rejected_scores] = split_chosen_rejected(scores);
    MicroBatchLoss result;
    if (kind == ScoreModelKind::kReward) {
      result.output = bradley_terry_loss(chosen_scores, rejected_scores);
    } else {
      const auto flags = [&](const std::vector<bool>& all) {
        std::vector<uint8_t> picked;
        for (const int64_t index : indices) picked.push_back(all.at(index) ? 1 : 0);
        return torch::tensor(picked, torch::kUInt8).to(torch::kBool).to(device);
      };
      result.output =
          cost_model_loss(chosen_scores, rejected_scores, flags(pairs.chosen_is_safe), flags(pairs.rejected_is_safe));
    }
    result.tokens = count_tokens(batch);
    return result;
  };

  TrainingTask task;
  task.stage = stage;
  task.model = model.ptr();
  task.num_examples = train_pairs.size();
  task.compute_loss = [&](const std::vector<int64_t>& indices) { return loss_on(train_pairs, indices); };
  if (eval_pairs.size() > 0) {
    task.evaluate = [&] {
      return evaluate_in_batches(eval_pairs.size(), options.micro_batch_size, [&](const std::vector<int64_t>& indices) {
        return loss_on(eval_pairs, indices).output;
      }, options.process_group);
    };
  }
  task.save_model = [&](const std::filesystem::path& directory) { save_score_model(model, directory.string()); };
  model->model->activation_checkpointing = options.activation_checkpointing;
  return run_training(task, options);
}

}  // namespace

TrainingSummary train_reward_model(LlamaForScore& model, const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                   const std::vector<PreferencePair>& train, const std::vector<PreferencePair>& eval,
                                   const TrainingOptions& options) {
  return train_score_model(ScoreModelKind::kReward, model, tokenizer, chat_template, train, eval, options);
}

TrainingSummary train_cost_model(LlamaForScore& model, const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                 const std::vector<PreferencePair>& train, const std::vector<PreferencePair>& eval,
                                 const TrainingOptions& options) {
  return train_score_model(ScoreModelKind::kCost, model, tokenizer, chat_template, train, eval, options);
}

}  // namespace can
