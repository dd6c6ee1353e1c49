// Batched inference equals one sequence at a time, in input order.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "can/batch_inference.h"
#include "can/logprobs.h"
#include "tiny_model.h"

namespace {

can::LlamaConfig tiny_config() {
  can::LlamaConfig config = can::testing::tiny_llama_config(/*vocab_size=*/40);
  config.intermediate_size = 48;
  return config;
}

const std::vector<can::TokenizedSequence>& sequences() {
  static const std::vector<can::TokenizedSequence> all = {{{1, 5, 6}, {7, 8, 2}}, {{1, 9}, {3, 2}}, {{1, 4, 4, 4, 4, 4}, {10, 11, 12, 13, 2}}, {{1}, {2}},
          {{1, 20, 21}, {22, 2}}};
  return all;
}

TEST(BatchInference, LogprobsEqualOneSequenceAtATime) {
  torch::manual_seed(1);
  can::LlamaForCausalLM model(tiny_config());
  model->eval();
  const auto batched = can::response_logprobs(model, sequences(), {/*batch_size=*/2, /*max_length=*/64});
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < sequences().size(); ++i) {
    const auto& sequence = sequences()[i];
    std::vector<int64_t> ids = sequence.prompt_ids;
    ids.insert(ids.end(), sequence.response_ids.begin(), sequence.response_ids.end());
    const torch::Tensor input = torch::tensor(ids).unsqueeze(0);
    const torch::Tensor logprobs = model(input, torch::ones_like(input), nullptr)[0].log_softmax(-1);
    double expected = 0;
    for (size_t t = sequence.prompt_ids.size(); t < ids.size(); ++t) expected += logprobs[t - 1][ids[t]].item<double>();
    EXPECT_NEAR(batched[i], expected, 1e-4) << "sequence " << i;
  }
}

TEST(BatchInference, ScoresEqualOneSequenceAtATime) {
  torch::manual_seed(2);
  can::LlamaForScore model(tiny_config());
  model->eval();
  const auto batched = can::score_sequences(model, sequences(), {/*batch_size=*/3, /*max_length=*/64});
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < sequences().size(); ++i) {
    std::vector<int64_t> ids = sequences()[i].prompt_ids;
    ids.insert(ids.end(), sequences()[i].response_ids.begin(), sequences()[i].response_ids.end());
    const torch::Tensor input = torch::tensor(ids).unsqueeze(0);
    EXPECT_NEAR(batched[i], model(input, torch::ones_like(input))[0][0].item<double>(), 1e-5) << "sequence " << i;
  }
}

}  // namespace
