#include "train/trainer_data.h"

#include <torch/torch.h>

#include <algorithm>

#include "can/chat_template.h"
#include "can/error.h"
#include "can/tokenizer.h"

namespace can {

TokenizedPairs tokenize_pairs(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                              const std::vector<PreferencePair>& pairs, PreferenceLabel label) {
  TokenizedPairs tokenized;
  for (const auto& pair : pairs) {
    const int chosen = preferred_response_id(pair, label);
    const int rejected = 1 - chosen;
    tokenized.chosen.push_back(tokenize_sequence(tokenizer, chat_template, pair.prompt, pair.response(chosen)));
    tokenized.rejected.push_back(tokenize_sequence(tokenizer, chat_template, pair.prompt, pair.response(rejected)));
    tokenized.chosen_is_safe.push_back(pair.is_response_safe(chosen));
    tokenized.rejected_is_safe.push_back(pair.is_response_safe(rejected));
    tokenized.chosen_probability.push_back(label == PreferenceLabel::kBetter ? pair.better_probability : 1.0);
  }
  return tokenized;
}

bool TokenizedPairs::has_soft_labels() const {
  return std::any_of(chosen_probability.begin(), chosen_probability.end(), [](double p) { return p < 1; });
}

void check_tokenizer_fits(const Tokenizer& tokenizer, const LlamaConfig& config, const std::string& stage) {
  check(tokenizer.vocab_size() <= config.vocab_size,
        "{}: the tokenizer has {} pieces but the model's vocab_size is {}: use the model's own tokenizer", stage,
        tokenizer.vocab_size(), config.vocab_size);
}

BatchingOptions batching_options(const Tokenizer& tokenizer, int64_t max_length) {
  BatchingOptions options;
  options.max_length = max_length;
  options.pad_id = tokenizer.pad_id() >= 0 ? tokenizer.pad_id() : tokenizer.eos_id();
  return options;
}

SequenceBatch batch_to_device(const SequenceBatch& batch, c10::Device device) {
  return {batch.input_ids.to(device), batch.attention_mask.to(device), batch.response_mask.to(device)};
}

int64_t count_tokens(const SequenceBatch& batch) { return batch.attention_mask.sum().item<int64_t>(); }

}  // namespace can
