// The Llama causal LM: a naive reference forward, the KV cache, padding on
// either side, sampling, and name-checked loading and saving.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <nlohmann/json.hpp>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/error.h"
#include "can/hf_checkpoint.h"
#include "can/llama.h"
#include "can/model_weights.h"
#include "can/sampling.h"
#include "temporary_directory.h"
#include "tiny_model.h"

namespace {

// Grouped-query attention (tiny_llama_config): two query heads per key/value head.
can::LlamaConfig tiny_config() {
  can::LlamaConfig config = can::testing::tiny_llama_config(/*vocab_size=*/64);
  config.intermediate_size = 48;
  config.max_position_embeddings = 128;
  config.rms_norm_eps = 1e-5;
  config.rope_theta = 500.0;
  config.eos_token_id = 2;
  return config;
}

can::LlamaForCausalLM tiny_model(uint64_t seed = 7) {
  torch::manual_seed(seed);
  can::LlamaForCausalLM model(tiny_config());
  model->eval();
  return model;
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// A deliberately naive forward for one unpadded sequence: explicit loops over
// heads and positions, rotary embeddings from the formula with rotate-half
// pairing (i, i + D/2), query head h reading key/value head h / group.
torch::Tensor reference_logits(can::LlamaForCausalLMImpl& lm, const std::vector<int64_t>& ids) {
  torch::NoGradGuard no_grad;
  const auto& config = lm.config;
  const int64_t steps = static_cast<int64_t>(ids.size());
  const int64_t dim = config.head_dim();
  const int64_t group = config.num_attention_heads / config.num_key_value_heads;
  auto rms = [&](const torch::Tensor& x, const torch::Tensor& weight) {
    return weight * x / torch::sqrt(x.pow(2).mean(-1, true) + config.rms_norm_eps);
  };
  auto rotate = [&](const torch::Tensor& vector, int64_t position) {  // [D] at one position
    torch::Tensor out = vector.clone();
    for (int64_t i = 0; i < dim / 2; ++i) {
      const double angle = position / std::pow(config.rope_theta, 2.0 * i / dim);
      const double x1 = vector[i].item<double>(), x2 = vector[i + dim / 2].item<double>();
      out[i] = x1 * std::cos(angle) - x2 * std::sin(angle);
      out[i + dim / 2] = x2 * std::cos(angle) + x1 * std::sin(angle);
    }
    return out;
  };
  torch::Tensor hidden = lm.model->embed_tokens->weight.index_select(0, torch::tensor(ids));  // [T, H]
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    auto& block = lm.model->layers->at<can::LlamaDecoderLayerImpl>(layer);
    const torch::Tensor x = rms(hidden, block.input_layernorm->weight);
    const torch::Tensor q = torch::matmul(x, block.self_attn->q_proj->weight.t());  // [T, Q*D]
    const torch::Tensor k = torch::matmul(x, block.self_attn->k_proj->weight.t());  // [T, K*D]
    const torch::Tensor v = torch::matmul(x, block.self_attn->v_proj->weight.t());  // [T, K*D]
    torch::Tensor attended = torch::zeros({steps, config.num_attention_heads * dim});
    for (int64_t head = 0; head < config.num_attention_heads; ++head) {
      const int64_t kv = head / group;
      for (int64_t t = 0; t < steps; ++t) {
        const torch::Tensor query = rotate(q[t].slice(0, head * dim, (head + 1) * dim), t);
        std::vector<torch::Tensor> scores;
        for (int64_t s = 0; s <= t; ++s) {
          const torch::Tensor key = rotate(k[s].slice(0, kv * dim, (kv + 1) * dim), s);
          scores.push_back(torch::dot(query, key) / std::sqrt(static_cast<double>(dim)));
        }
        const torch::Tensor weights = torch::softmax(torch::stack(scores), 0);
        torch::Tensor mixed = torch::zeros({dim});
        for (int64_t s = 0; s <= t; ++s) mixed += weights[s] * v[s].slice(0, kv * dim, (kv + 1) * dim);
        attended[t].slice(0, head * dim, (head + 1) * dim).copy_(mixed);
      }
    }
    hidden = hidden + torch::matmul(attended, block.self_attn->o_proj->weight.t());
    const torch::Tensor y = rms(hidden, block.post_attention_layernorm->weight);
    const torch::Tensor gate = torch::matmul(y, block.mlp->gate_proj->weight.t());
    const torch::Tensor up = torch::matmul(y, block.mlp->up_proj->weight.t());
    hidden = hidden + torch::matmul(gate * torch::sigmoid(gate) * up, block.mlp->down_proj->weight.t());
  }
  return torch::matmul(rms(hidden, lm.model->norm->weight), lm.lm_head->weight.t());  // [T, V]
}

TEST(Llama, ForwardMatchesNaiveReference) {
  auto model = tiny_model();
  const std::vector<int64_t> ids = {1, 17, 5, 42, 9, 33, 8};
  const torch::Tensor input = torch::tensor(ids).unsqueeze(0);
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = model(input, torch::ones_like(input), nullptr)[0];
  EXPECT_LE(max_abs_diff(logits, reference_logits(*model, ids)), 1e-5);
}

TEST(Llama, KVCacheDecodingEqualsFullForward) {
  auto model = tiny_model();
  torch::NoGradGuard no_grad;
  const torch::Tensor input = torch::randint(0, 64, {3, 12});
  const torch::Tensor mask = torch::ones_like(input);
  const torch::Tensor full = model(input, mask, nullptr);  // [3, 12, V]
  can::KVCache cache(model->config, 3, 12, torch::TensorOptions().dtype(torch::kFloat32));
  std::vector<torch::Tensor> pieces = {model(input.slice(1, 0, 5), mask.slice(1, 0, 5), &cache)};
  for (int64_t t = 5; t < 12; ++t) {
    pieces.push_back(model(input.slice(1, t, t + 1), mask.slice(1, 0, t + 1), &cache));
  }
  EXPECT_EQ(cache.length, 12);
  EXPECT_LE(max_abs_diff(torch::cat(pieces, 1), full), 1e-5);
}

// Three sequences of lengths 6, 3 and 5 padded to width 6 on one side: ids and mask [3, 6].
const std::vector<std::vector<int64_t>> kPaddedSequences = {{1, 4, 9, 16, 25, 36}, {1, 7, 3}, {1, 11, 12, 13, 14}};
constexpr int64_t kPaddedWidth = 6;

int64_t padding_offset(int64_t row, bool left) {
  return left ? kPaddedWidth - static_cast<int64_t>(kPaddedSequences[row].size()) : 0;
}

std::pair<torch::Tensor, torch::Tensor> padded_batch(bool left) {
  torch::Tensor ids = torch::zeros({3, kPaddedWidth}, torch::kInt64);
  torch::Tensor mask = torch::zeros({3, kPaddedWidth}, torch::kInt64);
  for (int64_t row = 0; row < 3; ++row) {
    const int64_t length = kPaddedSequences[row].size(), offset = padding_offset(row, left);
    ids[row].slice(0, offset, offset + length).copy_(torch::tensor(kPaddedSequences[row]));
    mask[row].slice(0, offset, offset + length).fill_(1);
  }
  return {ids, mask};
}

// Right padding takes the fused kernel's unmasked causal path, left padding its
// masked one (a wrong choice shifts every left-padded row); the reference kernel
// must agree on both.
TEST(Llama, PaddedBatchEqualsEachSequenceAloneWithEitherAttentionKernel) {
  auto model = tiny_model();
  torch::NoGradGuard no_grad;
  for (const auto kernel : {can::AttentionKernel::Fused, can::AttentionKernel::Reference}) {
    can::set_attention_kernel(*model, kernel);
    for (const bool left : {false, true}) {
      const auto [ids, mask] = padded_batch(left);
      const torch::Tensor batched = model(ids, mask, nullptr);
      for (int64_t row = 0; row < 3; ++row) {
        const torch::Tensor alone_ids = torch::tensor(kPaddedSequences[row]).unsqueeze(0);
        const torch::Tensor alone = model(alone_ids, torch::ones_like(alone_ids), nullptr)[0];
        const int64_t length = kPaddedSequences[row].size(), offset = padding_offset(row, left);
        EXPECT_LE(max_abs_diff(batched[row].slice(0, offset, offset + length), alone), 1e-5)
            << (kernel == can::AttentionKernel::Fused ? "fused" : "reference") << ", "
            << (left ? "left" : "right") << " padding, row " << row;
      }
    }
  }
}

// The choice of the unmasked causal path: only a padding slot before a real token
// (left padding or a hole) forces the mask.
TEST(Llama, PaddingBeforeARealTokenIsDetectedInAnyRow) {
  auto mask = [](std::vector<std::vector<int64_t>> rows) {
    std::vector<torch::Tensor> tensors;
    for (const auto& row : rows) tensors.push_back(torch::tensor(row));
    return torch::stack(tensors);  // [B, S]
  };
  EXPECT_FALSE(can::padding_before_real_token(mask({{1, 1, 1}, {1, 1, 0}, {1, 0, 0}})));  // right padding, none
  EXPECT_FALSE(can::padding_before_real_token(mask({{0, 0, 0}, {1, 1, 1}})));             // an all-padding row
  EXPECT_FALSE(can::padding_before_real_token(mask({{0}})));
  EXPECT_TRUE(can::padding_before_real_token(mask({{1, 1, 1}, {0, 1, 1}})));               // left padding
  EXPECT_TRUE(can::padding_before_real_token(mask({{1, 0, 1}})));                          // a hole
}

// Fused (SDPA, grouped-query) against the matmul-softmax reference, float32, on
// the real tokens of left- and right-padded batches.
TEST(Llama, FusedAttentionEqualsReferenceOnPaddedBatches) {
  auto model = tiny_model();
  torch::NoGradGuard no_grad;
  for (const bool left : {false, true}) {
    const auto [ids, mask] = padded_batch(left);
    can::set_attention_kernel(*model, can::AttentionKernel::Reference);
    const torch::Tensor reference = model(ids, mask, nullptr);  // [3, 6, V]
    can::set_attention_kernel(*model, can::AttentionKernel::Fused);
    const torch::Tensor fused = model(ids, mask, nullptr);
    const torch::Tensor real = mask.to(torch::kBool).unsqueeze(-1);  // [3, 6, 1]
    EXPECT_LE(max_abs_diff(fused.masked_fill(~real, 0), reference.masked_fill(~real, 0)), 1e-5)
        << (left ? "left" : "right") << " padding";
    EXPECT_GT(reference.abs().max().item<double>(), 1e-2);  // the comparison is not between zeros
  }
}

// forward_at (the score model's path: the last layer's queries, MLP and norm at chosen
// slots only) against its reference, the gather of forward's output: left and right
// padding, two slots per row (one a padding slot), either kernel, and the gradient of
// every parameter through it (the reward and cost trainers use it with gradients).
TEST(Llama, ForwardAtSlotsEqualsTheFullForwardGatheredThere) {
  auto model = tiny_model();
  for (const auto kernel : {can::AttentionKernel::Fused, can::AttentionKernel::Reference}) {
    can::set_attention_kernel(*model, kernel);
    for (const bool left : {false, true}) {
      const auto [ids, mask] = padded_batch(left);  // [3, 6]
      const torch::Tensor last = mask.cumsum(1).argmax(1);                              // [3] last real token
      const torch::Tensor slots = torch::stack({last, torch::full_like(last, left ? 0 : 5)}, 1);  // [3, 2]
      const std::string label = std::string(kernel == can::AttentionKernel::Fused ? "fused" : "reference") +
                                (left ? ", left padding" : ", right padding");
      model->zero_grad();
      const torch::Tensor full = torch::take_along_dim(model->model(ids, mask), slots.unsqueeze(-1), 1);  // [3, 2, H]
      full.select(1, 0).pow(2).sum().backward();
      std::map<std::string, torch::Tensor> reference_grads;
      for (const auto& parameter : model->named_parameters()) {
        if (parameter.value().grad().defined()) reference_grads[parameter.key()] = parameter.value().grad().clone();
      }
      model->zero_grad();
      const torch::Tensor at = model->model->forward_at(ids, mask, slots);  // [3, 2, H]
      at.select(1, 0).pow(2).sum().backward();
      // Real tokens' rows equal; a padding slot is only required to be finite.
      EXPECT_LE(max_abs_diff(at.select(1, 0), full.select(1, 0)), 1e-5) << label;
      EXPECT_TRUE(torch::isfinite(at).all().item<bool>()) << label;
      EXPECT_GT(full.select(1, 0).abs().max().item<double>(), 1e-2) << label;
      EXPECT_EQ(reference_grads.size(), model->model->named_parameters().size()) << label;  // all but the head
      for (const auto& [name, grad] : reference_grads) {
        const torch::Tensor fast = model->named_parameters()[name].grad();
        ASSERT_TRUE(fast.defined()) << label << ": " << name;
        EXPECT_LE(max_abs_diff(fast, grad), 1e-5 * (1 + grad.abs().max().item<double>())) << label << ": " << name;
      }
    }
  }
  const auto [ids, mask] = padded_batch(false);
  EXPECT_THROW(model->model->forward_at(ids, mask, torch::full({3, 1}, 6, torch::kInt64)), can::Error);
  EXPECT_THROW(model->model->forward_at(ids, mask, torch::zeros({2, 1}, torch::kInt64)), can::Error);
}

// With a KV cache SDPA's top-left causal alignment would be wrong, so the cached
// paths pass a mask: a left-padded prompt, then a chunk of 3 after it, then
// single decode steps, must equal the full forward with either kernel.
TEST(Llama, CachedPrefillAndDecodeEqualFullForwardWithEitherAttentionKernel) {
  auto model = tiny_model();
  torch::NoGradGuard no_grad;
  const auto [prompt, prompt_mask] = padded_batch(/*left=*/true);  // [3, 6]
  const torch::Tensor continuation = torch::randint(3, 64, {3, 5});
  const torch::Tensor ids = torch::cat({prompt, continuation}, 1);                           // [3, 11]
  const torch::Tensor mask = torch::cat({prompt_mask, torch::ones_like(continuation)}, 1);  // [3, 11]
  const torch::Tensor real = mask.to(torch::kBool).unsqueeze(-1);
  for (const auto kernel : {can::AttentionKernel::Fused, can::AttentionKernel::Reference}) {
    can::set_attention_kernel(*model, kernel);
    const torch::Tensor full = model(ids, mask, nullptr);  // [3, 11, V]
    can::KVCache cache(model->config, 3, 11, torch::TensorOptions().dtype(torch::kFloat32));
    std::vector<torch::Tensor> pieces;
    pieces.push_back(model(prompt, prompt_mask, &cache));
    pieces.push_back(model(ids.slice(1, 6, 9), mask.slice(1, 0, 9), &cache));  // prefill after cached tokens
    for (int64_t t = 9; t < 11; ++t) pieces.push_back(model(ids.slice(1, t, t + 1), mask.slice(1, 0, t + 1), &cache));
    EXPECT_LE(max_abs_diff(torch::cat(pieces, 1).masked_fill(~real, 0), full.masked_fill(~real, 0)), 1e-5)
        << (kernel == can::AttentionKernel::Fused ? "fused" : "reference");
  }
}

TEST(Llama, TiedEmbeddingsUseTheEmbeddingMatrixAsHead) {
  auto config = tiny_config();
  config.tie_word_embeddings = true;
  can::LlamaForCausalLM model(config);
  EXPECT_TRUE(model->named_parameters().find("lm_head.weight") == nullptr);
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = torch::tensor(std::vector<int64_t>{1, 5, 6}).unsqueeze(0);
  const torch::Tensor hidden = model->model(ids, torch::ones_like(ids), nullptr);
  EXPECT_LE(max_abs_diff(model(ids, torch::ones_like(ids), nullptr),
                         torch::matmul(hidden, model->model->embed_tokens->weight.t())),
            1e-6);
}

TEST(Sampling, LengthsBeyondThePositionLimitAndNonFiniteTemperaturesAreRefusedUpFront) {
  // Found by a probe: --max-new-tokens 1000000000 ended after 20 s in a raw allocator error.
  auto model = tiny_model();
  model->eval();
  can::SamplingOptions options;
  options.max_new_tokens = 1000000000;
  const std::string message = can::testing::error_message([&] { can::sample(model, {{1, 5, 6}}, options); });
  EXPECT_TRUE(can::testing::contains(message, "prompt 0 has 3 tokens and max_new_tokens is 1000000000"))
      << message;
  EXPECT_TRUE(can::testing::contains(
      message, fmt::format("exceed the model's max_position_embeddings {}", model->config.max_position_embeddings)))
      << message;
  options.max_new_tokens = 4;
  options.temperature = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(can::testing::contains(can::testing::error_message([&] { can::sample(model, {{1, 5, 6}}, options); }),
                                     "temperature must be a finite number >= 0, got inf"));
}

TEST(Sampling, GreedyEqualsArgmaxOfFullForward) {
  auto model = tiny_model();
  can::SamplingOptions options;
  options.temperature = 0;
  options.max_new_tokens = 10;
  options.eos_id = 63;
  const std::vector<std::vector<int64_t>> prompts = {{1, 5, 9}, {1, 20}, {1, 30, 31, 32, 33}};
  const auto generations = can::sample(model, prompts, options);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int64_t> sequence = prompts[i];
    for (size_t step = 0; step < generations[i].tokens.size(); ++step) {
      const torch::Tensor ids = torch::tensor(sequence).unsqueeze(0);
      const torch::Tensor logits = model(ids, torch::ones_like(ids), nullptr)[0][-1];
      const int64_t expected = logits.argmax().item<int64_t>();
      ASSERT_EQ(generations[i].tokens[step], expected) << "prompt " << i << " step " << step;
      EXPECT_NEAR(generations[i].logprobs[step], logits.log_softmax(-1)[expected].item<double>(), 1e-5);
      sequence.push_back(expected);
    }
  }
}

TEST(Sampling, CachedSamplingEqualsRecomputingThePrefix) {
  auto model = tiny_model();
  can::SamplingOptions options;
  options.max_new_tokens = 12;
  options.top_p = 0.9;
  options.seed = 3;
  options.batch_size = 1;
  const std::vector<std::vector<int64_t>> prompts = {{1, 5, 9}, {1, 20, 21, 22}};
  const auto cached = can::sample(model, prompts, options);
  const auto recomputed = can::sample_without_cache(model, prompts, options);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(cached[i].tokens, recomputed[i].tokens);
    for (size_t t = 0; t < cached[i].logprobs.size(); ++t) {
      EXPECT_NEAR(cached[i].logprobs[t], recomputed[i].logprobs[t], 1e-5);
    }
  }
}

TEST(Sampling, ReproducibleUnderASeedAndDifferentAcrossSeeds) {
  auto model = tiny_model();
  can::SamplingOptions options;
  options.max_new_tokens = 16;
  options.eos_id = 63;
  const std::vector<std::vector<int64_t>> prompts = {{1, 5}, {1, 6}, {1, 7}, {1, 8}};
  options.seed = 11;
  const auto first = can::sample(model, prompts, options);
  const auto again = can::sample(model, prompts, options);
  options.seed = 12;
  const auto other = can::sample(model, prompts, options);
  bool any_difference = false;
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(first[i].tokens, again[i].tokens);
    any_difference = any_difference || first[i].tokens != other[i].tokens;
  }
  EXPECT_TRUE(any_difference);
}

// The nucleus on a hand example: probabilities 1/2, 1/4, 1/8, 1/8. At top_p 0.6 the
// first two reach it and the tied pair is dropped; at 0.8 the pair is needed and kept
// whole (a sort would keep one of the two); 0.5 keeps the first alone.
TEST(Sampling, TopPKeepsTheMostProbableTokensAndTiesWhole) {
  const torch::Tensor logits = torch::log(torch::tensor({{0.125f, 0.5f, 0.125f, 0.25f}}));  // [1, 4]
  auto kept = [&](double top_p) {
    const torch::Tensor filtered = can::top_p_filter(logits, top_p);
    EXPECT_TRUE(filtered.equal(can::top_p_filter_by_sorting(logits, top_p))) << "top_p " << top_p;
    return torch::isfinite(filtered)[0];
  };
  EXPECT_TRUE(kept(0.6).equal(torch::tensor({false, true, false, true})));
  EXPECT_TRUE(kept(0.8).equal(torch::tensor({true, true, true, true})));
  EXPECT_TRUE(kept(0.5).equal(torch::tensor({false, true, false, false})));
  EXPECT_TRUE(kept(1e-9).equal(torch::tensor({false, true, false, false})));
}

// The CPU selection against the sorting reference: flat, moderate and peaked rows of a
// vocabulary of 5000, with ties (logits rounded to one decimal), from a tiny top_p to
// nearly 1; a NaN row ends (every token kept) instead of looping.
TEST(Sampling, TopPSelectionEqualsTheSortingReference) {
  torch::manual_seed(3);
  for (const double scale : {0.01, 1.0, 8.0}) {
    for (const bool rounded : {false, true}) {
      torch::Tensor logits = torch::randn({48, 5000}) * scale;  // [B, V]
      if (rounded) logits = (logits * 10).round() / 10;
      for (const double top_p : {1e-6, 0.1, 0.5, 0.9, 0.999}) {
        const torch::Tensor fast = can::top_p_filter(logits, top_p);
        const torch::Tensor reference = can::top_p_filter_by_sorting(logits, top_p);
        EXPECT_TRUE(torch::isfinite(fast).equal(torch::isfinite(reference)))
            << "scale " << scale << (rounded ? ", rounded" : "") << ", top_p " << top_p;
        const int64_t kept = torch::isfinite(fast).sum().item<int64_t>();
        EXPECT_GE(kept, 48);
        if (top_p == 0.5 && scale == 1.0) {
          EXPECT_LT(kept, 48 * 5000 / 2);  // the filter drops tokens
        }
      }
    }
  }
  torch::Tensor with_nan = torch::randn({2, 100});
  with_nan[1][7] = std::numeric_limits<float>::quiet_NaN();
  const torch::Tensor fast = can::top_p_filter(with_nan, 0.9), reference = can::top_p_filter_by_sorting(with_nan, 0.9);
  EXPECT_TRUE(torch::isfinite(fast[0]).equal(torch::isfinite(reference[0])));  // the row without NaN
}

TEST(Sampling, StopsEachSequenceAtEos) {
  auto model = tiny_model();
  can::SamplingOptions options;
  options.max_new_tokens = 40;
  options.seed = 5;
  const std::vector<std::vector<int64_t>> prompts(8, std::vector<int64_t>{1, 9});
  // Make EOS the most likely token so some rows stop early and others continue.
  {
    torch::NoGradGuard no_grad;
    model->lm_head->weight[2].mul_(3.0);
  }
  options.eos_id = 2;
  const auto generations = can::sample(model, prompts, options);
  size_t stopped = 0;
  for (const auto& generation : generations) {
    ASSERT_FALSE(generation.tokens.empty());
    const auto eos_at = std::find(generation.tokens.begin(), generation.tokens.end(), 2);
    if (generation.stopped_at_eos) {
      ++stopped;
      EXPECT_EQ(eos_at, generation.tokens.end() - 1) << "tokens after EOS";
    } else {
      EXPECT_EQ(eos_at, generation.tokens.end());
      EXPECT_EQ(generation.tokens.size(), 40u);
    }
    EXPECT_EQ(generation.tokens.size(), generation.logprobs.size());
  }
  EXPECT_GT(stopped, 0u);
}

TEST(Sampling, TopKOneIsGreedy) {
  auto model = tiny_model();
  can::SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 8;
  greedy.eos_id = 63;
  can::SamplingOptions top1 = greedy;
  top1.temperature = 1.3;
  top1.top_k = 1;
  const std::vector<std::vector<int64_t>> prompts = {{1, 3, 4}};
  EXPECT_EQ(can::sample(model, prompts, greedy)[0].tokens, can::sample(model, prompts, top1)[0].tokens);
}

// Rows of the head past vocab_limit (a <pad> the tokenizer lacks) are never drawn, even when
// they dominate; the recorded log-prob stays the model's over its whole vocabulary.
TEST(Sampling, IdsPastTheVocabLimitAreNeverDrawn) {
  auto model = tiny_model();
  const int64_t vocab = model->config.vocab_size, limit = vocab - 4;
  {
    torch::NoGradGuard no_grad;
    model->lm_head->weight.slice(0, limit).mul_(50);  // the last four ids: the largest logits by far
  }
  const std::vector<std::vector<int64_t>> prompts = {{1, 3, 4}, {1, 7}};
  can::SamplingOptions options;
  options.max_new_tokens = 12;
  options.eos_id = vocab;  // never produced
  options.temperature = 0;
  bool dominated = false;
  for (const auto& generation : can::sample(model, prompts, options)) {
    for (int64_t token : generation.tokens) dominated |= token >= limit;
  }
  ASSERT_TRUE(dominated) << "the scaled rows do not win greedy decoding, so the test shows nothing";
  options.vocab_limit = limit;
  for (const double temperature : {0.0, 1.0}) {
    options.temperature = temperature;
    for (const auto& generation : can::sample(model, prompts, options)) {
      for (int64_t token : generation.tokens) EXPECT_LT(token, limit) << "temperature " << temperature;
    }
  }
  // The log-prob recorded for a greedy token is under the full vocabulary: below log(1) by the excluded mass.
  options.temperature = 0;
  const auto generation = can::sample(model, {{1, 3, 4}}, options).front();
  const auto no_cache = can::sample_without_cache(model, {{1, 3, 4}}, options).front();
  EXPECT_EQ(generation.tokens, no_cache.tokens);
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = torch::tensor(std::vector<int64_t>{1, 3, 4}).unsqueeze(0);
  const torch::Tensor full = model(ids, torch::ones_like(ids)).select(1, -1).log_softmax(-1)[0];  // [V]
  EXPECT_NEAR(generation.logprobs[0], full[generation.tokens[0]].item<double>(), 1e-5);
}

// The greedy continuations of `prompts` without any EOS, as the no-cache reference decodes them.
std::vector<std::vector<int64_t>> greedy_reference(can::LlamaForCausalLM& model,
                                                   const std::vector<std::vector<int64_t>>& prompts, int64_t steps) {
  can::SamplingOptions options;
  options.temperature = 0;
  options.max_new_tokens = steps;
  options.eos_id = model->config.vocab_size;  // never produced
  std::vector<std::vector<int64_t>> continuations;
  for (const auto& generation : can::sample_without_cache(model, prompts, options)) {
    continuations.push_back(generation.tokens);
  }
  return continuations;
}

TEST(Sampling, EosInsideASyncBlockEndsTheRowThere) {
  auto model = tiny_model();
  const std::vector<std::vector<int64_t>> prompts = {{1, 5, 9}, {1, 30, 31}};
  const auto reference = greedy_reference(model, prompts, 2 * can::kSamplingSyncInterval);
  // The first token of row 0's continuation that was not produced before, at a
  // step strictly inside the first block (the host looks only after step 15).
  int64_t eos_step = -1;
  for (int64_t step = 1; step + 1 < can::kSamplingSyncInterval && eos_step < 0; ++step) {
    const auto& row = reference[0];
    if (std::find(row.begin(), row.begin() + step, row[step]) == row.begin() + step) eos_step = step;
  }
  ASSERT_GE(eos_step, 1) << "the reference continuation repeats one token: pick another prompt";
  can::SamplingOptions options;
  options.temperature = 0;
  options.max_new_tokens = 2 * can::kSamplingSyncInterval;
  options.eos_id = reference[0][eos_step];
  const auto generations = can::sample(model, prompts, options);
  const std::vector<int64_t> expected(reference[0].begin(), reference[0].begin() + eos_step + 1);
  EXPECT_EQ(generations[0].tokens, expected);
  EXPECT_EQ(generations[0].logprobs.size(), expected.size());
  EXPECT_TRUE(generations[0].stopped_at_eos);
}

TEST(Sampling, GreedyBatchEqualsRecomputingWhenRowsFinishAtDifferentSteps) {
  auto model = tiny_model();
  const std::vector<std::vector<int64_t>> prompts = {{1, 5, 9},  {1, 20}, {1, 30, 31, 32, 33}, {1, 7, 7},
                                                     {1, 40, 3}, {1, 11}, {1, 50, 51},         {1, 60}};
  const int64_t steps = 3 * can::kSamplingSyncInterval;
  const auto reference = greedy_reference(model, prompts, steps);
  // EOS := the token whose first appearances spread over the most distinct steps.
  std::map<int64_t, std::set<int64_t>> first_steps;  // token -> steps where it first appears in some row
  for (const auto& row : reference) {
    std::set<int64_t> seen;
    for (int64_t step = 0; step < steps; ++step) {
      if (seen.insert(row[step]).second) first_steps[row[step]].insert(step);
    }
  }
  int64_t eos = -1;
  size_t spread = 0;
  for (const auto& [token, at] : first_steps) {
    if (at.size() > spread) std::tie(eos, spread) = std::make_pair(token, at.size());
  }
  ASSERT_GE(spread, 3u) << "no token ends rows at three different steps";

  can::SamplingOptions options;
  options.temperature = 0;
  options.max_new_tokens = steps;
  options.eos_id = eos;
  const auto cached = can::sample(model, prompts, options);
  const auto recomputed = can::sample_without_cache(model, prompts, options);
  std::set<size_t> lengths;
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(cached[i].tokens, recomputed[i].tokens) << "prompt " << i;
    EXPECT_EQ(cached[i].stopped_at_eos, recomputed[i].stopped_at_eos) << "prompt " << i;
    ASSERT_EQ(cached[i].logprobs.size(), recomputed[i].logprobs.size());
    for (size_t t = 0; t < cached[i].logprobs.size(); ++t) {
      EXPECT_NEAR(cached[i].logprobs[t], recomputed[i].logprobs[t], 1e-5) << "prompt " << i << " step " << t;
    }
    lengths.insert(cached[i].tokens.size());
  }
  EXPECT_GE(lengths.size(), 3u);
}

TEST(Sampling, SampledBatchOfOneEqualsRecomputingWhenEosStopsRowsEarly) {
  auto model = tiny_model();
  {
    torch::NoGradGuard no_grad;
    model->lm_head->weight[2].mul_(3.0);  // EOS likely: rows stop at different steps
  }
  can::SamplingOptions options;
  options.max_new_tokens = 2 * can::kSamplingSyncInterval;
  options.seed = 9;
  options.top_p = 0.95;
  options.eos_id = 2;
  options.batch_size = 1;
  const std::vector<std::vector<int64_t>> prompts(6, std::vector<int64_t>{1, 9});
  const auto cached = can::sample(model, prompts, options);
  const auto recomputed = can::sample_without_cache(model, prompts, options);
  size_t stopped = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(cached[i].tokens, recomputed[i].tokens) << "prompt " << i;
    stopped += cached[i].stopped_at_eos ? 1 : 0;
  }
  EXPECT_GT(stopped, 0u);
}

// A row's random draws are its own: rows that finish (and leave the batch at the
// next host check) change nothing for the others, so the host-check interval
// cannot change any result.
TEST(Sampling, FinishingRowsDoNotChangeTheDrawsOfOtherRows) {
  auto model = tiny_model();
  {
    torch::NoGradGuard no_grad;
    model->lm_head->weight[2].mul_(2.5);
  }
  can::SamplingOptions options;
  options.max_new_tokens = 3 * can::kSamplingSyncInterval;
  options.seed = 4;
  const std::vector<std::vector<int64_t>> prompts(8, std::vector<int64_t>{1, 9});
  options.eos_id = model->config.vocab_size;  // never produced: every row runs to the end
  const auto unstopped = can::sample(model, prompts, options);
  options.eos_id = 2;
  const auto stopped = can::sample(model, prompts, options);
  size_t early = 0, late = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& full = unstopped[i].tokens;
    const auto eos_at = std::find(full.begin(), full.end(), 2);
    const std::vector<int64_t> expected(full.begin(), eos_at == full.end() ? full.end() : eos_at + 1);
    EXPECT_EQ(stopped[i].tokens, expected) << "prompt " << i;
    const auto eos_step = eos_at - full.begin();
    early += eos_step < can::kSamplingSyncInterval ? 1 : 0;
    late += eos_step >= can::kSamplingSyncInterval ? 1 : 0;
  }
  EXPECT_GT(early, 0u) << "no row left the batch at the first host check";
  EXPECT_GT(late, 0u) << "no row decoded past the first host check";
}

TEST(ModelWeights, LoadingNamesMissingUnexpectedAndMisshapedTensors) {
  auto model = tiny_model();
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [name, tensor] : can::named_tensors(*model)) tensors[name] = tensor.clone();
  tensors.erase("model.layers.1.mlp.up_proj.weight");
  tensors["model.layers.9.extra.weight"] = torch::zeros({2});
  tensors["model.norm.weight"] = torch::zeros({31});
  try {
    can::load_named_tensors(*model, tensors, "ckpt-dir");
    FAIL() << "expected can::Error";
  } catch (const can::Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("ckpt-dir"), std::string::npos) << message;
    EXPECT_NE(message.find("missing tensors: model.layers.1.mlp.up_proj.weight"), std::string::npos) << message;
    EXPECT_NE(message.find("unexpected tensors: model.layers.9.extra.weight"), std::string::npos) << message;
    EXPECT_NE(message.find("mis-shaped tensors: model.norm.weight (checkpoint [31], model [32])"), std::string::npos)
        << message;
  }
}

TEST(ModelWeights, LoadingCopiesEveryTensor) {
  auto source = tiny_model(1);
  auto target = tiny_model(2);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [name, tensor] : can::named_tensors(*source)) tensors[name] = tensor;
  can::load_named_tensors(*target, tensors, "memory");
  for (const auto& [name, tensor] : can::named_tensors(*target)) EXPECT_TRUE(tensor.equal(tensors.at(name))) << name;
}

TEST(ModelWeights, LoadingRefusesNonFiniteWeightsNamingTheTensors) {
  // Found by a probe: can-sample and can-score ran such models and printed token 0 and NaN scores.
  auto model = tiny_model();
  can::testing::TemporaryDirectory folder;
  const std::string directory = (folder.path() / "model").string();
  {
    torch::NoGradGuard no_grad;
    model->model->norm->weight[3] = std::numeric_limits<float>::quiet_NaN();
    model->lm_head->weight[0][1] = std::numeric_limits<float>::infinity();
  }
  can::save_causal_lm(model, directory);
  const std::string message = can::testing::error_message([&] { can::load_causal_lm(directory); });
  EXPECT_TRUE(can::testing::contains(message, directory)) << message;
  EXPECT_TRUE(can::testing::contains(message, "tensors holding NaN or Inf values: ")) << message;
  EXPECT_TRUE(can::testing::contains(message, "model.norm.weight")) << message;
  EXPECT_TRUE(can::testing::contains(message, "lm_head.weight")) << message;
}

TEST(ModelWeights, LoadingRefusesIntegerTensorsForFloatingPointWeights) {
  // Found by a probe: an I32 tensor was cast to float and loaded as if it were weights.
  auto model = tiny_model();
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [name, tensor] : can::named_tensors(*model)) tensors[name] = tensor.clone();
  tensors["model.norm.weight"] = torch::ones({32}, torch::kInt);
  const std::string message = can::testing::error_message([&] { can::load_named_tensors(*model, tensors, "ckpt"); });
  EXPECT_TRUE(can::testing::contains(message, "integer tensors for floating-point weights: model.norm.weight "
                                              "(checkpoint int, model float)"))
      << message;
}

TEST(ModelWeights, ATiedModelTakesAStoredHeadOnlyWhenItIsTheEmbedding) {
  // Found by a probe: tie_word_embeddings silently dropped a different lm_head.weight.
  can::LlamaConfig config = can::testing::tiny_llama_config(64);
  config.tie_word_embeddings = true;
  torch::manual_seed(3);
  can::LlamaForCausalLM model(config);
  can::testing::TemporaryDirectory folder;
  const std::string directory = (folder.path() / "model").string();
  auto tensors = can::named_tensors(*model);
  const torch::Tensor embedding = model->model->embed_tokens->weight.detach();
  tensors.emplace_back("lm_head.weight", embedding.clone());  // stored again, equal: loads
  can::save_checkpoint(directory, config.to_json("LlamaForCausalLM"), tensors);
  EXPECT_TRUE(can::load_causal_lm(directory)->model->embed_tokens->weight.equal(embedding));
  tensors.back().second = embedding + 1;  // a different head: refused, not dropped
  can::save_checkpoint(directory, config.to_json("LlamaForCausalLM"), tensors);
  const std::string message = can::testing::error_message([&] { can::load_causal_lm(directory); });
  EXPECT_TRUE(can::testing::contains(message, directory)) << message;
  EXPECT_TRUE(can::testing::contains(message, "lm_head.weight differs from model.embed_tokens.weight")) << message;
}

TEST(Llama, SaveThenLoadGivesIdenticalLogits) {
  auto model = tiny_model();
  const auto directory = std::filesystem::temp_directory_path() / "can_llama_roundtrip";
  can::remove_tree(directory);
  can::save_causal_lm(model, directory.string());
  auto loaded = can::load_causal_lm(directory.string());
  loaded->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = torch::randint(0, 64, {2, 9});
  EXPECT_TRUE(model(ids, torch::ones_like(ids), nullptr).equal(loaded(ids, torch::ones_like(ids), nullptr)));
  // bf16 weights come back as float32 unless a dtype is asked for.
  model->to(torch::kBFloat16);
  can::save_causal_lm(model, directory.string());
  EXPECT_EQ(can::load_causal_lm(directory.string())->parameters().front().scalar_type(), torch::kFloat32);
  EXPECT_EQ(can::load_causal_lm(directory.string(), torch::kCPU, torch::kBFloat16)->parameters().front().scalar_type(),
            torch::kBFloat16);
  can::remove_tree(directory);
}

TEST(LlamaConfig, ParsesHuggingFaceFieldsAndRejectsBadValues) {
  nlohmann::json json = {{"vocab_size", 100},          {"hidden_size", 64},        {"intermediate_size", 128},
                         {"num_hidden_layers", 2},     {"num_attention_heads", 8}, {"num_key_value_heads", 2},
                         {"rms_norm_eps", 1e-5},       {"rope_theta", 10000.0},    {"tie_word_embeddings", false},
                         {"eos_token_id", {2, 7}},     {"pad_token_id", nullptr},  {"hidden_act", "silu"}};
  const auto config = can::LlamaConfig::from_json(json, "config.json");
  EXPECT_EQ(config.head_dim(), 8);
  EXPECT_EQ(config.num_key_value_heads, 2);
  EXPECT_EQ(config.eos_token_id, 2);
  EXPECT_EQ(config.pad_token_id, -1);
  const auto round_trip = can::LlamaConfig::from_json(config.to_json("LlamaForCausalLM"), "again");
  EXPECT_EQ(round_trip.to_json("LlamaForCausalLM"), config.to_json("LlamaForCausalLM"));

  auto expect_error = [](nlohmann::json bad, const std::string& fragment) {
    try {
      can::LlamaConfig::from_json(bad, "dir/config.json");
      ADD_FAILURE() << "expected an error containing " << fragment;
    } catch (const can::Error& error) {
      EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
      EXPECT_NE(std::string(error.what()).find("dir/config.json"), std::string::npos) << error.what();
    }
  };
  auto without = json;
  without.erase("hidden_size");
  expect_error(without, "missing field 'hidden_size'");
  auto wrong_type = json;
  wrong_type["num_hidden_layers"] = "two";
  expect_error(wrong_type, "field 'num_hidden_layers' must be an integer");
  auto bad_groups = json;
  bad_groups["num_key_value_heads"] = 3;
  expect_error(bad_groups, "not a multiple of num_key_value_heads");
  auto gemma = json;
  gemma["model_type"] = "gemma";  // another architecture's config: refused, not read as Llama
  expect_error(gemma, "model_type 'gemma' is not supported");
  auto scaled = json;
  scaled["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  expect_error(scaled, "rope_scaling: rope_type 'linear' is not supported");
  auto mlp_bias = json;
  mlp_bias["mlp_bias"] = true;
  expect_error(mlp_bias, "mlp_bias true is not supported");
  auto dropout = json;
  dropout["attention_dropout"] = 0.1;
  expect_error(dropout, "attention_dropout 0.1 is not supported");
  auto sliding_layers = json;
  sliding_layers["layer_types"] = {"full_attention", "sliding_attention"};
  expect_error(sliding_layers, "layer_types lists \"sliding_attention\"");
  // transformers 5 moves rope_theta into rope_parameters.
  auto version5 = json;
  version5.erase("rope_theta");
  version5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5000.0}};
  EXPECT_EQ(can::LlamaConfig::from_json(version5, "config.json").rope_theta, 5000.0);
  version5["rope_parameters"]["rope_type"] = "yarn";
  expect_error(version5, "rope_parameters: rope_type 'yarn' is not supported");

  // The other families: Qwen2 (q/k/v biases, its sliding window off), Mistral (no sliding window).
  auto qwen2 = json;
  qwen2["model_type"] = "qwen2";
  qwen2["use_sliding_window"] = false;
  qwen2["sliding_window"] = 4096;
  const auto qwen = can::LlamaConfig::from_json(qwen2, "config.json");
  EXPECT_TRUE(qwen.qkv_bias);
  EXPECT_FALSE(qwen.o_bias);
  EXPECT_EQ(qwen.to_json("LlamaForCausalLM").at("architectures"), nlohmann::json::array({"Qwen2ForCausalLM"}));
  EXPECT_EQ(can::LlamaConfig::from_json(qwen.to_json("LlamaForCausalLM"), "again").to_json("LlamaForCausalLM"),
            qwen.to_json("LlamaForCausalLM"));
  qwen2["use_sliding_window"] = true;
  expect_error(qwen2, "use_sliding_window true enables sliding-window attention");
  auto mistral = json;
  mistral["model_type"] = "mistral";
  mistral["sliding_window"] = nullptr;
  EXPECT_FALSE(can::LlamaConfig::from_json(mistral, "config.json").qkv_bias);
  mistral["sliding_window"] = 4096;
  expect_error(mistral, "sliding_window 4096 enables sliding-window attention");
  mistral["sliding_window"] = nullptr;
  mistral["attention_bias"] = true;
  expect_error(mistral, "attention_bias true is not supported for model_type 'mistral'");
  auto biased = json;
  biased["attention_bias"] = true;  // Llama's: all four projections
  const auto llama_biased = can::LlamaConfig::from_json(biased, "config.json");
  EXPECT_TRUE(llama_biased.qkv_bias && llama_biased.o_bias);
  // An explicit head_dim need not be hidden_size / heads; it must be even.
  auto wide_heads = json;
  wide_heads["head_dim"] = 16;
  EXPECT_EQ(can::LlamaConfig::from_json(wide_heads, "config.json").head_dim(), 16);
  wide_heads["head_dim"] = 15;
  expect_error(wide_heads, "head_dim 15 must be a positive even integer");
  // Llama 3's scaling, from transformers 5's rope_parameters or the older rope_scaling; a field missing is named.
  auto llama3 = json;
  llama3["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  const auto scaled3 = can::LlamaConfig::from_json(llama3, "config.json");
  ASSERT_TRUE(scaled3.rope_scaling.has_value());
  EXPECT_EQ(scaled3.rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_EQ(can::LlamaConfig::from_json(scaled3.to_json("LlamaForCausalLM"), "again").rope_scaling->factor, 8.0);
  llama3["rope_scaling"].erase("low_freq_factor");
  expect_error(llama3, "rope_scaling: missing field 'low_freq_factor'");
}

// Llama 3's frequencies by its rule, in double: wavelengths above C / low_freq_factor divided by
// the factor, below C / high_freq_factor kept, between them interpolated in C / wavelength.
TEST(LlamaConfig, Llama3RopeScalingStretchesLowFrequenciesAndKeepsHighOnes) {
  can::LlamaConfig config;
  config.hidden_size = 64;
  config.num_attention_heads = 2;  // head_dim 32: 16 frequencies
  config.rope_theta = 5e5;
  config.rope_scaling = can::Llama3RopeScaling{8.0, 1.0, 4.0, 64};
  const auto scaled = can::rotary_inverse_frequencies(config);
  ASSERT_EQ(scaled.numel(), 16);
  int bands[3] = {0, 0, 0};  // kept, interpolated, stretched
  for (int64_t i = 0; i < 16; ++i) {
    const double plain = 1.0 / std::pow(5e5, 2.0 * static_cast<double>(i) / 32.0);
    const double wavelength = 2 * M_PI / plain;
    double expected = plain;
    if (wavelength > 64.0) {
      expected = plain / 8.0;
      ++bands[2];
    } else if (wavelength >= 16.0) {
      const double smooth = (64.0 / wavelength - 1.0) / (4.0 - 1.0);
      expected = (1 - smooth) * plain / 8.0 + smooth * plain;
      ++bands[1];
    } else {
      ++bands[0];
    }
    EXPECT_NEAR(scaled[i].item<double>(), expected, 1e-6 * expected) << "frequency " << i;
  }
  EXPECT_GT(bands[0], 0);
  EXPECT_GT(bands[1], 0);
  EXPECT_GT(bands[2], 0);
}

}  // namespace
