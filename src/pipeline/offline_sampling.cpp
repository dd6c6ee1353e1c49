#include "can/offline_sampling.h"

#include <nlohmann/json.hpp>

#include "can/batching.h"
#include "can/error.h"
#include "can/json_lines.h"

namespace can {

namespace {

// Every (prompt, response) of the samples, prompt-major, as sampled.
std::vector<TokenizedSequence> flatten(const std::vector<SampledPrompt>& samples) {
  std::vector<TokenizedSequence> sequences;
  for (const auto& sample : samples) {
    for (const auto& response : sample.responses) sequences.push_back({sample.prompt_ids, response});
  }
  return sequences;
}

// Regroups a flat prompt-major vector into [M][N_i].
std::vector<std::vector<double>> regroup(const std::vector<SampledPrompt>& samples, const std::vector<double>& flat) {
  std::vector<std::vector<double>> grouped;
  size_t next = 0;
  for (const auto& sample : samples) {
    grouped.emplace_back(flat.begin() + next, flat.begin() + next + sample.responses.size());
    next += sample.responses.size();
  }
  return grouped;
}

std::vector<std::string> prompt_ids(const std::vector<SampledPrompt>& samples) {
  std::vector<std::string> ids;
  for (const auto& sample : samples) ids.push_back(sample.prompt_id);
  return ids;
}

}  // namespace

std::vector<SampledPrompt> sample_responses(LlamaForCausalLM& policy, const Tokenizer& tokenizer,
                                            const ChatTemplate& chat_template,
                                            const std::vector<std::pair<std::string, std::string>>& prompts,
                                            int64_t responses_per_prompt, const SamplingOptions& options) {
  check(responses_per_prompt > 0, "sampling: responses_per_prompt must be positive, got {}", responses_per_prompt);
  std::vector<SampledPrompt> samples;
  std::vector<std::vector<int64_t>> repeated;  // [M * N] prompt ids, each prompt N times in a row
  for (const auto& [id, text] : prompts) {
    SampledPrompt sample{id, text, tokenize_prompt(tokenizer, chat_template, text), {}};
    for (int64_t k = 0; k < responses_per_prompt; ++k) repeated.push_back(sample.prompt_ids);
    samples.push_back(std::move(sample));
  }
  SamplingOptions sampling = options;
  sampling.eos_id = tokenizer.eos_id();
  sampling.vocab_limit = tokenizer.vocab_size();  // responses are decoded to text
  std::vector<Generation> generations = sample(policy, repeated, sampling);
  for (size_t i = 0; i < samples.size(); ++i) {
    for (int64_t k = 0; k < responses_per_prompt; ++k) {
      samples[i].responses.push_back(std::move(generations[i * responses_per_prompt + k].tokens));
    }
  }
  return samples;
}

OfflineScores score_samples(const std::vector<SampledPrompt>& samples, Scorer& scorer,
                            const BatchInferenceOptions& options) {
  const SequenceScores scores = scorer.score(flatten(samples), options);
  std::vector<std::vector<std::vector<double>>> safety(samples.size());  // [M][m][N_i]
  for (const std::vector<double>& flat : scores.safety) {
    const auto grouped = regroup(samples, flat);
    for (size_t i = 0; i < samples.size(); ++i) safety[i].push_back(grouped[i]);
  }
  return OfflineScores(prompt_ids(samples), regroup(samples, scores.reward), safety);
}

void write_sampled_responses(const std::filesystem::path& path, const std::vector<SampledPrompt>& samples,
                             const Tokenizer& tokenizer) {
  std::vector<nlohmann::json> lines;
  for (const auto& sample : samples) {
    std::vector<std::string> texts;
    for (const auto& response : sample.responses) texts.push_back(tokenizer.decode(response));
    lines.push_back({{"prompt_id", sample.prompt_id}, {"prompt", sample.prompt}, {"responses", texts}});
  }
  write_json_lines(path, lines);
}

}  // namespace can
