#include "can/batch_inference.h"

#include <torch/torch.h>

#include <numeric>

#include "can/distributed.h"
#include "can/error.h"
#include "can/logprobs.h"
#include "can/model_weights.h"
#include "train/trainer_data.h"

namespace can {

namespace {

// Runs `forward` on batches of sequences of similar length (less padding), on
// `device`, the batches shared among a job's ranks, and scatters its [batch] results
// back into input order.
template <typename Forward>
std::vector<double> batched(const std::vector<TokenizedSequence>& sequences, const BatchInferenceOptions& options,
                            torch::Device device, Forward forward) {
  check(options.batch_size > 0, "batch inference: batch_size must be positive, got {}", options.batch_size);
  std::vector<size_t> order(sequences.size());
  std::iota(order.begin(), order.end(), 0);
  auto length = [&](size_t i) { return sequences[i].prompt_ids.size() + sequences[i].response_ids.size(); };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return length(a) < length(b); });
  const BatchingOptions batching{options.max_length, /*pad_id=*/0};
  torch::NoGradGuard no_grad;
  const auto batch_size = static_cast<size_t>(options.batch_size);
  const auto batches = static_cast<int64_t>((order.size() + batch_size - 1) / batch_size);
  const auto values = run_sharded(options.group, batches, [&](int64_t batch) {
    const size_t first = static_cast<size_t>(batch) * batch_size;
    const size_t count = std::min(batch_size, order.size() - first);
    std::vector<TokenizedSequence> chunk;
    for (size_t i = 0; i < count; ++i) chunk.push_back(sequences[order[first + i]]);
    const torch::Tensor result = forward(batch_to_device(make_batch(chunk, batching), device))
                                     .to(torch::kCPU, torch::kFloat64)
                                     .contiguous();  // [count]
    return std::vector<double>(result.data_ptr<double>(), result.data_ptr<double>() + count);
  });
  std::vector<double> results(sequences.size());
  for (int64_t batch = 0; batch < batches; ++batch) {
    for (size_t i = 0; i < values[batch].size(); ++i) {
      results[order[static_cast<size_t>(batch) * batch_size + i]] = values[batch][i];
    }
  }
  return results;
}

}  // namespace

at::Tensor frozen_sequence_logprobs(LlamaForCausalLM& model, const SequenceBatch& batch) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const auto logprobs = sequence_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_mask);
  model->train(was_training);
  return logprobs;
}

std::vector<double> score_sequences(LlamaForScore& model, const std::vector<TokenizedSequence>& sequences,
                                    const BatchInferenceOptions& options) {
  return batched(sequences, options, module_device(*model), [&](const SequenceBatch& batch) {
    return model(batch.input_ids, batch.attention_mask).select(1, 0);  // [B]
  });
}

std::vector<double> response_logprobs(LlamaForCausalLM& model, const std::vector<TokenizedSequence>& sequences,
                                      const BatchInferenceOptions& options) {
  return batched(sequences, options, module_device(*model),
                 [&](const SequenceBatch& batch) { return frozen_sequence_logprobs(model, batch); });
}

}  // namespace can
