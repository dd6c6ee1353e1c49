// LoRA adapters on the tiny Llama: a fresh adapter changes nothing, disabled
// adapters are the base model exactly, merging keeps the function, only
// adapters train, and the PEFT directory round-trips with PEFT's key names.
#include "can/json_fields.h"
#include "can/lora.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "assertions.h"
#include "can/llama.h"
#include "can/optimizer.h"
#include "can/safetensors.h"
#include "temporary_directory.h"
#include "tiny_model.h"

namespace {

namespace fs = std::filesystem;

using can::testing::contains;
using can::testing::error_message;

can::LlamaForCausalLM tiny_model() {
  torch::manual_seed(7);
  return can::LlamaForCausalLM(can::testing::tiny_llama_config(64));
}

can::LoraOptions every_target(int64_t rank = 4) {
  can::LoraOptions options;
  options.rank = rank;
  options.alpha = 8.0;
  options.target_modules = can::lora_target_names();
  return options;
}

struct Batch {
  torch::Tensor ids;   // [2, 9]
  torch::Tensor mask;  // [2, 9], the second row left-padded by 3
};

Batch batch() {
  torch::manual_seed(3);
  Batch b{torch::randint(0, 64, {2, 9}), torch::ones({2, 9}, torch::kInt64)};
  b.mask[1].slice(0, 0, 3).zero_();
  return b;
}

torch::Tensor logits_of(can::LlamaForCausalLM& model, const Batch& b) {
  torch::NoGradGuard no_grad;
  return model(b.ids, b.mask);
}

// Trains the adapters for a few AdamW steps toward random next tokens, so that B is no longer zero.
void train_adapters(can::LlamaForCausalLM& model, const Batch& b) {
  can::freeze_all_but_lora(*model);
  auto optimizer = can::make_adamw(model->named_parameters(), {});
  can::set_learning_rate(*optimizer, 1e-2);
  const torch::Tensor targets = torch::randint(0, 64, {2, 9});
  for (int step = 0; step < 5; ++step) {
    optimizer->zero_grad();
    torch::nn::functional::cross_entropy(model(b.ids, b.mask).reshape({-1, 64}), targets.reshape({-1})).backward();
    optimizer->step();
  }
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(Lora, FreshAdaptersLeaveTheLogitsBitIdentical) {
  auto model = tiny_model();
  const Batch b = batch();
  const torch::Tensor before = logits_of(model, b);
  can::attach_lora(*model, every_target());
  EXPECT_TRUE(can::has_lora(*model));
  EXPECT_TRUE(torch::equal(logits_of(model, b), before));
  // A is Kaiming-uniform (bound 1/√in with a = √5), B is zero.
  const auto& q_proj = model->model->layers->at<can::LlamaDecoderLayerImpl>(0).self_attn->q_proj;
  EXPECT_EQ(q_proj->lora_A->weight.sizes(), (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(q_proj->lora_B->weight.sizes(), (std::vector<int64_t>{32, 4}));
  EXPECT_GT(q_proj->lora_A->weight.abs().max().item<double>(), 0.0);
  EXPECT_LE(q_proj->lora_A->weight.abs().max().item<double>(), 1.0 / std::sqrt(32.0));
  EXPECT_EQ(q_proj->lora_B->weight.abs().max().item<double>(), 0.0);
  EXPECT_DOUBLE_EQ(q_proj->lora_scaling, 2.0);
}

TEST(Lora, OnlyAdapterParametersReceiveGradientsAndEnterTheOptimizer) {
  auto model = tiny_model();
  can::LoraOptions options;  // q_proj, v_proj
  options.rank = 2;
  can::attach_lora(*model, options);
  can::freeze_all_but_lora(*model);
  const Batch b = batch();
  model(b.ids, b.mask).pow(2).mean().backward();
  int64_t adapters = 0;
  for (const auto& parameter : model->named_parameters()) {
    if (can::is_lora_parameter(parameter.key())) {
      ++adapters;
      EXPECT_TRUE(parameter.value().grad().defined()) << parameter.key();
      EXPECT_TRUE(parameter.key().find("q_proj.lora_") != std::string::npos ||
                  parameter.key().find("v_proj.lora_") != std::string::npos)
          << parameter.key();
    } else {
      EXPECT_FALSE(parameter.value().grad().defined()) << parameter.key();
    }
  }
  EXPECT_EQ(adapters, 2 * 2 * 2);  // 2 layers × 2 targets × (A, B)
  const auto optimizer = can::make_adamw(model->named_parameters(), {});
  EXPECT_EQ(static_cast<int64_t>(can::optimizer_parameters(*optimizer).size()), adapters);
}

TEST(Lora, DisabledAdaptersAreExactlyTheBaseModelAfterTraining) {
  auto model = tiny_model();
  const Batch b = batch();
  const torch::Tensor base = logits_of(model, b);
  can::attach_lora(*model, every_target());
  train_adapters(model, b);
  EXPECT_GT(max_abs_diff(logits_of(model, b), base), 1e-3);  // the adapters learned something
  {
    const can::LoraDisabled disabled(*model);
    EXPECT_TRUE(torch::equal(logits_of(model, b), base));
  }
  EXPECT_GT(max_abs_diff(logits_of(model, b), base), 1e-3);  // enabled again
}

TEST(Lora, MergedWeightsComputeWhatTheAdaptersCompute) {
  auto model = tiny_model();
  const Batch b = batch();
  can::attach_lora(*model, every_target());
  train_adapters(model, b);
  const torch::Tensor with_adapters = logits_of(model, b);

  // save_causal_lm writes the merged weights and no adapter tensor.
  can::testing::TemporaryDirectory directory;
  can::save_causal_lm(model, directory.path().string());
  for (const auto& name : can::SafetensorsFile::open(directory.path() / "model.safetensors").names()) {
    EXPECT_FALSE(can::is_lora_parameter(name)) << name;
  }
  auto saved = can::load_causal_lm(directory.path().string());
  EXPECT_LE(max_abs_diff(logits_of(saved, b), with_adapters), 1e-5);

  can::merge_lora(*model);
  EXPECT_FALSE(can::has_lora(*model));
  EXPECT_EQ(model->named_parameters().size(), saved->named_parameters().size());
  EXPECT_LE(max_abs_diff(logits_of(model, b), with_adapters), 1e-5);
  EXPECT_TRUE(torch::equal(logits_of(model, b), logits_of(saved, b)));  // one merge formula
}

TEST(Lora, AdaptersSaveWithPeftNamesAndLoadBackExactly) {
  auto model = tiny_model();
  const Batch b = batch();
  can::LoraOptions options;
  options.rank = 4;
  options.alpha = 16;
  options.dropout = 0.05;
  options.target_modules = {"v_proj", "down_proj"};
  can::attach_lora(*model, options);
  train_adapters(model, b);
  can::testing::TemporaryDirectory directory;
  can::save_lora_adapters(*model, directory.path(), "models/base");

  const auto file = can::SafetensorsFile::open(directory.path() / "adapter_model.safetensors");
  std::vector<std::string> names = file.names();
  std::sort(names.begin(), names.end());
  const std::vector<std::string> expected = {
      "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight",
      "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight",
      "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight",
      "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight",
      "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight",
      "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight",
      "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight",
      "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight",
  };
  EXPECT_EQ(names, expected);
  EXPECT_EQ(file.shape("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"),
            (std::vector<int64_t>{4, 64}));  // [r, in = intermediate size]
  EXPECT_EQ(file.shape("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"),
            (std::vector<int64_t>{16, 4}));  // [out = K·D, r]
  const auto config = can::read_json_file(directory.path() / "adapter_config.json");
  EXPECT_EQ(config.at("peft_type"), "LORA");
  EXPECT_EQ(config.at("task_type"), "CAUSAL_LM");
  EXPECT_EQ(config.at("r"), 4);
  EXPECT_EQ(config.at("lora_alpha"), 16.0);
  EXPECT_EQ(config.at("lora_dropout"), 0.05);
  EXPECT_EQ(config.at("target_modules"), (std::vector<std::string>{"v_proj", "down_proj"}));
  EXPECT_EQ(config.at("bias"), "none");
  EXPECT_EQ(config.at("base_model_name_or_path"), "models/base");

  model->eval();
  auto loaded = tiny_model();  // the same base weights, no adapters: loading attaches them
  can::load_lora_adapters(*loaded, directory.path());
  loaded->eval();
  EXPECT_TRUE(torch::equal(logits_of(loaded, b), logits_of(model, b)));
  const auto loaded_options = can::lora_options(*loaded);
  EXPECT_EQ(loaded_options.rank, 4);
  EXPECT_DOUBLE_EQ(loaded_options.dropout, 0.05);
  // Into a model with matching adapters attached already: the weights are copied.
  auto attached = tiny_model();
  can::attach_lora(*attached, options);
  can::load_lora_adapters(*attached, directory.path());
  attached->eval();
  EXPECT_TRUE(torch::equal(logits_of(attached, b), logits_of(model, b)));
}

TEST(Lora, LoadingNamesTheMismatchedTensor) {
  auto model = tiny_model();
  can::attach_lora(*model, every_target(4));
  can::testing::TemporaryDirectory directory;
  can::save_lora_adapters(*model, directory.path(), "");

  auto other_rank = tiny_model();
  can::attach_lora(*other_rank, every_target(2));
  EXPECT_TRUE(contains(error_message([&] { can::load_lora_adapters(*other_rank, directory.path()); }),
                       "adapters of rank 4, alpha 8 on [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                       "down_proj] do not match the model's, of rank 2"));

  // One tensor missing, one mis-shaped.
  const fs::path weights = directory.path() / "adapter_model.safetensors";
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  const auto file = can::SafetensorsFile::open(weights);
  for (const auto& name : file.names()) {
    if (name == "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight") continue;
    tensors.emplace_back(name, name == "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"
                                   ? torch::zeros({5, 32})
                                   : file.tensor(name));
  }
  can::save_safetensors(weights, tensors);
  const std::string message = error_message([&] { can::load_lora_adapters(*tiny_model(), directory.path()); });
  EXPECT_TRUE(contains(message, "adapter_model.safetensors: the adapters do not match the model"));
  EXPECT_TRUE(contains(message, "missing tensor base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"));
  EXPECT_TRUE(contains(message,
                       "tensor base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight has shape "
                       "[5, 32] but the model's is [4, 32]"));
}

TEST(Lora, BadOptionsAreClearErrors) {
  auto model = tiny_model();
  can::LoraOptions options;
  options.target_modules = {"q_proj", "qkv"};
  EXPECT_TRUE(contains(error_message([&] { can::attach_lora(*model, options); }),
                       "LoRA target module 'qkv' is not one of: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                       "down_proj"));
  options.target_modules = {"q_proj"};
  options.rank = 0;
  EXPECT_TRUE(contains(error_message([&] { can::attach_lora(*model, options); }), "LoRA rank must be positive, got 0"));
  EXPECT_FALSE(can::has_lora(*model));
  options.rank = 2;
  can::attach_lora(*model, options);
  EXPECT_TRUE(contains(error_message([&] { can::attach_lora(*model, options); }), "has LoRA adapters already"));
}

TEST(Lora, DropoutActsOnTheAdapterInputInTrainingModeOnly) {
  auto model = tiny_model();
  const Batch b = batch();
  can::LoraOptions options = every_target();
  options.dropout = 0.5;
  can::attach_lora(*model, options);
  train_adapters(model, b);  // in training mode, with dropout
  model->eval();
  EXPECT_TRUE(torch::equal(logits_of(model, b), logits_of(model, b)));
  model->train();
  EXPECT_GT(max_abs_diff(logits_of(model, b), logits_of(model, b)), 1e-4);
  // The base path has no dropout: with adapters disabled, training mode is deterministic.
  const can::LoraDisabled disabled(*model);
  EXPECT_TRUE(torch::equal(logits_of(model, b), logits_of(model, b)));
}

}  // namespace
