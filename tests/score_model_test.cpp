// Safe-RLHF's score model: the score is read at the last real token.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/hf_checkpoint.h"
#include "can/json_fields.h"
#include "can/model_weights.h"
#include "can/score_model.h"
#include "temporary_directory.h"
#include "tiny_model.h"

namespace {

can::LlamaForScore tiny_score_model(bool bias = true) {
  can::LlamaConfig config = can::testing::tiny_llama_config(/*vocab_size=*/50);
  config.hidden_size = 24;
  config.intermediate_size = 40;
  config.num_key_value_heads = 1;
  config.score_bias = bias;
  torch::manual_seed(21);
  can::LlamaForScore model(config);
  {
    torch::NoGradGuard no_grad;
    if (bias) model->score_head->bias.fill_(0.25);
  }
  model->eval();
  return model;
}

TEST(ScoreModel, ScoreIsTheHeadAtTheLastRealToken) {
  auto model = tiny_score_model();
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = torch::tensor(std::vector<int64_t>{1, 8, 13, 21}).unsqueeze(0);
  const torch::Tensor hidden = model->model(ids, torch::ones_like(ids), nullptr)[0][-1];  // [H]
  const torch::Tensor expected = torch::matmul(model->score_head->weight, hidden) + model->score_head->bias;
  EXPECT_LE((model(ids, torch::ones_like(ids))[0] - expected).abs().max().item<double>(), 1e-6);
}

TEST(ScoreModel, PaddingOnEitherSideDoesNotChangeScores) {
  auto model = tiny_score_model();
  torch::NoGradGuard no_grad;
  const std::vector<std::vector<int64_t>> sequences = {{1, 3, 5, 7, 9}, {1, 30}, {1, 4, 4, 4}};
  for (const bool left : {false, true}) {
    // Padding slots hold arbitrary token ids: they must not matter.
    torch::Tensor ids = torch::full({3, 5}, 17, torch::kInt64);
    torch::Tensor mask = torch::zeros({3, 5}, torch::kInt64);
    for (int64_t row = 0; row < 3; ++row) {
      const int64_t length = sequences[row].size(), offset = left ? 5 - length : 0;
      ids[row].slice(0, offset, offset + length).copy_(torch::tensor(sequences[row]));
      mask[row].slice(0, offset, offset + length).fill_(1);
    }
    const torch::Tensor batched = model(ids, mask);  // [3, 1]
    ASSERT_EQ(batched.sizes(), (std::vector<int64_t>{3, 1}));
    for (int64_t row = 0; row < 3; ++row) {
      const torch::Tensor alone_ids = torch::tensor(sequences[row]).unsqueeze(0);
      const double alone = model(alone_ids, torch::ones_like(alone_ids))[0][0].item<double>();
      EXPECT_NEAR(batched[row][0].item<double>(), alone, 1e-5) << (left ? "left" : "right") << " row " << row;
    }
  }
}

TEST(ScoreModel, SavesSafeRlhfLayoutAndLoadsBack) {
  for (const bool bias : {true, false}) {
    auto model = tiny_score_model(bias);
    const auto directory = std::filesystem::temp_directory_path() / "can_score_roundtrip";
    can::remove_tree(directory);
    can::save_score_model(model, directory.string());
    const auto tensors = can::load_checkpoint_tensors(directory);
    EXPECT_EQ(tensors.count("score_head.weight"), 1u);
    EXPECT_EQ(tensors.count("score_head.bias"), bias ? 1u : 0u);
    EXPECT_EQ(tensors.count("model.embed_tokens.weight"), 1u);
    EXPECT_EQ(can::read_json_file(directory / "config.json")["architectures"][0], "LlamaForScore");
    auto loaded = can::load_score_model(directory.string());
    torch::NoGradGuard no_grad;
    const torch::Tensor ids = torch::randint(0, 50, {2, 6});
    EXPECT_TRUE(model(ids, torch::ones_like(ids)).equal(loaded(ids, torch::ones_like(ids))));
    can::remove_tree(directory);
  }
}

// Safe-RLHF's config.json says `score_bias` (its current reader) and `bias` (its
// 2023 reader; beaver checkpoints carry `bias` false beside `score_bias` true), and
// may ask for normalised scores, which CAN does not compute.
TEST(ScoreModel, ReadsSafeRlhfBiasFieldsAndRefusesNormalisedScores) {
  auto model = tiny_score_model(/*bias=*/true);
  can::testing::TemporaryDirectory directory;
  nlohmann::json config = model->config.to_json("LlamaForScore");
  EXPECT_EQ(config.at("score_bias"), true);
  EXPECT_EQ(config.at("bias"), true);
  config["bias"] = false;  // the beaver layout: score_bias decides
  can::save_checkpoint(directory.path(), config, can::named_tensors(*model));
  EXPECT_TRUE(can::load_score_model(directory.path().string())->config.score_bias);

  model = tiny_score_model(/*bias=*/false);
  config = model->config.to_json("LlamaForScore");
  config.erase("score_bias");  // a 2023 checkpoint: bias decides
  can::save_checkpoint(directory.path(), config, can::named_tensors(*model));
  EXPECT_FALSE(can::load_score_model(directory.path().string())->config.score_bias);
  config.erase("bias");  // neither: no bias
  can::save_checkpoint(directory.path(), config, can::named_tensors(*model));
  EXPECT_FALSE(can::load_score_model(directory.path().string())->config.score_bias);

  config["do_normalize"] = true;
  can::save_checkpoint(directory.path(), config, can::named_tensors(*model));
  EXPECT_TRUE(can::testing::contains(
      can::testing::error_message([&] { can::load_score_model(directory.path().string()); }), "do_normalize"));
}

}  // namespace
