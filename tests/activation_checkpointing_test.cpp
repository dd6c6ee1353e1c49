// Activation checkpointing of the decoder layers: the same gradients as the
// plain backward, with and without LoRA (dropout on, frozen embeddings).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "can/llama.h"
#include "can/lora.h"
#include "tiny_model.h"

namespace {

// Names of every autograd node behind `tensor`.
std::set<std::string> graph_node_names(const torch::Tensor& tensor) {
  std::set<std::string> names;
  std::vector<torch::autograd::Node*> pending = {tensor.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  while (!pending.empty()) {
    torch::autograd::Node* node = pending.back();
    pending.pop_back();
    if (node == nullptr || !seen.insert(node).second) continue;
    names.insert(node->name());
    for (const auto& edge : node->next_edges()) pending.push_back(edge.function.get());
  }
  return names;
}

bool uses_checkpointing(const torch::Tensor& tensor) {
  for (const auto& name : graph_node_names(tensor)) {
    if (name.find("CheckpointedDecoderLayer") != std::string::npos) return true;
  }
  return false;
}

// Gradients of every parameter that trains, by name, after one backward of a
// next-token loss on a padded batch (row 2 padded on `left`, or on the right: the
// mask path and the unmasked causal one); the generator is reseeded first, so that
// dropout draws the same masks in both runs.
std::map<std::string, torch::Tensor> gradients(can::LlamaForCausalLM& model, bool checkpointing, bool left) {
  model->model->activation_checkpointing = checkpointing;
  model->train();
  model->zero_grad();
  torch::manual_seed(11);
  const torch::Tensor ids = torch::randint(0, 64, {3, 10});
  torch::Tensor mask = torch::ones({3, 10}, torch::kInt64);
  if (left) {
    mask[2].slice(0, 0, 4).zero_();
  } else {
    mask[2].slice(0, 6).zero_();
  }
  const torch::Tensor logits = model(ids, mask);  // [3, 10, V]
  EXPECT_EQ(uses_checkpointing(logits), checkpointing);
  torch::nn::functional::cross_entropy(logits.slice(1, 0, 9).reshape({-1, 64}), ids.slice(1, 1).reshape({-1}))
      .backward();
  std::map<std::string, torch::Tensor> result;
  for (const auto& parameter : model->named_parameters()) {
    if (parameter.value().requires_grad()) result[parameter.key()] = parameter.value().grad().clone();
  }
  return result;
}

void expect_equal_gradients(const std::map<std::string, torch::Tensor>& expected,
                            const std::map<std::string, torch::Tensor>& actual) {
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& [name, gradient] : expected) {
    ASSERT_TRUE(actual.at(name).defined()) << name;
    EXPECT_GT(gradient.abs().max().item<double>(), 0.0) << name;
    EXPECT_LE((actual.at(name) - gradient).abs().max().item<double>(), 1e-6) << name;
  }
}

TEST(ActivationCheckpointing, GradientsEqualThePlainBackward) {
  torch::manual_seed(5);
  can::LlamaForCausalLM model(can::testing::tiny_llama_config(64, /*num_hidden_layers=*/3));
  for (const bool left : {true, false}) {
    const auto plain = gradients(model, false, left);
    const auto checkpointed = gradients(model, true, left);
    EXPECT_EQ(plain.size(), model->named_parameters().size());
    expect_equal_gradients(plain, checkpointed);
  }
}

TEST(ActivationCheckpointing, GradientsEqualThePlainBackwardWithLoraDropout) {
  torch::manual_seed(5);
  can::LlamaForCausalLM model(can::testing::tiny_llama_config(64, /*num_hidden_layers=*/3));
  can::LoraOptions options;
  options.rank = 4;
  options.dropout = 0.3;
  options.target_modules = can::lora_target_names();
  can::attach_lora(*model, options);
  can::freeze_all_but_lora(*model);  // the first layer's input then needs no gradient
  {
    torch::NoGradGuard no_grad;  // B ≠ 0, so that A gets a gradient too
    for (auto& parameter : model->named_parameters()) {
      if (parameter.key().find("lora_B") != std::string::npos) parameter.value().normal_(0.0, 0.1);
    }
  }
  for (const bool left : {true, false}) {
    const auto plain = gradients(model, false, left);
    const auto checkpointed = gradients(model, true, left);
    EXPECT_EQ(plain.size(), 3u * 7u * 2u);  // layers × targets × (A, B)
    expect_equal_gradients(plain, checkpointed);
  }
}

TEST(ActivationCheckpointing, IsOffInEvaluationAndWithoutGradients) {
  torch::manual_seed(5);
  can::LlamaForCausalLM model(can::testing::tiny_llama_config(64, /*num_hidden_layers=*/3));
  model->model->activation_checkpointing = true;
  const torch::Tensor ids = torch::randint(0, 64, {1, 6});
  model->eval();
  EXPECT_FALSE(uses_checkpointing(model(ids, torch::ones_like(ids))));
  model->train();
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(model(ids, torch::ones_like(ids)).requires_grad());
}

}  // namespace
