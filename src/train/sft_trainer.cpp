#include "can/sft_trainer.h"

#include <torch/torch.h>

#include "can/batching.h"
#include "can/logprobs.h"
#include "can/model_weights.h"
#include "can/tokenizer.h"
#include "train/trainer_data.h"

namespace can {

namespace {

std::vector<TokenizedSequence> tokenize_examples(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                                 const std::vector<PromptResponse>& examples) {
  std::vector<TokenizedSequence> sequences;
  sequences.reserve(examples.size());
  for (const auto& example : examples) {
    sequences.push_back(tokenize_sequence(tokenizer, chat_template, example.prompt, example.response));
  }
  return sequences;
}

}  // namespace

TrainingSummary train_sft(LlamaForCausalLM& model, const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                          const std::vector<PromptResponse>& train, const std::vector<PromptResponse>& eval,
                          const TrainingOptions& options) {
  check_tokenizer_fits(tokenizer, model->config, "sft");
  const auto train_sequences = tokenize_examples(tokenizer, chat_template, train);
  const auto eval_sequences = tokenize_examples(tokenizer, chat_template, eval);
  const BatchingOptions batching = batching_options(tokenizer, options.max_length);
  const c10::Device device = module_device(*model);

  // [] mean response-token NLL of the sequences at `indices`.
  const auto loss_on = [&](const std::vector<TokenizedSequence>& sequences, const std::vector<int64_t>& indices) {
    const SequenceBatch batch = make_batch(select(sequences, indices), batching);
    const SequenceBatch on_device = batch_to_device(batch, device);
    MicroBatchLoss result;
    result.output.loss =
        response_nll(model, on_device.input_ids, on_device.attention_mask, on_device.response_mask);
    result.tokens = count_tokens(batch);
    return result;
  };

  TrainingTask task;
  task.stage = "sft";
  task.model = model.ptr();
  task.num_examples = static_cast<int64_t>(train_sequences.size());
  task.compute_loss = [&](const std::vector<int64_t>& indices) { return loss_on(train_sequences, indices); };
  // The loss is a mean over response tokens: the predicted ones (response_nll's denominator).
  task.loss_items = [&](const std::vector<int64_t>& indices) {
    const at::Tensor mask = make_batch(select(train_sequences, indices), batching).response_mask;  // [B, T]
    return mask.narrow(1, 1, mask.size(1) - 1).sum().item<int64_t>();
  };
  if (!eval_sequences.empty()) {
    task.evaluate = [&] {
      return evaluate_in_batches(
          static_cast<int64_t>(eval_sequences.size()), options.micro_batch_size,
          [&](const std::vector<int64_t>& indices) { return loss_on(eval_sequences, indices).output; },
          options.process_group);
    };
  }
  task.save_model = [&](const std::filesystem::path& directory) { save_causal_lm(model, directory.string()); };
  model->model->activation_checkpointing = options.activation_checkpointing;
  return run_training(task, options);
}

}  // namespace can
