// bf16 compute with float32 master weights (set_compute_dtype): logits close to
// float32's, float32 logits and gradients, and no change at all by default.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>

#include "can/llama.h"
#include "can/logprobs.h"
#include "can/lora.h"
#include "can/losses.h"
#include "can/optimizer.h"
#include "can/score_model.h"
#include "tiny_model.h"

namespace {

can::LlamaConfig tiny_config() {
  can::LlamaConfig config = can::testing::tiny_llama_config(/*vocab_size=*/64);
  config.hidden_size = 64;
  config.intermediate_size = 96;
  config.max_position_embeddings = 64;
  return config;
}

can::LlamaForCausalLM tiny_model() {
  torch::manual_seed(7);
  can::LlamaForCausalLM model(tiny_config());
  {
    // Larger weights than the 0.02 initialisation, so that the logits spread
    // over a few units, as a trained model's do, and bf16 rounding shows.
    torch::NoGradGuard no_grad;
    for (auto& parameter : model->parameters()) {
      if (parameter.dim() == 2) parameter.mul_(10.0);
    }
  }
  return model;
}

struct Batch {
  torch::Tensor ids, mask;  // [2, 12]; the second row left-padded by 4
};

Batch batch() {
  torch::manual_seed(3);
  Batch b{torch::randint(0, 64, {2, 12}), torch::ones({2, 12}, torch::kInt64)};
  b.mask[1].slice(0, 0, 4).zero_();
  return b;
}

TEST(ComputeDtype, Bfloat16LogitsAreCloseToFloat32AndReturnedInFloat32) {
  auto model = tiny_model();
  model->eval();
  const Batch b = batch();
  torch::NoGradGuard no_grad;
  const torch::Tensor reference = model(b.ids, b.mask);  // [2, 12, V] float32
  can::set_compute_dtype(*model, torch::kBFloat16);
  const torch::Tensor bf16 = model(b.ids, b.mask);
  EXPECT_EQ(bf16.scalar_type(), torch::kFloat32);
  for (const auto& parameter : model->parameters()) EXPECT_EQ(parameter.scalar_type(), torch::kFloat32);
  // bf16 keeps 8 significant bits: each rounding errs by up to u = 2^-8 relative.
  // Along the path to a logit about ten products (q, k, v, o, gate, up, down in
  // two layers, then the head) each round an input, a weight and an output; the
  // errors partly cancel. 16·u (6%) of the largest logit bounds what remains with
  // room (seen here: about 5·u), while a float32 product computed by mistake
  // would give 0 and a bf16 residual stream or softmax clearly more.
  const double scale = reference.abs().max().item<double>();
  const double error = (bf16 - reference).abs().max().item<double>();
  const double unit_roundoff = std::ldexp(1.0, -8);
  EXPECT_GT(scale, 2.0);
  EXPECT_GT(error, 0.0);  // the products did run in bf16
  EXPECT_LE(error, 16 * unit_roundoff * scale) << "scale " << scale;
  // The most likely next token is the same almost everywhere.
  const double same_argmax = (bf16.argmax(-1) == reference.argmax(-1)).to(torch::kDouble).mean().item<double>();
  EXPECT_GE(same_argmax, 0.9);
  std::cout << "bf16 vs float32 logits: max error " << error << " (" << error / (unit_roundoff * scale)
            << " u of the largest logit " << scale << "), same argmax " << same_argmax << "\n";
  // Undefined: back to the parameters' dtype, bit for bit.
  can::set_compute_dtype(*model, c10::ScalarType::Undefined);
  EXPECT_TRUE(torch::equal(model(b.ids, b.mask), reference));
}

TEST(ComputeDtype, GradientsLandInTheFloat32MasterWeights) {
  auto model = tiny_model();
  const Batch b = batch();
  const auto loss_gradients = [&] {
    model->zero_grad();
    const torch::Tensor logits = model(b.ids, b.mask);
    torch::nn::functional::cross_entropy(logits.slice(1, 0, 11).reshape({-1, 64}), b.ids.slice(1, 1).reshape({-1}))
        .backward();
    std::vector<torch::Tensor> gradients;
    for (const auto& parameter : model->parameters()) gradients.push_back(parameter.grad().clone());
    return gradients;
  };
  const auto reference = loss_gradients();
  can::set_compute_dtype(*model, torch::kBFloat16);
  const auto bf16 = loss_gradients();
  ASSERT_EQ(bf16.size(), reference.size());
  for (size_t i = 0; i < bf16.size(); ++i) {
    ASSERT_TRUE(bf16[i].defined());
    EXPECT_EQ(bf16[i].scalar_type(), torch::kFloat32);
    // The same direction, up to bf16 rounding (cosine similarity).
    const double cosine = torch::cosine_similarity(bf16[i].flatten(), reference[i].flatten(), 0).item<double>();
    EXPECT_GT(cosine, 0.99) << "parameter " << i;
  }
}

TEST(ComputeDtype, ADpoStepWithLoraTrainsTheFloat32Adapters) {
  auto model = tiny_model();
  can::LoraOptions lora;
  lora.rank = 4;
  can::attach_lora(*model, lora);
  can::freeze_all_but_lora(*model);
  can::set_compute_dtype(*model, torch::kBFloat16);
  const Batch b = batch();  // rows: chosen, rejected
  const torch::Tensor response_mask = torch::zeros({2, 12}, torch::kBool);
  response_mask.slice(1, 8).fill_(true);
  torch::Tensor reference;
  {
    const can::LoraDisabled disabled(*model);
    torch::NoGradGuard no_grad;
    reference = can::sequence_logprobs(model(b.ids, b.mask), b.ids, response_mask);
  }
  auto optimizer = can::make_adamw(model->named_parameters(), {});
  can::set_learning_rate(*optimizer, 1e-2);
  std::vector<double> losses;
  for (int step = 0; step < 3; ++step) {
    optimizer->zero_grad();
    const torch::Tensor policy = can::sequence_logprobs(model(b.ids, b.mask), b.ids, response_mask);
    const auto tokens = response_mask.sum(1);  // [2]
    const auto output = can::dpo_loss(policy.slice(0, 0, 1), policy.slice(0, 1, 2), reference.slice(0, 0, 1),
                                      reference.slice(0, 1, 2), tokens.slice(0, 0, 1), tokens.slice(0, 1, 2), {});
    output.loss.backward();
    can::adamw_step(*optimizer);
    losses.push_back(output.loss.item<double>());
  }
  EXPECT_NEAR(losses.front(), std::log(2.0), 1e-6);  // fresh adapters: the policy is the reference
  EXPECT_LT(losses.back(), losses.front());
  for (const auto& parameter : model->named_parameters()) {
    EXPECT_EQ(parameter.value().scalar_type(), torch::kFloat32) << parameter.key();
  }
}

TEST(ComputeDtype, ScoreModelsComputeInBfloat16Too) {
  torch::manual_seed(9);
  can::LlamaForScore model(tiny_config());
  model->eval();
  const Batch b = batch();
  torch::NoGradGuard no_grad;
  const torch::Tensor reference = model(b.ids, b.mask);
  can::set_compute_dtype(*model, torch::kBFloat16);
  const torch::Tensor bf16 = model(b.ids, b.mask);
  EXPECT_EQ(bf16.scalar_type(), torch::kFloat32);
  EXPECT_GT((bf16 - reference).abs().max().item<double>(), 0.0);
  EXPECT_LE((bf16 - reference).abs().max().item<double>(), 0.05 * reference.abs().max().item<double>() + 1e-3);
}

}  // namespace
