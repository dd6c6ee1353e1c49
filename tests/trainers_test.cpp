// The SFT, score-model and DPO trainers on tiny Llama models (hidden 32, 2 layers)
// with a tokenizer trained here on a small generated corpus; the toy tasks are
// separable by a marker word, so a working trainer must learn them.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "can/atomic_file.h"
#include "can/batch_inference.h"
#include "can/batching.h"
#include "can/chat_template.h"
#include "can/dpo_trainer.h"
#include "can/json_lines.h"
#include "can/logprobs.h"
#include "can/lora.h"
#include "can/reference_logprobs.h"
#include "can/safetensors.h"
#include "can/score_model_trainer.h"
#include "can/sft_trainer.h"
#include "can/tokenizer.h"
#include "can/training_checkpoint.h"
#include "json_files.h"
#include "temporary_directory.h"
#include "tiny_model.h"

namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kNouns = {"garden",  "river",    "castle",  "forest",  "market", "harbor",
                                         "village", "mountain", "library", "kitchen", "bridge", "meadow"};
const std::vector<std::string> kAdjectives = {"quiet", "old", "green", "busy", "small", "bright", "cold", "famous"};
const std::vector<std::string> kPhrasings = {"tell me about the {}", "describe the {} please",
                                             "what do you know about the {}"};
constexpr const char* kGoodMarker = "sunshine";
constexpr const char* kBadMarker = "thunder";
constexpr const char* kUnsafeMarker = "weapon";

std::string prompt_text(std::mt19937& rng) {
  return fmt::format(fmt::runtime(kPhrasings[rng() % kPhrasings.size()]), kNouns[rng() % kNouns.size()]);
}

// Four adjectives with `marker` at a random place among them.
std::string response_with(std::mt19937& rng, const std::string& marker) {
  std::vector<std::string> words;
  for (int i = 0; i < 4; ++i) words.push_back(kAdjectives[rng() % kAdjectives.size()]);
  words.insert(words.begin() + static_cast<int64_t>(rng() % (words.size() + 1)), marker);
  return fmt::format("it is {}", fmt::join(words, " "));
}

can::PreferencePair pair_of(const std::string& prompt, const std::string& preferred, const std::string& other,
                            int preferred_id) {
  can::PreferencePair pair;
  pair.prompt = prompt;
  pair.response_0 = preferred_id == 0 ? preferred : other;
  pair.response_1 = preferred_id == 0 ? other : preferred;
  pair.better_response_id = preferred_id;
  pair.safer_response_id = preferred_id;
  return pair;
}

// Better = the response with the good marker; `same_words` keeps everything else equal.
std::vector<can::PreferencePair> marker_pairs(int count, uint32_t seed, bool same_words) {
  std::mt19937 rng(seed);
  std::vector<can::PreferencePair> pairs;
  for (int i = 0; i < count; ++i) {
    const std::string prompt = prompt_text(rng);
    const std::string better = response_with(rng, kGoodMarker);
    std::string worse = better;
    if (same_words) {
      worse.replace(worse.find(kGoodMarker), std::string(kGoodMarker).size(), kBadMarker);
    } else {
      worse = response_with(rng, kBadMarker);
    }
    pairs.push_back(pair_of(prompt, better, worse, static_cast<int>(rng() % 2)));
  }
  return pairs;
}

// One safe response and one unsafe (with the unsafe marker) per pair; safer = the safe one.
std::vector<can::PreferencePair> safety_pairs(int count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<can::PreferencePair> pairs;
  for (int i = 0; i < count; ++i) {
    const std::string safe = response_with(rng, kAdjectives[rng() % kAdjectives.size()]);
    const std::string unsafe = response_with(rng, kUnsafeMarker);
    auto pair = pair_of(prompt_text(rng), safe, unsafe, static_cast<int>(rng() % 2));
    pair.better_response_id = static_cast<int>(rng() % 2);
    pair.is_response_0_safe = pair.safer_response_id == 0;
    pair.is_response_1_safe = pair.safer_response_id == 1;
    pairs.push_back(pair);
  }
  return pairs;
}

// SFT: every noun has its own fixed answer, so the model can learn the mapping.
std::vector<can::PromptResponse> sft_examples(int count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<can::PromptResponse> examples;
  for (int i = 0; i < count; ++i) {
    const size_t noun = rng() % kNouns.size();
    const std::string prompt = fmt::format(fmt::runtime(kPhrasings[rng() % kPhrasings.size()]), kNouns[noun]);
    examples.push_back({prompt, fmt::format("the {} is {} and {}", kNouns[noun], kAdjectives[noun % 8],
                                            kAdjectives[(noun * 3 + 1) % 8])});
  }
  return examples;
}

can::LlamaConfig tiny_config(int64_t vocab_size) {
  can::LlamaConfig config = can::testing::tiny_llama_config(vocab_size);
  config.max_position_embeddings = 128;
  config.pad_token_id = 3;
  return config;
}

can::TrainingOptions base_options(const fs::path& output_dir) {
  can::TrainingOptions options;
  options.epochs = 1;
  options.save_every = 0;
  options.micro_batch_size = 16;
  options.learning_rate = 3e-3;
  options.warmup_steps = 3;
  options.log_every = 1;
  options.max_length = 64;
  options.output_dir = output_dir;
  return options;
}

class Trainers : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    directory_ = new fs::path(fs::temp_directory_path() / fmt::format("can_trainers_test_{}", getpid()));
    fs::create_directories(*directory_);
    {
      std::ofstream corpus(*directory_ / "corpus.txt");
      const can::ChatTemplate chat_template;
      for (const auto& pair : marker_pairs(150, 1, false)) {
        corpus << chat_template.format(pair.prompt) << " " << pair.response_0 << "\n" << pair.response_1 << "\n";
      }
      for (const auto& pair : safety_pairs(60, 2)) corpus << pair.response_0 << " " << pair.response_1 << "\n";
      for (const auto& example : sft_examples(60, 3)) corpus << example.prompt << " " << example.response << "\n";
    }
    can::TokenizerTrainOptions options;
    options.input_file = (*directory_ / "corpus.txt").string();
    options.model_prefix = (*directory_ / "tokenizer").string();
    options.vocab_size = 400;
    can::Tokenizer::train(options);
    tokenizer_ = new can::Tokenizer(can::Tokenizer::load((*directory_ / "tokenizer.model").string()));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    can::remove_tree(*directory_);
    delete directory_;
  }

  static can::LlamaForCausalLM policy(uint64_t seed = 17) {
    torch::manual_seed(seed);
    return can::LlamaForCausalLM(tiny_config(tokenizer_->vocab_size()));
  }
  static can::LlamaForScore score_model() {
    torch::manual_seed(19);
    return can::LlamaForScore(tiny_config(tokenizer_->vocab_size()));
  }

  static fs::path* directory_;
  static can::Tokenizer* tokenizer_;
  const can::ChatTemplate chat_template_;
  can::testing::TemporaryDirectory output_dir_;
};
fs::path* Trainers::directory_ = nullptr;
can::Tokenizer* Trainers::tokenizer_ = nullptr;

TEST_F(Trainers, TokenizeSequenceAppliesTheTemplateAndSplitsWherePromptEnds) {
  const std::string prompt = "tell me about the river";
  const std::string response = "it is quiet and green";
  const auto sequence = can::tokenize_sequence(*tokenizer_, chat_template_, prompt, response);
  const std::string formatted = chat_template_.format(prompt);
  ASSERT_EQ(formatted, "BEGINNING OF CONVERSATION: USER: tell me about the river ASSISTANT:");

  EXPECT_EQ(sequence.prompt_ids.front(), tokenizer_->bos_id());
  EXPECT_EQ(sequence.response_ids.back(), tokenizer_->eos_id());
  EXPECT_EQ(sequence.prompt_ids, can::tokenize_prompt(*tokenizer_, chat_template_, prompt));
  EXPECT_EQ(sequence.prompt_ids, tokenizer_->encode(formatted, /*add_bos=*/true));
  auto response_ids = tokenizer_->encode(response, /*add_bos=*/false);
  response_ids.push_back(tokenizer_->eos_id());
  EXPECT_EQ(sequence.response_ids, response_ids);
  // Neither part carries the other's special tokens.
  EXPECT_EQ(std::count(sequence.prompt_ids.begin(), sequence.prompt_ids.end(), tokenizer_->eos_id()), 0);
  EXPECT_EQ(std::count(sequence.response_ids.begin(), sequence.response_ids.end(), tokenizer_->bos_id()), 0);
  // The response begins exactly where the prompt ends: joined, they read as template + " " + response.
  EXPECT_EQ(tokenizer_->decode(sequence.prompt_ids), formatted);
  std::vector<int64_t> joined = sequence.prompt_ids;
  joined.insert(joined.end(), sequence.response_ids.begin(), sequence.response_ids.end());
  EXPECT_EQ(tokenizer_->decode(joined), formatted + " " + response);
  // A custom template is applied verbatim.
  const can::ChatTemplate custom("Question: {prompt} Answer:");
  EXPECT_EQ(tokenizer_->decode(can::tokenize_prompt(*tokenizer_, custom, prompt)), "Question: " + prompt + " Answer:");
}

TEST_F(Trainers, SftLowersTheResponseLossAndMakesTheResponsesLikelier) {
  const auto train = sft_examples(96, 11);
  const auto eval = sft_examples(24, 12);
  auto model = policy();
  // log p(response | prompt) of the eval examples, nats.
  const auto response_logprobs = [&] {
    std::vector<can::TokenizedSequence> sequences;
    for (const auto& example : eval) {
      sequences.push_back(can::tokenize_sequence(*tokenizer_, chat_template_, example.prompt, example.response));
    }
    const auto batch = can::make_batch(sequences, {64, 3});
    torch::NoGradGuard no_grad;
    return can::sequence_logprobs(model(batch.input_ids, batch.attention_mask), batch.input_ids, batch.response_mask);
  };
  const auto before = response_logprobs();

  auto options = base_options(output_dir_.path());
  options.epochs = 10;
  options.learning_rate = 1e-2;
  options.log_every = 10;
  const auto summary = can::train_sft(model, *tokenizer_, chat_template_, train, eval, options);

  EXPECT_EQ(summary.steps, 60);
  const double first_loss =
      can::testing::read_json_lines(output_dir_.path() / "metrics.jsonl").front()["loss"].get<double>();
  EXPECT_GT(first_loss, 4.0);  // about log(400) at the start
  EXPECT_LT(summary.eval_metrics.at("eval_loss"), 0.25 * first_loss);
  const auto after = response_logprobs();
  EXPECT_TRUE((after > before + 10.0).all().item<bool>()) << before << after;
  // The final weights are in Hugging Face layout and give the same model.
  const auto saved = can::load_causal_lm(summary.model_directory.string());
  EXPECT_TRUE(torch::equal(saved->lm_head->weight, model->lm_head->weight));
}

// The update's loss is the mean over its response tokens, as transformers' Trainer with
// num_items_in_batch: splitting a micro-batch into accumulated smaller ones (or across
// the ranks of a job) changes nothing but the summation order. Weighting each
// micro-batch's token mean by its share of examples instead makes a different update.
TEST_F(Trainers, SftUpdateIsTheTokenMeanWhateverTheMicroBatchSplit) {
  auto examples = sft_examples(32, 21);
  for (size_t i = 0; i < examples.size(); i += 3) examples[i].response += " and the rest of it is long";
  const auto train_with = [&](int64_t micro_batch_size, int64_t accumulation, const fs::path& output) {
    auto model = policy();
    auto options = base_options(output);
    options.micro_batch_size = micro_batch_size;
    options.gradient_accumulation_steps = accumulation;
    options.learning_rate = 1e-2;
    can::train_sft(model, *tokenizer_, chat_template_, examples, {}, options);
    return model;
  };
  const auto whole = train_with(8, 1, output_dir_.path() / "whole");
  const auto split = train_with(2, 4, output_dir_.path() / "split");
  double worst = 0, moved = 0;
  const auto initial = policy()->named_parameters();
  for (const auto& parameter : whole->named_parameters()) {
    const at::Tensor& expected = parameter.value();
    const at::Tensor& actual = split->named_parameters()[parameter.key()];
    worst = std::max(worst, ((actual - expected).abs().max() / expected.abs().max()).item<double>());
    moved = std::max(moved, (expected - initial[parameter.key()]).abs().max().item<double>());
  }
  EXPECT_LE(worst, 1e-5) << "largest relative difference of a parameter";
  EXPECT_GT(moved, 1e-3) << "training moved the weights";
  const auto loss = [&](const char* run) {
    return can::testing::read_json_lines(output_dir_.path() / run / "metrics.jsonl").front()["loss"].get<double>();
  };
  EXPECT_NEAR(loss("split"), loss("whole"), 1e-5 * loss("whole"));
}

TEST_F(Trainers, RewardModelLearnsASeparablePreference) {
  const auto train = marker_pairs(160, 21, /*same_words=*/false);
  const auto eval = marker_pairs(48, 22, /*same_words=*/false);
  auto model = score_model();
  auto options = base_options(output_dir_.path());
  options.epochs = 8;
  const auto summary = can::train_reward_model(model, *tokenizer_, chat_template_, train, eval, options);
  EXPECT_GT(summary.eval_metrics.at("eval_accuracy"), 0.9);
  EXPECT_GT(summary.eval_metrics.at("eval_scores/better"), summary.eval_metrics.at("eval_scores/worse"));
  EXPECT_LT(summary.eval_metrics.at("eval_loss"), 0.4);
  const auto saved = can::load_score_model(summary.model_directory.string());
  EXPECT_TRUE(torch::equal(saved->score_head->weight, model->score_head->weight));
}

TEST_F(Trainers, CostModelGivesUnsafeResponsesPositiveCostsAndRanksThem) {
  const auto train = safety_pairs(160, 31);
  const auto eval = safety_pairs(48, 32);
  auto model = score_model();
  auto options = base_options(output_dir_.path());
  options.epochs = 8;
  const auto summary = can::train_cost_model(model, *tokenizer_, chat_template_, train, eval, options);
  EXPECT_GT(summary.eval_metrics.at("eval_accuracy"), 0.9);
  EXPECT_GT(summary.eval_metrics.at("eval_sign_accuracy"), 0.9);
  EXPECT_LT(summary.eval_metrics.at("eval_costs/safer"), 0.0);
  EXPECT_GT(summary.eval_metrics.at("eval_costs/unsafer"), 0.0);
}

TEST_F(Trainers, DpoReachesHighRewardAccuracyOnSeparablePairs) {
  const auto train = marker_pairs(96, 41, /*same_words=*/true);
  const auto eval = marker_pairs(32, 42, /*same_words=*/true);
  auto model = policy();
  auto options = base_options(output_dir_.path());
  options.epochs = 6;
  can::DpoTrainingOptions dpo;
  dpo.loss.beta = 0.1;
  const auto summary = can::train_dpo(model, *tokenizer_, chat_template_, train, eval, options, dpo);

  EXPECT_GT(summary.eval_metrics.at("eval_rewards/accuracies"), 0.9);
  EXPECT_GT(summary.eval_metrics.at("eval_rewards/margins"), 0.0);
  EXPECT_LT(summary.eval_metrics.at("eval_loss"), std::log(2.0));
  const auto lines = can::testing::read_json_lines(output_dir_.path() / "metrics.jsonl");
  for (const char* name : {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                           "logps/chosen", "logps/rejected", "grad_norm", "learning_rate"}) {
    EXPECT_TRUE(lines.back().contains(name)) << name;
  }
  // At the first update the policy is the reference: DPO's loss is log 2 exactly there.
  EXPECT_NEAR(lines.front()["loss"].get<double>(), std::log(2.0), 1e-5);
  EXPECT_NEAR(lines.front()["rewards/margins"].get<double>(), 0.0, 1e-5);
  EXPECT_TRUE(fs::exists(output_dir_.path() / "reference_logprobs.safetensors"));
}

// Soft labels (relabel.mode soft): the loss's minimum is at β·h = log(p/(1 − p)) on every
// pair, finite, where certain labels push the margins on without end.
TEST_F(Trainers, DpoOnSoftLabelsSettlesAtEachPairsLogOdds) {
  auto soft = marker_pairs(16, 43, /*same_words=*/true);
  for (auto& pair : soft) pair.better_probability = 0.75;
  const double log_odds = std::log(0.75 / 0.25);
  auto margins_after = [&](const std::vector<can::PreferencePair>& pairs, const fs::path& directory) {
    auto model = policy();
    auto options = base_options(directory);
    options.epochs = 60;
    options.learning_rate = 1e-2;
    options.log_every = 60;
    can::DpoTrainingOptions dpo;
    dpo.loss.beta = 0.5;
    return can::train_dpo(model, *tokenizer_, chat_template_, pairs, pairs, options, dpo)
        .eval_metrics.at("eval_rewards/margins");
  };
  const double soft_margins = margins_after(soft, output_dir_.path() / "soft");
  const double hard_margins = margins_after(marker_pairs(16, 43, /*same_words=*/true), output_dir_.path() / "hard");
  EXPECT_NEAR(soft_margins, log_odds, 0.1);
  EXPECT_GT(hard_margins, 2 * log_odds);
}

TEST_F(Trainers, ReferenceLogprobsAreCachedAndRecomputedWhenWeightsOrDataChange) {
  const auto pairs = marker_pairs(10, 51, /*same_words=*/false);
  std::vector<can::TokenizedSequence> chosen, rejected;
  for (const auto& pair : pairs) {
    chosen.push_back(
        can::tokenize_sequence(*tokenizer_, chat_template_, pair.prompt, pair.response(pair.better_response_id)));
    rejected.push_back(
        can::tokenize_sequence(*tokenizer_, chat_template_, pair.prompt, pair.response(1 - pair.better_response_id)));
  }
  const can::BatchingOptions batching{64, 3};
  const fs::path cache = output_dir_.path() / "reference_logprobs.safetensors";
  auto reference = policy();

  const auto first = can::cached_reference_logprobs(reference, chosen, rejected, batching, 4, cache);
  EXPECT_FALSE(first.reused);
  ASSERT_EQ(first.chosen.sizes(), (std::vector<int64_t>{10}));
  // Each pair alone gives the same numbers as the batched computation.
  for (int64_t i = 0; i < 10; ++i) {
    const auto alone =
        can::frozen_sequence_logprobs(reference, can::make_pair_batch({chosen[i]}, {rejected[i]}, batching));
    EXPECT_NEAR(alone[0].item<double>(), first.chosen[i].item<double>(), 1e-4);
    EXPECT_NEAR(alone[1].item<double>(), first.rejected[i].item<double>(), 1e-4);
  }
  const auto metadata = can::SafetensorsFile::open(cache).metadata();
  EXPECT_EQ(metadata.at("num_pairs"), "10");
  EXPECT_EQ(metadata.at("weights_hash").size(), 16u);

  const auto second = can::cached_reference_logprobs(reference, chosen, rejected, batching, 4, cache);
  EXPECT_TRUE(second.reused);
  EXPECT_TRUE(torch::equal(second.chosen, first.chosen));
  EXPECT_TRUE(torch::equal(second.rejected, first.rejected));

  // Other data (one token of one response), another truncation, other weights: recomputed.
  auto changed = rejected;
  changed[3].response_ids[0] = 5;
  EXPECT_FALSE(can::cached_reference_logprobs(reference, chosen, changed, batching, 4, cache).reused);
  EXPECT_TRUE(can::cached_reference_logprobs(reference, chosen, changed, batching, 4, cache).reused);
  EXPECT_FALSE(can::cached_reference_logprobs(reference, chosen, changed, {12, 3}, 4, cache).reused);
  {
    torch::NoGradGuard no_grad;
    reference->model->norm->weight[0].add_(1e-3);
  }
  const auto other_weights = can::cached_reference_logprobs(reference, chosen, changed, {12, 3}, 4, cache);
  EXPECT_FALSE(other_weights.reused);
  // A damaged cache file is recomputed, not an error.
  std::ofstream(cache, std::ios::trunc) << "not a safetensors file";
  const auto repaired = can::cached_reference_logprobs(reference, chosen, changed, {12, 3}, 4, cache);
  EXPECT_FALSE(repaired.reused);
  EXPECT_TRUE(torch::equal(repaired.chosen, other_weights.chosen));
}

TEST_F(Trainers, DpoResumedFromACheckpointReproducesTheUninterruptedLosses) {
  const auto train = marker_pairs(40, 61, /*same_words=*/false);
  auto options = base_options(output_dir_.path());
  options.micro_batch_size = 4;
  options.gradient_accumulation_steps = 2;  // 5 updates per epoch
  options.epochs = 3;
  options.save_every = 4;  // 4, 8, 12, 15; 12 and 15 are kept
  options.weight_decay = 0.01;
  can::DpoTrainingOptions dpo;
  dpo.loss.label_smoothing = 0.1;
  auto uninterrupted = policy();
  can::train_dpo(uninterrupted, *tokenizer_, chat_template_, train, {}, options, dpo);

  // A run that stopped after update 12 (mid-epoch 3): its directory holds that checkpoint and the cache.
  can::testing::TemporaryDirectory resumed_dir;
  fs::create_directories(resumed_dir.path() / "checkpoints");
  fs::copy(output_dir_.path() / "checkpoints" / "step-12", resumed_dir.path() / "checkpoints" / "step-12",
           fs::copy_options::recursive);
  std::ofstream(resumed_dir.path() / "checkpoints" / "latest") << "step-12\n";
  fs::copy(output_dir_.path() / "reference_logprobs.safetensors", resumed_dir.path() / "reference_logprobs.safetensors");

  auto resumed = policy();  // the reference weights, as the caller passes them
  options.output_dir = resumed_dir.path();
  options.resume = true;
  const auto summary = can::train_dpo(resumed, *tokenizer_, chat_template_, train, {}, options, dpo);
  EXPECT_EQ(summary.steps, 15);

  const auto expected = can::testing::read_json_lines(output_dir_.path() / "metrics.jsonl");
  const auto actual = can::testing::read_json_lines(resumed_dir.path() / "metrics.jsonl");
  ASSERT_EQ(expected.size(), 15u);
  ASSERT_EQ(actual.size(), 3u);
  for (size_t i = 0; i < actual.size(); ++i) {
    const auto& want = expected[12 + i];
    EXPECT_EQ(actual[i]["step"], want["step"]);
    for (const char* name : {"loss", "rewards/margins", "logps/chosen", "grad_norm", "learning_rate"}) {
      EXPECT_EQ(actual[i][name].get<double>(), want[name].get<double>()) << name << " at step " << want["step"];
    }
  }
  EXPECT_TRUE(torch::equal(resumed->lm_head->weight, uninterrupted->lm_head->weight));
}

TEST_F(Trainers, DpoWithLoraTrainsOnlyTheAdaptersAndResumesExactly) {
  const auto train = marker_pairs(40, 71, /*same_words=*/false);
  auto options = base_options(output_dir_.path());
  options.micro_batch_size = 4;
  options.gradient_accumulation_steps = 2;  // 5 updates per epoch
  options.epochs = 3;
  options.save_every = 4;  // 4, 8, 12, 15
  options.learning_rate = 1e-2;
  can::DpoTrainingOptions dpo;
  can::LoraOptions lora;
  lora.rank = 4;
  lora.dropout = 0.1;  // draws random numbers, which resuming must reproduce
  lora.target_modules = {"q_proj", "v_proj", "down_proj"};
  const auto with_adapters = [&] {
    auto model = policy();
    torch::manual_seed(5);
    can::attach_lora(*model, lora);
    return model;
  };
  auto uninterrupted = with_adapters();
  can::train_dpo(uninterrupted, *tokenizer_, chat_template_, train, {}, options, dpo);

  // The base weights did not move; only adapters were in the optimizer and the checkpoints.
  const auto base = policy();
  for (const auto& parameter : base->named_parameters()) {
    EXPECT_TRUE(torch::equal(uninterrupted->named_parameters()[parameter.key()], parameter.value())) << parameter.key();
  }
  const fs::path checkpoint = output_dir_.path() / "checkpoints" / "step-12";
  EXPECT_TRUE(fs::exists(checkpoint / "adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(checkpoint / "adapter_config.json"));
  EXPECT_FALSE(fs::exists(checkpoint / "model.safetensors"));
  const auto lines = can::testing::read_json_lines(output_dir_.path() / "metrics.jsonl");
  EXPECT_NEAR(lines.front()["loss"].get<double>(), std::log(2.0), 1e-5);  // disabled adapters = the reference
  // The final model is the merged one, in Hugging Face layout, without adapter tensors.
  const auto merged = can::load_causal_lm((output_dir_.path() / "model").string());
  EXPECT_TRUE(torch::equal(merged->lm_head->weight, base->lm_head->weight));  // not a target: unchanged
  const auto& trained_layer = uninterrupted->model->layers->at<can::LlamaDecoderLayerImpl>(0);
  const auto& merged_layer = merged->model->layers->at<can::LlamaDecoderLayerImpl>(0);
  EXPECT_TRUE(torch::equal(merged_layer.self_attn->q_proj->weight, trained_layer.self_attn->q_proj->merged_weight()));
  EXPECT_FALSE(torch::equal(merged_layer.self_attn->q_proj->weight, trained_layer.self_attn->q_proj->weight));

  // The reference log-prob cache is keyed by the base weights: a plain model with them reuses it.
  std::vector<can::TokenizedSequence> chosen, rejected;
  for (const auto& pair : train) {
    chosen.push_back(
        can::tokenize_sequence(*tokenizer_, chat_template_, pair.prompt, pair.response(pair.better_response_id)));
    rejected.push_back(
        can::tokenize_sequence(*tokenizer_, chat_template_, pair.prompt, pair.response(1 - pair.better_response_id)));
  }
  auto plain = policy();
  const auto cached = can::cached_reference_logprobs(plain, chosen, rejected, {options.max_length, 3}, 4,
                                                  output_dir_.path() / "reference_logprobs.safetensors");
  EXPECT_TRUE(cached.reused);

  can::testing::TemporaryDirectory resumed_dir;
  fs::create_directories(resumed_dir.path() / "checkpoints");
  fs::copy(checkpoint, resumed_dir.path() / "checkpoints" / "step-12", fs::copy_options::recursive);
  std::ofstream(resumed_dir.path() / "checkpoints" / "latest") << "step-12\n";
  fs::copy(output_dir_.path() / "reference_logprobs.safetensors", resumed_dir.path() / "reference_logprobs.safetensors");
  auto resumed = with_adapters();  // fresh adapters on the reference weights, as the caller passes them
  options.output_dir = resumed_dir.path();
  options.resume = true;
  EXPECT_EQ(can::train_dpo(resumed, *tokenizer_, chat_template_, train, {}, options, dpo).steps, 15);
  const auto actual = can::testing::read_json_lines(resumed_dir.path() / "metrics.jsonl");
  ASSERT_EQ(lines.size(), 15u);
  ASSERT_EQ(actual.size(), 3u);
  for (size_t i = 0; i < actual.size(); ++i) {
    for (const char* name : {"loss", "rewards/margins", "logps/chosen", "grad_norm"}) {
      EXPECT_EQ(actual[i][name].get<double>(), lines[12 + i][name].get<double>()) << name << " at " << i;
    }
  }
  for (const auto& parameter : uninterrupted->named_parameters()) {
    EXPECT_TRUE(torch::equal(resumed->named_parameters()[parameter.key()], parameter.value())) << parameter.key();
  }
}

}  // namespace
