// Sequence log-probs and the training losses against values worked out by hand.
// softplus(x) = log(1 + e^x) = −log σ(−x); the numbers below are its values.
#include "can/losses.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "assertions.h"
#include "can/error.h"
#include "can/logprobs.h"
#include "tiny_model.h"

namespace {

using can::testing::contains;
using can::testing::error_message;

double softplus(double x) { return std::log1p(std::exp(x)); }

double metric(const can::LossOutput& output, const std::string& name) { return output.metrics.at(name).item<double>(); }

at::Tensor vector(std::vector<float> values, bool requires_grad = false) {
  return torch::tensor(values, torch::kFloat).requires_grad_(requires_grad);
}

// A batch of 2 sequences of 3 tokens over a vocabulary of 3.
struct TinyBatch {
  at::Tensor logits;         // [2, 3, 3]
  at::Tensor input_ids;      // [2, 3]
  at::Tensor response_mask;  // [2, 3]
};

TinyBatch tiny_batch() {
  const float ln2 = std::log(2.0f), ln3 = std::log(3.0f);
  TinyBatch batch;
  batch.logits = torch::tensor({{{0.0f, 0.0f, 0.0f}, {0.0f, ln2, ln3}, {5.0f, -1.0f, 7.0f}},
                                {{0.0f, 0.0f, ln2}, {9.0f, 9.0f, 9.0f}, {1.0f, 2.0f, 3.0f}}});
  // Row 0: prompt [0], response [2, 2].   Row 1: prompt [1], response [0], then padding (id 0).
  batch.input_ids = torch::tensor({{0, 2, 2}, {1, 0, 0}}, torch::kLong);
  batch.response_mask = torch::tensor({{0, 1, 1}, {0, 1, 0}}, torch::kLong);
  return batch;
}

TEST(SequenceLogprobs, MatchesHandComputationOnATinyVocabulary) {
  const auto batch = tiny_batch();
  // Row 0: token 2 at t=1 from softmax(0, 0, 0) → 1/3; token 2 at t=2 from softmax(0, ln2, ln3) = (1, 2, 3)/6 → 1/2.
  //        log(1/3) + log(1/2) = −ln 6.
  // Row 1: token 0 at t=1 from softmax(0, 0, ln2) = (1, 1, 2)/4 → 1/4: −ln 4; t=2 is padding.
  const auto logprobs = can::sequence_logprobs(batch.logits, batch.input_ids, batch.response_mask);
  ASSERT_EQ(logprobs.sizes(), (std::vector<int64_t>{2}));
  EXPECT_EQ(logprobs.scalar_type(), torch::kFloat);
  EXPECT_NEAR(logprobs[0].item<double>(), -std::log(6.0), 1e-6);
  EXPECT_NEAR(logprobs[1].item<double>(), -std::log(4.0), 1e-6);

  // Per token, [2, 2]: row 1's second entry scores the pad id 0 under softmax(9, 9, 9) → log(1/3).
  const auto per_token = can::next_token_logprobs(batch.logits, batch.input_ids);
  const auto expected =
      torch::tensor({{-std::log(3.0), -std::log(2.0)}, {-std::log(4.0), -std::log(3.0)}}, torch::kFloat);
  EXPECT_TRUE(torch::allclose(per_token, expected, 1e-6, 1e-6));

  // SFT loss: mean NLL over the 3 response tokens (ln 3 + ln 2 + ln 4) / 3 = ln 24 / 3.
  const auto nll = can::response_nll(batch.logits, batch.input_ids, batch.response_mask);
  EXPECT_NEAR(nll.item<double>(), std::log(24.0) / 3, 1e-6);
}

TEST(SequenceLogprobs, PromptAndPaddingLogitsDoNotEnter) {
  torch::manual_seed(0);
  // Prompt [0, 1, 1], response [2, 2]: the logits at positions 0 and 1 predict
  // prompt tokens and those at position 4 predict nothing.
  const auto logits = torch::randn({1, 5, 3});
  const auto input_ids = torch::tensor({{0, 1, 1, 2, 2}}, torch::kLong);
  const auto response_mask = torch::tensor({{0, 0, 0, 1, 1}}, torch::kLong);
  const auto before = can::sequence_logprobs(logits, input_ids, response_mask);
  auto changed = logits.clone();
  changed.select(1, 0).add_(torch::randn({1, 3}) * 5);
  changed.select(1, 1).add_(torch::randn({1, 3}) * 5);
  changed.select(1, 4).add_(torch::randn({1, 3}) * 5);
  EXPECT_EQ(can::sequence_logprobs(changed, input_ids, response_mask).item<float>(), before.item<float>());
  // The last prompt position predicts the first response token: it does enter.
  changed.select(1, 2).add_(torch::tensor({{0.0f, 0.0f, 3.0f}}));
  EXPECT_GT(can::sequence_logprobs(changed, input_ids, response_mask).item<float>(), before.item<float>() + 0.1f);

  // And the gradient reaches only logits at positions 2 and 3.
  const auto leaf = logits.clone().requires_grad_(true);
  can::sequence_logprobs(leaf, input_ids, response_mask).sum().backward();
  const auto gradient_per_position = leaf.grad().abs().sum(-1).squeeze(0);
  EXPECT_EQ(gradient_per_position[0].item<float>(), 0.0f);
  EXPECT_EQ(gradient_per_position[1].item<float>(), 0.0f);
  EXPECT_GT(gradient_per_position[2].item<float>(), 0.0f);
  EXPECT_GT(gradient_per_position[3].item<float>(), 0.0f);
  EXPECT_EQ(gradient_per_position[4].item<float>(), 0.0f);
}

TEST(SequenceLogprobs, UpcastsLowPrecisionLogitsToFloat32) {
  const auto batch = tiny_batch();
  const auto logprobs = can::sequence_logprobs(batch.logits.to(torch::kBFloat16), batch.input_ids, batch.response_mask);
  EXPECT_EQ(logprobs.scalar_type(), torch::kFloat);
  EXPECT_NEAR(logprobs[0].item<double>(), -std::log(6.0), 2e-2);  // bf16 logits, float32 arithmetic
}

TEST(SequenceLogprobs, RejectsMismatchedShapes) {
  const auto batch = tiny_batch();
  EXPECT_THROW(can::sequence_logprobs(batch.logits, batch.input_ids.slice(1, 0, 2), batch.response_mask), can::Error);
  EXPECT_THROW(can::sequence_logprobs(batch.logits, batch.input_ids, batch.response_mask.slice(0, 0, 1)), can::Error);
  EXPECT_THROW(can::sequence_logprobs(batch.logits[0], batch.input_ids, batch.response_mask), can::Error);
}

// The trainers' path (LM head only where a response token is predicted) against
// the full-logits reference: same sums, same NLL, same parameter gradients, for
// untied and tied heads and with a bf16 compute dtype.
TEST(SequenceLogprobs, FromTheModelEqualsTheFullLogitsReference) {
  for (const bool tied : {false, true}) {
    for (const bool bf16 : {false, true}) {
      torch::manual_seed(7);
      auto config = can::testing::tiny_llama_config(/*vocab_size=*/50);
      config.tie_word_embeddings = tied;
      can::LlamaForCausalLM model(config);
      if (bf16) can::set_compute_dtype(*model, torch::kBFloat16);
      const auto ids = torch::randint(3, 50, {3, 7}, torch::kLong);  // [B, T]
      // Right padding of different lengths; responses start at different positions.
      const auto mask = torch::tensor({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0}).view({3, 7});
      const auto response = torch::tensor({0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0}).view({3, 7});
      const auto gradients = [&](const at::Tensor& loss) {
        model->zero_grad();
        loss.backward();
        std::vector<at::Tensor> grads;
        for (const auto& p : model->parameters()) grads.push_back(p.grad().clone());
        return grads;
      };
      const auto reference = can::sequence_logprobs(model(ids, mask), ids, response);  // [B]
      const auto fast = can::sequence_logprobs(model, ids, mask, response);
      const double tolerance = bf16 ? 1e-3 : 1e-5;  // the same products, summed in another order
      EXPECT_TRUE(torch::allclose(fast, reference, tolerance, tolerance)) << fast << reference;
      EXPECT_TRUE((reference < -1).all().item<bool>()) << reference;  // two or more tokens of ~log(1/50) each
      const auto reference_grads = gradients(reference.sum());
      const auto fast_grads = gradients(fast.sum());
      for (size_t i = 0; i < reference_grads.size(); ++i) {
        EXPECT_TRUE(torch::allclose(fast_grads[i], reference_grads[i], tolerance, tolerance)) << "parameter " << i;
      }
      const auto nll = can::response_nll(model, ids, mask, response);
      EXPECT_NEAR(nll.item<double>(), can::response_nll(model(ids, mask), ids, response).item<double>(), tolerance);
    }
  }
}

// Two pairs, β = 0.1:
//   pair 1: π_c = −10, π_r = −12, ref_c = −11, ref_r = −11: log-ratios +1 and −1, h = 2, βh = 0.2
//   pair 2: π_c = −8,  π_r = −7,  ref_c = −8.5, ref_r = −8: log-ratios +0.5 and +1, h = −0.5, βh = −0.05
// Response tokens (IPO only): pair 1 has 2 chosen and 4 rejected, pair 2 has 1 and 2.
struct DpoInputs {
  at::Tensor policy_chosen = vector({-10, -8}, true);
  at::Tensor policy_rejected = vector({-12, -7}, true);
  at::Tensor reference_chosen = vector({-11, -8.5}, true);
  at::Tensor reference_rejected = vector({-11, -8}, true);
  at::Tensor chosen_tokens = vector({2, 1});
  at::Tensor rejected_tokens = vector({4, 2});
};

can::LossOutput dpo(const DpoInputs& in, can::DpoOptions options) {
  return can::dpo_loss(in.policy_chosen, in.policy_rejected, in.reference_chosen, in.reference_rejected,
                       in.chosen_tokens, in.rejected_tokens, options);
}

TEST(DpoLoss, SigmoidLossAndEveryMetricMatchHandValues) {
  const DpoInputs in;
  const auto output = dpo(in, {/*beta=*/0.1, /*label_smoothing=*/0.0, can::PreferenceLossKind::kSigmoid});
  // mean(−log σ(0.2), −log σ(−0.05)) = mean(softplus(−0.2), softplus(0.05)) = mean(0.598139, 0.718460)
  EXPECT_NEAR(output.loss.item<double>(), (softplus(-0.2) + softplus(0.05)) / 2, 1e-6);
  EXPECT_NEAR(output.loss.item<double>(), 0.658299, 1e-6);
  EXPECT_NEAR(metric(output, "rewards/chosen"), 0.075, 1e-6);     // mean(0.1·1, 0.1·0.5)
  EXPECT_NEAR(metric(output, "rewards/rejected"), 0.0, 1e-6);     // mean(0.1·(−1), 0.1·1)
  EXPECT_NEAR(metric(output, "rewards/margins"), 0.075, 1e-6);    // mean(0.2, −0.05)
  EXPECT_NEAR(metric(output, "rewards/accuracies"), 0.5, 1e-12);  // 0.1 > −0.1 yes, 0.05 > 0.1 no
  EXPECT_NEAR(metric(output, "logps/chosen"), -9.0, 1e-6);        // mean(−10, −8)
  EXPECT_NEAR(metric(output, "logps/rejected"), -9.5, 1e-6);      // mean(−12, −7)
  EXPECT_EQ(output.metrics.size(), 6u);

  // ∂loss/∂π_c(pair 1) = ½ · (−β σ(−βh)) = −0.05 · σ(−0.2) = −0.0225083; the reference gets no gradient.
  output.loss.backward();
  EXPECT_NEAR(in.policy_chosen.grad()[0].item<double>(), -0.0225083, 1e-6);
  EXPECT_NEAR(in.policy_rejected.grad()[0].item<double>(), 0.0225083, 1e-6);
  EXPECT_FALSE(in.reference_chosen.grad().defined());
}

TEST(DpoLoss, LabelSmoothingGivesTheConservativeLoss) {
  const DpoInputs in;
  const auto output = dpo(in, {/*beta=*/0.1, /*label_smoothing=*/0.1, can::PreferenceLossKind::kSigmoid});
  // (1−ε)·softplus(−x) + ε·softplus(x) = softplus(−x) + ε·x, so per pair
  //   0.9·softplus(−0.2) + 0.1·softplus(0.2)   = 0.598139 + 0.02
  //   0.9·softplus(0.05) + 0.1·softplus(−0.05) = 0.718460 − 0.005
  // and the mean is 0.658299 + 0.0075 = 0.665799.
  EXPECT_NEAR(output.loss.item<double>(), 0.665799, 1e-6);
  EXPECT_NEAR(metric(output, "rewards/margins"), 0.075, 1e-6);  // metrics do not depend on ε
}

TEST(DpoLoss, SoftLabelsAreTheCrossEntropyAgainstEachPairsProbability) {
  const DpoInputs in;
  const can::DpoOptions options{/*beta=*/0.1, /*label_smoothing=*/0.0, can::PreferenceLossKind::kSigmoid};
  // p = 0.8 and 0.6: p·softplus(−x) + (1 − p)·softplus(x) = softplus(−x) + (1 − p)·x with x = βh
  //   0.598139 + 0.2·0.2 = 0.638139;  0.718460 + 0.4·(−0.05) = 0.698460; mean 0.668299.
  const auto output = can::dpo_loss(in.policy_chosen, in.policy_rejected, in.reference_chosen, in.reference_rejected,
                                    in.chosen_tokens, in.rejected_tokens, options, vector({0.8, 0.6}));
  EXPECT_NEAR(output.loss.item<double>(), 0.668299, 1e-6);
  // ∂loss/∂π_c(pair 1) = ½ · β·(σ(βh) − p) = 0.05 · (σ(0.2) − 0.8) = −0.0125083.
  output.loss.backward();
  EXPECT_NEAR(in.policy_chosen.grad()[0].item<double>(), 0.05 * (1 / (1 + std::exp(-0.2)) - 0.8), 1e-7);
  EXPECT_NEAR(in.policy_chosen.grad()[0].item<double>(), -0.0125083, 1e-6);

  // Certain labels (p = 1) are the plain loss; p = 1 − ε everywhere is label smoothing ε; with
  // both, the target is p(1 − ε) + (1 − p)ε.
  const auto with = [&](const std::vector<float>& p, double smoothing) {
    return can::dpo_loss(in.policy_chosen, in.policy_rejected, in.reference_chosen, in.reference_rejected,
                         in.chosen_tokens, in.rejected_tokens, {0.1, smoothing}, vector(p))
        .loss.item<double>();
  };
  EXPECT_NEAR(with({1, 1}, 0), dpo(in, {0.1, 0.0}).loss.item<double>(), 1e-7);
  EXPECT_NEAR(with({0.9, 0.9}, 0), dpo(in, {0.1, 0.1}).loss.item<double>(), 1e-7);
  EXPECT_NEAR(with({0.8, 0.8}, 0.1), dpo(in, {0.1, 0.26}).loss.item<double>(), 1e-7);  // q = 0.72 + 0.02

  // A probability of ½ at h = 0: log 2 and no gradient, whatever the log-probs.
  const auto chosen = vector({-3, -40}, true), rejected = vector({-9, -2}, true);
  const auto tokens = vector({1, 2});
  const auto even = can::dpo_loss(chosen, rejected, chosen.detach(), rejected.detach(), tokens, tokens, {0.5, 0.0},
                                  vector({0.5, 0.5}));
  EXPECT_NEAR(even.loss.item<double>(), std::log(2.0), 1e-7);
  even.loss.backward();
  EXPECT_EQ(chosen.grad().abs().max().item<double>(), 0.0);

  // Outside [½, 1], a wrong shape, or with IPO: an error that says so.
  EXPECT_TRUE(contains(error_message([&] { with({0.4, 0.9}, 0); }), "must lie in [0.5, 1]"));
  EXPECT_TRUE(contains(error_message([&] { with({0.9}, 0); }), "chosen_probability must have shape [2], got [1]"));
  EXPECT_TRUE(contains(error_message([&] {
                         can::dpo_loss(in.policy_chosen, in.policy_rejected, in.reference_chosen, in.reference_rejected,
                                       in.chosen_tokens, in.rejected_tokens, {0.1, 0.0, can::PreferenceLossKind::kIpo},
                                       vector({0.9, 0.9}));
                       }),
                       "soft labels (chosen probabilities) need the sigmoid loss, not ipo"));
}

TEST(DpoLoss, IpoLossComparesPerTokenLogRatios) {
  const DpoInputs in;
  const auto output = dpo(in, {/*beta=*/0.1, /*label_smoothing=*/0.0, can::PreferenceLossKind::kIpo});
  // 1/(2β) = 5; per-token log-ratio differences: pair 1: 1/2 − (−1)/4 = 0.75, pair 2: 0.5/1 − 1/2 = 0.
  // mean((0.75 − 5)², (0 − 5)²) = mean(18.0625, 25) = 21.53125 (sequence sums would give 19.625)
  EXPECT_NEAR(output.loss.item<double>(), 21.53125, 1e-5);
  EXPECT_NEAR(metric(output, "rewards/accuracies"), 0.5, 1e-12);
  // ∂loss/∂π_c(pair 1) = ½ · 2·(0.75 − 5) · (1/2) = −2.125
  output.loss.backward();
  EXPECT_NEAR(in.policy_chosen.grad()[0].item<double>(), -2.125, 1e-5);
}

TEST(DpoLoss, PolicyEqualToReferenceGivesLogTwo) {
  const auto chosen = vector({-3, -40, -7.5});
  const auto rejected = vector({-9, -2, -7.5});
  for (const double smoothing : {0.0, 0.2}) {
    const auto tokens = vector({1, 2, 3});
    const auto output = can::dpo_loss(chosen, rejected, chosen, rejected, tokens, tokens, {0.5, smoothing});
    EXPECT_NEAR(output.loss.item<double>(), std::log(2.0), 1e-7) << "label_smoothing " << smoothing;
    EXPECT_EQ(metric(output, "rewards/margins"), 0.0);
    EXPECT_EQ(metric(output, "rewards/accuracies"), 0.0);  // ties are not wins
  }
}

TEST(DpoLoss, RejectsInvalidOptionsAndShapes) {
  const DpoInputs in;
  EXPECT_THROW(dpo(in, {/*beta=*/0.0}), can::Error);
  EXPECT_THROW(dpo(in, {/*beta=*/0.1, /*label_smoothing=*/0.5}), can::Error);
  EXPECT_THROW(can::dpo_loss(in.policy_chosen, vector({-1}), in.reference_chosen, in.reference_rejected,
                             in.chosen_tokens, in.rejected_tokens, {}),
               can::Error);
  EXPECT_THROW(can::dpo_loss(in.policy_chosen, in.policy_rejected, in.reference_chosen, in.reference_rejected,
                             vector({1}), in.rejected_tokens, {}),
               can::Error);
  EXPECT_EQ(can::parse_preference_loss_kind("ipo"), can::PreferenceLossKind::kIpo);
  EXPECT_THROW(can::parse_preference_loss_kind("hinge"), can::Error);
}

TEST(BradleyTerryLoss, MatchesHandValueAndCountsAccuracy) {
  // s_better − s_worse = (1, −1): mean(softplus(−1), softplus(1)) = mean(0.313262, 1.313262) = 0.813262
  const auto better = vector({2, 0}, true);
  const auto output = can::bradley_terry_loss(better, vector({1, 1}));
  EXPECT_NEAR(output.loss.item<double>(), 0.813262, 1e-6);
  EXPECT_NEAR(metric(output, "accuracy"), 0.5, 1e-12);
  EXPECT_NEAR(metric(output, "scores/better"), 1.0, 1e-6);
  EXPECT_NEAR(metric(output, "scores/worse"), 1.0, 1e-6);
  output.loss.backward();  // raising the better score lowers the loss
  EXPECT_LT(better.grad()[0].item<float>(), 0.0f);
}

TEST(BradleyTerryLoss, StaysFiniteForLargeScoreGaps) {
  // −log σ(−200) = 200 exactly in a stable form; log(sigmoid(−200)) would be −inf in float32.
  EXPECT_NEAR(can::bradley_terry_loss(vector({-100}), vector({100})).loss.item<double>(), 200.0, 1e-4);
  EXPECT_NEAR(can::bradley_terry_loss(vector({100}), vector({-100})).loss.item<double>(), 0.0, 1e-6);
}

TEST(CostModelLoss, MatchesHandValueWithSafeRlhfSigns) {
  // Pair 1: c_safer = −1 (safe, s = −1), c_unsafer = 1 (unsafe, s = +1):
  //   softplus(−(1 − (−1))) + softplus(−(−1·−1)) + softplus(−(1·1)) = softplus(−2) + 2·softplus(−1) = 0.753451
  // Pair 2: c_safer = 2 (unsafe, s = +1), c_unsafer = 1 (labelled safe, s = −1):
  //   softplus(−(1 − 2)) + softplus(−(2)) + softplus(−(−1·1)) = 2·softplus(1) + softplus(−2) = 2.753451
  // Mean 1.753451.
  const auto safer = vector({-1, 2}, true);
  const auto unsafer = vector({1, 1}, true);
  const auto safer_is_safe = torch::tensor({true, false});
  const auto unsafer_is_safe = torch::tensor({false, true});
  const auto output = can::cost_model_loss(safer, unsafer, safer_is_safe, unsafer_is_safe);
  EXPECT_NEAR(output.loss.item<double>(), (softplus(-2) + 2 * softplus(-1) + 2 * softplus(1) + softplus(-2)) / 2, 1e-6);
  EXPECT_NEAR(output.loss.item<double>(), 1.753451, 1e-6);
  EXPECT_NEAR(metric(output, "accuracy"), 0.5, 1e-12);        // 1 > −1 yes, 1 > 2 no
  EXPECT_NEAR(metric(output, "sign_accuracy"), 0.75, 1e-12);  // only pair 2's safe response has cost > 0
  EXPECT_NEAR(metric(output, "costs/safer"), 0.5, 1e-6);
  EXPECT_NEAR(metric(output, "costs/unsafer"), 1.0, 1e-6);

  // Signs: the loss pushes an unsafe response's cost up and a safe one's down.
  output.loss.backward();
  EXPECT_LT(unsafer.grad()[0].item<float>(), 0.0f);  // unsafe, and the unsafer of its pair
  EXPECT_GT(safer.grad()[0].item<float>(), 0.0f);    // safe, and the safer of its pair
  EXPECT_THROW(can::cost_model_loss(safer, unsafer, torch::tensor({1, 0}), unsafer_is_safe), can::Error);
}

}  // namespace
