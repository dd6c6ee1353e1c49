#include "can/optimizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>

#include "can/error.h"
#include "can/lr_schedule.h"

namespace {

namespace fs = std::filesystem;

struct RmsNormImpl : torch::nn::Module {
  RmsNormImpl() { weight = register_parameter("weight", torch::ones({4})); }
  torch::Tensor forward(const torch::Tensor& x) { return x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6) * weight; }
  torch::Tensor weight;
};
TORCH_MODULE(RmsNorm);

// A miniature of the parameter kinds a Llama has, under Hugging Face-style names.
struct TinyModelImpl : torch::nn::Module {
  TinyModelImpl() {
    embed = register_module("embed_tokens", torch::nn::Embedding(10, 4));
    norm = register_module("input_layernorm", RmsNorm());
    proj = register_module("proj", torch::nn::Linear(4, 4));
    head = register_module("score_head", torch::nn::Linear(4, 1));
  }
  torch::Tensor forward(const torch::Tensor& ids) {
    return head(torch::tanh(proj(norm(embed(ids))))).squeeze(-1).sum(-1);
  }
  torch::nn::Embedding embed{nullptr};
  RmsNorm norm{nullptr};
  torch::nn::Linear proj{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(TinyModel);

bool holds(const std::vector<at::Tensor>& tensors, const at::Tensor& tensor) {
  return std::any_of(tensors.begin(), tensors.end(), [&](const at::Tensor& t) { return t.is_same(tensor); });
}

fs::path temporary_path(const std::string& name) {
  return fs::temp_directory_path() / fmt::format("can_optimizer_test_{}_{}", getpid(), name);
}

TEST(WeightDecay, ExemptsNormsAndBiasesButDecaysMatricesAndEmbeddings) {
  EXPECT_TRUE(can::exempt_from_weight_decay("model.layers.0.input_layernorm.weight", torch::ones({8})));
  EXPECT_TRUE(can::exempt_from_weight_decay("model.norm.weight", torch::ones({8})));
  EXPECT_TRUE(can::exempt_from_weight_decay("score_head.bias", torch::ones({1})));
  EXPECT_TRUE(can::exempt_from_weight_decay("model.layers.0.post_attention_layernorm.weight", torch::ones({8, 1})));
  EXPECT_FALSE(can::exempt_from_weight_decay("model.embed_tokens.weight", torch::ones({10, 8})));
  EXPECT_FALSE(can::exempt_from_weight_decay("model.layers.0.self_attn.q_proj.weight", torch::ones({8, 8})));
  EXPECT_FALSE(can::exempt_from_weight_decay("lm_head.weight", torch::ones({10, 8})));
}

TEST(MakeAdamW, PutsDecayedAndExemptParametersInTheirGroupsAndSkipsFrozenOnes) {
  TinyModel model;
  model->embed->weight.requires_grad_(false);  // frozen, as base weights under LoRA
  const auto optimizer = can::make_adamw(model->named_parameters(), {/*weight_decay=*/0.1});
  ASSERT_EQ(optimizer->param_groups().size(), 2u);
  const auto& decayed = optimizer->param_groups()[0];
  const auto& exempt = optimizer->param_groups()[1];
  EXPECT_EQ(decayed.params().size(), 2u);
  EXPECT_TRUE(holds(decayed.params(), model->proj->weight));
  EXPECT_TRUE(holds(decayed.params(), model->head->weight));
  EXPECT_EQ(exempt.params().size(), 3u);
  EXPECT_TRUE(holds(exempt.params(), model->proj->bias));
  EXPECT_TRUE(holds(exempt.params(), model->norm->weight));
  EXPECT_TRUE(holds(exempt.params(), model->head->bias));
  EXPECT_FALSE(holds(can::optimizer_parameters(*optimizer), model->embed->weight));
  EXPECT_DOUBLE_EQ(static_cast<const torch::optim::AdamWOptions&>(decayed.options()).weight_decay(), 0.1);
  EXPECT_DOUBLE_EQ(static_cast<const torch::optim::AdamWOptions&>(exempt.options()).weight_decay(), 0.0);
}

TEST(MakeAdamW, DecaysWeightsButNotBiasesOrNorms) {
  TinyModel model;
  auto optimizer = can::make_adamw(model->named_parameters(), {/*weight_decay=*/0.5});
  can::set_learning_rate(*optimizer, 0.1);
  for (const auto& group : optimizer->param_groups()) EXPECT_DOUBLE_EQ(group.options().get_lr(), 0.1);
  const auto weight_before = model->proj->weight.detach().clone();
  const auto bias_before = model->proj->bias.detach().clone();
  const auto norm_before = model->norm->weight.detach().clone();
  // Zero gradients: Adam's update is 0/(0 + eps) = 0, so only decay can move a parameter.
  for (auto& parameter : model->parameters()) parameter.mutable_grad() = torch::zeros_like(parameter);
  optimizer->step();
  EXPECT_TRUE(torch::allclose(model->proj->weight, weight_before * (1 - 0.1 * 0.5)));  // decayed by lr·wd
  EXPECT_TRUE(torch::equal(model->proj->bias, bias_before));
  EXPECT_TRUE(torch::equal(model->norm->weight, norm_before));
}

// The fused step against LibTorch's own AdamW::step on two identical models: the
// same parameters and moments after three updates with decay, and the state
// it leaves is the one AdamW::step continues from.
TEST(AdamWStep, MatchesLibTorchsAdamWStepAndSharesItsState) {
  torch::manual_seed(3);
  TinyModel fused_model;
  TinyModel reference_model;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < fused_model->parameters().size(); ++i) {
    reference_model->parameters()[i].copy_(fused_model->parameters()[i]);
  }
  std::vector<at::Tensor> initial;
  for (const auto& parameter : fused_model->parameters()) initial.push_back(parameter.clone());
  auto fused = can::make_adamw(fused_model->named_parameters(), {/*weight_decay=*/0.1});
  auto reference = can::make_adamw(reference_model->named_parameters(), {/*weight_decay=*/0.1});
  const auto ids = torch::tensor({{1, 4, 7}, {2, 2, 9}}, torch::kLong);
  const auto update = [&](TinyModel& model, torch::optim::AdamW& optimizer, bool use_fused, double lr) {
    torch::AutoGradMode grad_mode(true);
    optimizer.zero_grad();
    model(ids).pow(2).sum().backward();
    can::set_learning_rate(optimizer, lr);
    if (use_fused) {
      can::adamw_step(optimizer);
    } else {
      optimizer.step();
    }
  };
  for (const double lr : {0.1, 0.05, 0.02}) {
    update(fused_model, *fused, true, lr);
    update(reference_model, *reference, false, lr);
  }
  // The next update by LibTorch's step continues from the fused step's state.
  update(fused_model, *fused, false, 0.01);
  update(reference_model, *reference, false, 0.01);
  const auto fused_parameters = fused_model->parameters();
  const auto reference_parameters = reference_model->parameters();
  for (size_t i = 0; i < fused_parameters.size(); ++i) {
    EXPECT_TRUE(torch::allclose(fused_parameters[i], reference_parameters[i], 1e-5, 1e-6))
        << "parameter " << i << ": " << fused_parameters[i] << " vs " << reference_parameters[i];
    // Every parameter moved: Adam's first updates are about lr each (0.1 + 0.05 + 0.02 + 0.01 in all).
    EXPECT_GT((fused_parameters[i] - initial[i]).abs().max().item<double>(), 0.05) << "parameter " << i;
  }
}

TEST(MakeAdamW, AllowsAnEmptyGroupAndRejectsNoTrainableParameters) {
  auto only_matrix = torch::randn({3, 3}).requires_grad_(true);
  torch::OrderedDict<std::string, at::Tensor> named;
  named.insert("lora_A.weight", only_matrix);
  auto optimizer = can::make_adamw(named, {});
  EXPECT_TRUE(optimizer->param_groups()[1].params().empty());
  can::set_learning_rate(*optimizer, 0.01);
  only_matrix.mutable_grad() = torch::ones({3, 3});
  optimizer->step();

  torch::OrderedDict<std::string, at::Tensor> frozen;
  frozen.insert("weight", torch::randn({3, 3}));
  EXPECT_THROW(can::make_adamw(frozen, {}), can::Error);
}

TEST(ClipGradientNorm, ScalesToMaxNormAndReturnsTheNormBefore) {
  auto a = torch::zeros({2}).requires_grad_(true);
  auto b = torch::zeros({1}).requires_grad_(true);
  auto no_gradient = torch::zeros({1}).requires_grad_(true);
  a.mutable_grad() = torch::tensor({3.0f, 4.0f});  // norm 5
  b.mutable_grad() = torch::tensor({12.0f});       // norm 12: global norm 13
  EXPECT_NEAR(can::clip_gradient_norm({a, b, no_gradient}, 6.5), 13.0, 1e-5);
  EXPECT_TRUE(torch::allclose(a.grad(), torch::tensor({1.5f, 2.0f}), 1e-5));
  EXPECT_TRUE(torch::allclose(b.grad(), torch::tensor({6.0f}), 1e-5));

  EXPECT_NEAR(can::clip_gradient_norm({a, b}, 100.0), 6.5, 1e-5);  // below the limit: untouched
  EXPECT_TRUE(torch::allclose(a.grad(), torch::tensor({1.5f, 2.0f}), 1e-5));

  b.mutable_grad() = torch::tensor({INFINITY});
  EXPECT_TRUE(std::isinf(can::clip_gradient_norm({a, b}, 1.0)));
  EXPECT_TRUE(torch::allclose(a.grad(), torch::tensor({1.5f, 2.0f}), 1e-5));  // left for the caller to skip
  EXPECT_THROW(can::clip_gradient_norm({a}, 0.0), can::Error);
}

TEST(LearningRateSchedule, WarmsUpLinearlyThenFollowsTheCosineToTheFloor) {
  const can::LearningRateSchedule schedule{/*peak_lr=*/1e-3, /*warmup_steps=*/10, /*total_steps=*/110,
                                           can::LearningRateDecay::kCosine, /*min_lr=*/1e-4};
  EXPECT_DOUBLE_EQ(schedule.at(0), 0.0);
  EXPECT_DOUBLE_EQ(schedule.at(5), 5e-4);                     // 1e-3 · 5/10
  EXPECT_DOUBLE_EQ(schedule.at(10), 1e-3);                    // peak: p = 0
  EXPECT_NEAR(schedule.at(35), 8.681980515339464e-4, 1e-15);  // p = 1/4: 1e-4 + 9e-4 · ½(1 + cos(π/4))
  EXPECT_NEAR(schedule.at(60), 5.5e-4, 1e-15);                // p = 1/2: halfway between peak and floor
  EXPECT_NEAR(schedule.at(110), 1e-4, 1e-15);                 // p = 1: the floor
  EXPECT_NEAR(schedule.at(500), 1e-4, 1e-15);                 // and it stays there
}

TEST(LearningRateSchedule, ConstantAfterWarmupAndHuggingFaceCosineWithoutWarmup) {
  const can::LearningRateSchedule constant{2e-5, 4, 100, can::LearningRateDecay::kConstant, 0.0};
  EXPECT_DOUBLE_EQ(constant.at(2), 1e-5);
  EXPECT_DOUBLE_EQ(constant.at(4), 2e-5);
  EXPECT_DOUBLE_EQ(constant.at(99), 2e-5);
  const can::LearningRateSchedule cosine{1.0, 0, 10, can::LearningRateDecay::kCosine, 0.0};
  EXPECT_DOUBLE_EQ(cosine.at(0), 1.0);
  EXPECT_NEAR(cosine.at(5), 0.5, 1e-15);
  EXPECT_EQ(can::parse_learning_rate_decay("constant"), can::LearningRateDecay::kConstant);
  EXPECT_THROW(can::parse_learning_rate_decay("linear"), can::Error);
}

TEST(LearningRateSchedule, RejectsInvalidSchedules) {
  EXPECT_THROW((can::LearningRateSchedule{1e-3, 20, 10}.at(0)), can::Error);  // warm-up longer than the run
  EXPECT_THROW((can::LearningRateSchedule{1e-3, 0, 10, can::LearningRateDecay::kCosine, 2e-3}.at(0)), can::Error);
  EXPECT_THROW((can::LearningRateSchedule{0.0, 0, 10}.at(0)), can::Error);
  EXPECT_THROW((can::LearningRateSchedule{1e-3, 0, 10}.at(-1)), can::Error);
}

// Runs `steps` AdamW updates on fixed data with the scheduled learning rate and clipping.
void train(TinyModel& model, torch::optim::AdamW& optimizer, int64_t first_step, int64_t steps) {
  const can::LearningRateSchedule schedule{1e-2, 2, 10, can::LearningRateDecay::kCosine, 0.0};
  for (int64_t step = first_step; step < first_step + steps; ++step) {
    const auto ids = torch::arange(step, step + 6).remainder(10).view({2, 3});
    optimizer.zero_grad();
    model->forward(ids).pow(2).sum().backward();
    can::clip_gradient_norm(can::optimizer_parameters(optimizer), 1.0);
    can::set_learning_rate(optimizer, schedule.at(step));
    optimizer.step();
  }
}

void copy_parameters(TinyModel& from, TinyModel& to) {
  torch::NoGradGuard no_grad;
  const auto source = from->named_parameters();
  for (auto& item : to->named_parameters()) item.value().copy_(source[item.key()]);
}

TEST(OptimizerState, SaveThenLoadContinuesWithBitIdenticalUpdates) {
  torch::manual_seed(3);
  TinyModel original;
  auto optimizer = can::make_adamw(original->named_parameters(), {/*weight_decay=*/0.1});
  train(original, *optimizer, 0, 3);
  const auto path = temporary_path("adamw.pt");
  can::save_optimizer_state(*optimizer, path);
  TinyModel resumed;
  copy_parameters(original, resumed);
  TinyModel restarted;  // same weights, fresh optimizer: must end elsewhere
  copy_parameters(original, restarted);
  train(original, *optimizer, 3, 4);

  auto resumed_optimizer = can::make_adamw(resumed->named_parameters(), {/*weight_decay=*/0.1});
  can::load_optimizer_state(*resumed_optimizer, path);
  for (const auto& entry : resumed_optimizer->state()) {  // step counts come back, not only the moments
    EXPECT_EQ(static_cast<const torch::optim::AdamWParamState&>(*entry.second).step(), 3);
  }
  train(resumed, *resumed_optimizer, 3, 4);
  auto restarted_optimizer = can::make_adamw(restarted->named_parameters(), {/*weight_decay=*/0.1});
  train(restarted, *restarted_optimizer, 3, 4);

  const auto expected = original->named_parameters();
  for (const auto& item : resumed->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), expected[item.key()])) << item.key();
  }
  EXPECT_FALSE(torch::equal(restarted->proj->weight, original->proj->weight));
  fs::remove(path);
}

TEST(OptimizerState, LoadingIntoAnotherModelIsACleanError) {
  TinyModel model;
  auto optimizer = can::make_adamw(model->named_parameters(), {});
  train(model, *optimizer, 0, 1);
  const auto path = temporary_path("mismatch.pt");
  can::save_optimizer_state(*optimizer, path);

  // Same parameter count, another shape.
  auto weight = torch::randn({5, 4}).requires_grad_(true);
  torch::OrderedDict<std::string, at::Tensor> reshaped;
  for (const auto& item : model->named_parameters()) {
    reshaped.insert(item.key(), item.key() == "proj.weight" ? weight : item.value().detach().clone().requires_grad_());
  }
  auto reshaped_optimizer = can::make_adamw(reshaped, {});
  try {
    can::load_optimizer_state(*reshaped_optimizer, path);
    ADD_FAILURE() << "no error for a mis-shaped parameter";
  } catch (const can::Error& error) {
    EXPECT_NE(std::string(error.what()).find("does not fit this model"), std::string::npos) << error.what();
  }
  // Another parameter count.
  torch::OrderedDict<std::string, at::Tensor> fewer;
  fewer.insert("proj.weight", weight);
  auto fewer_optimizer = can::make_adamw(fewer, {});
  EXPECT_THROW(can::load_optimizer_state(*fewer_optimizer, path), can::Error);
  EXPECT_THROW(can::load_optimizer_state(*fewer_optimizer, temporary_path("missing.pt")), can::Error);
  fs::remove(path);
}

}  // namespace
