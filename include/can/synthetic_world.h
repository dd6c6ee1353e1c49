// The embedded default's synthetic safety world (docs/design.md §8): benign and harmful
// requests from templates, responses of four kinds, preference pairs in the
// PKU-SafeRLHF schema labelled by the judge (can/judge.h) with noise, SFT data
// for a reference policy that often complies with harmful requests, and a
// tokenizer corpus. Harmful "instructions" are placeholders ("acquire the
// [restricted materials]"), never real content.
//
// Generalisation is built in: test prompts use only held-out phrasings, and
// some topics appear only in test prompts. Train data (prompts, SFT, pairs,
// corpus) never contains a held-out phrasing or topic. The same-template test
// prompts are the other side: new prompts from the train phrasings and topics (none
// equal to a train prompt), so an evaluation on both tells generalisation to new
// templates apart from the prediction's own error.
//
// Determinism: everything derives from WorldOptions::seed through std::mt19937_64
// raw outputs and std::seed_seq (both fully specified by the standard), never
// through the library's distributions or std::shuffle, so one seed gives
// byte-identical files with any standard library. Each part (train prompts, test
// prompts, SFT, pairs) draws from its own stream, so e.g. changing the number of
// test prompts leaves the train data unchanged.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "can/chat_template.h"
#include "can/judge.h"
#include "can/preference_data.h"

namespace can {

enum class ResponseKind {
  kCompliance,       // does what was asked: unsafe when the request is harmful
  kRefusal,          // declines, no content
  kSafeAlternative,  // declines and points to a safe, on-topic alternative
  kOffTopic,         // small talk, or a how-to about another, benign, topic
};
inline constexpr std::array<ResponseKind, 4> kResponseKinds = {ResponseKind::kCompliance, ResponseKind::kRefusal,
                                                               ResponseKind::kSafeAlternative, ResponseKind::kOffTopic};

// "compliance", "refusal", "safe_alternative", "off_topic".
std::string_view response_kind_name(ResponseKind kind);

// A subject of requests. The word lists are the judge's vocabularies: instruction
// words appear in compliance steps only; request words in requests and alternatives.
// No word is shared between topics.
struct WorldTopic {
  std::string name;  // "cooking", "hacking", ...
  bool harmful = false;
  HarmKind harm_kind = HarmKind::kIllegal;     // when harmful: what its instructions harm
  bool held_out = false;                       // appears only in test prompts
  std::vector<std::string> actions;            // "bake banana bread": fills a phrasing's {action}
  std::vector<std::string> request_words;      // lower-case words of the actions and alternatives
  std::vector<std::string> steps;              // "knead the dough until it is smooth"
  std::vector<std::string> instruction_words;  // lower-case words of the steps
  std::vector<std::string> alternatives;       // "ask a friend who likes to cook ..." (safe, on topic)
};
const std::vector<WorldTopic>& world_topics();
// Throws can::Error naming `name` when there is no such topic.
const WorldTopic& world_topic(std::string_view name);

// A request template: `text` contains "{action}". Held-out phrasings appear only in test prompts.
struct WorldPhrasing {
  std::string text;
  bool held_out = false;
};
const std::vector<WorldPhrasing>& world_phrasings();

// A prompt and its ground truth (kept out of the text).
struct WorldPrompt {
  std::string id;     // "train-000042", "test-000007", "same-000007"
  std::string text;   // what the user says
  std::string topic;  // a WorldTopic name
  bool harmful = false;
  std::string action;  // the topic action the text asks for
  int phrasing = 0;    // index into world_phrasings()
};

// Relative weights of response kinds (normalised by their sum; each >= 0, sum > 0).
struct ResponseMixture {
  double compliance = 0.25;
  double refusal = 0.25;
  double safe_alternative = 0.25;
  double off_topic = 0.25;
};

// The most train or test prompts a world may have: a million prompts make about a
// gigabyte of text in memory; the bound stops a mistyped count before it allocates.
constexpr int64_t kMaxWorldPrompts = 1'000'000;
constexpr int64_t kMaxSftResponsesPerPrompt = 100;

struct WorldOptions {
  uint64_t seed = 1;
  int64_t num_train_prompts = 2000;  // one preference pair per train prompt
  int64_t num_test_prompts = 300;
  double harmful_fraction = 0.5;  // of train and of test prompts (rounded to a count)
  // Probability in [0, 0.5] that better_response_id, and independently safer_response_id,
  // is flipped away from the judge's verdict. is_response_*_safe is never flipped: it
  // is the judge's ground-truth classification.
  double label_noise = 0.1;
  // Kinds of the two responses of a pair, drawn independently; equal kinds get different texts.
  ResponseMixture pair_mixture = {0.4, 0.25, 0.2, 0.15};
  int64_t sft_responses_per_prompt = 2;
  // The reference policy's SFT mixture. Kinds are assigned by exact quotas (largest
  // remainder), so the fractions in the data equal the normalised weights up to one
  // example. Harmful compliance is frequent so that a safety constraint binds.
  ResponseMixture sft_harmful_mixture = {0.55, 0.25, 0.15, 0.05};
  ResponseMixture sft_benign_mixture = {0.90, 0.03, 0.02, 0.05};
  // A second kind of harm, privacy (judge.h's HarmKind::kPrivacy), beside illegal
  // activity: its topics join the harmful ones, and every pair carries a second safety
  // label, so the world has two safety constraints. False: the topics of illegal
  // activity only, one constraint.
  bool privacy_harm = false;
  // Formats the corpus texts; the response follows after one space (chat_template.h).
  ChatTemplate chat_template;
};

// The world's safety constraints: 1, or 2 with privacy_harm. Constraint j is HarmKind j.
int world_constraints(const WorldOptions& options);

struct SftExample {
  int64_t prompt_index = 0;  // into SyntheticWorld::train_prompts
  std::string response;
  ResponseKind kind = ResponseKind::kCompliance;
};

// A PKU-SafeRLHF pair with its ground truth.
struct WorldPair {
  int64_t prompt_index = 0;  // into SyntheticWorld::train_prompts
  std::array<std::string, 2> responses;
  std::array<ResponseKind, 2> kinds{};
  std::array<JudgeVerdict, 2> verdicts;
  int better_response_id = 0;   // the more helpful by the judge (ties: a fair coin), then noise
  bool better_flipped = false;  // whether label noise flipped better_response_id
  // Per constraint j (harm kind j): the less harmful by the judge (ties: a fair coin),
  // then noise, and whether the noise flipped it.
  std::vector<int> safer_response_id;  // [world_constraints]
  std::vector<char> safer_flipped;     // [world_constraints]
};

struct SyntheticWorld {
  WorldOptions options;
  std::vector<WorldPrompt> train_prompts;
  std::vector<WorldPrompt> test_prompts;
  std::vector<WorldPrompt> same_template_test_prompts;  // num_test_prompts, ids "same-000007"
  std::vector<SftExample> sft;
  std::vector<WorldPair> pairs;
  std::vector<std::string> corpus;  // chat-formatted prompt + response, train data only
};

// One response of `kind` to `prompt`, 8–40 words, single line.
std::string generate_response(const WorldPrompt& prompt, ResponseKind kind, std::mt19937_64& rng);

// The pair in the PKU-SafeRLHF schema (is_response_*_safe from the judge), with the
// second constraint's labels in safety_labels when the world has privacy harm.
PreferencePair to_preference_pair(const SyntheticWorld& world, const WorldPair& pair);

// Builds the whole world in memory; throws can::Error naming the option that is out of range.
SyntheticWorld build_world(const WorldOptions& options);

// Builds the world and writes, each file atomically, into `out_dir` (created if needed):
//   pairs_train.jsonl   PKU-SafeRLHF schema: prompt, response_0, response_1, better_response_id,
//                       safer_response_id, is_response_0_safe, is_response_1_safe (illegal harm);
//                       with privacy_harm also safety_labels (preference_data.h), one per kind
//   sft_train.jsonl     {prompt, response}
//   prompts_train.jsonl, prompts_test.jsonl, prompts_test_same_templates.jsonl
//                       {prompt_id, prompt, harmful, topic}
//   corpus.txt          tokenizer corpus, one chat-formatted text per line
//   world.json          the options used, counts and label statistics
void write_world(const WorldOptions& options, const std::filesystem::path& out_dir);

}  // namespace can
