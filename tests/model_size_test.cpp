// model_size.h against the modules themselves: the names and shapes of every
// parameter of LlamaForCausalLM (tied and untied, grouped-query) and LlamaForScore
// (with and without the head's bias), the families' projection biases, and the LoRA
// adapters' parameter count.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "assertions.h"
#include "can/lora.h"
#include "can/model_size.h"
#include "can/score_model.h"
#include "tiny_model.h"

namespace {

using Shapes = std::map<std::string, std::vector<int64_t>>;

Shapes module_shapes(torch::nn::Module& module) {
  Shapes shapes;
  for (const auto& parameter : module.named_parameters()) shapes[parameter.key()] = parameter.value().sizes().vec();
  return shapes;
}

TEST(ModelSize, CausalLmShapesAreTheModulesParameters) {
  for (const bool tied : {false, true}) {
    can::LlamaConfig config = can::testing::tiny_llama_config(/*vocab_size=*/50, /*num_hidden_layers=*/3);
    config.tie_word_embeddings = tied;
    can::LlamaForCausalLM model(config);
    const Shapes computed = can::llama_tensor_shapes(config, can::ModelKind::kCausalLm);
    EXPECT_EQ(computed, module_shapes(*model)) << "tied " << tied;
    EXPECT_EQ(computed.count("lm_head.weight"), tied ? 0u : 1u);
    int64_t elements = 0;
    for (const auto& parameter : model->parameters()) elements += parameter.numel();
    EXPECT_EQ(can::parameter_count(computed), elements);
  }
}

// The families' biases (Qwen2: q, k, v; Llama's attention_bias: all four) and an explicit head_dim.
TEST(ModelSize, BiasesAndAnExplicitHeadDimAreInTheShapes) {
  for (const auto& [qkv, o] : {std::pair{true, false}, std::pair{true, true}}) {
    can::LlamaConfig config = can::testing::tiny_llama_config(/*vocab_size=*/50, /*num_hidden_layers=*/2);
    config.qkv_bias = qkv;
    config.o_bias = o;
    config.explicit_head_dim = 2 * config.head_dim();
    can::LlamaForCausalLM model(config);
    const Shapes computed = can::llama_tensor_shapes(config, can::ModelKind::kCausalLm);
    EXPECT_EQ(computed, module_shapes(*model)) << "o_proj bias " << o;
    EXPECT_EQ(computed.at("model.layers.1.self_attn.q_proj.bias"),
              std::vector<int64_t>{config.num_attention_heads * config.head_dim()});
    EXPECT_EQ(computed.count("model.layers.1.self_attn.o_proj.bias"), o ? 1u : 0u);
  }
}

TEST(ModelSize, ScoreModelShapesAreTheModulesParameters) {
  for (const bool bias : {false, true}) {
    can::LlamaConfig config = can::testing::tiny_llama_config(/*vocab_size=*/40);
    config.score_dim = 2;
    config.score_bias = bias;
    can::LlamaForScore model(config);
    EXPECT_EQ(can::llama_tensor_shapes(config, can::ModelKind::kScore), module_shapes(*model)) << "bias " << bias;
  }
}

TEST(ModelSize, LoraCountIsTheAdaptersTrainableParameters) {
  const can::LlamaConfig config = can::testing::tiny_llama_config(/*vocab_size=*/30);
  for (const std::vector<std::string>& targets :
       {std::vector<std::string>{"q_proj", "v_proj"},
        std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}) {
    can::LlamaForCausalLM model(config);
    can::LoraOptions lora;
    lora.rank = 3;
    lora.target_modules = targets;
    can::attach_lora(*model, lora);
    int64_t adapters = 0;
    for (const auto& parameter : model->named_parameters()) {
      if (parameter.key().find("lora_") != std::string::npos) adapters += parameter.value().numel();
    }
    EXPECT_EQ(can::lora_parameter_count(config, lora), adapters) << targets.size() << " targets";
  }
  can::LoraOptions none;
  none.rank = 0;
  EXPECT_EQ(can::lora_parameter_count(config, none), 0);
}

}  // namespace
