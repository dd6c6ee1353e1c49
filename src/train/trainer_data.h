// What the SFT, score-model and DPO trainers share between the data and the
// training loop: tokenized pairs, batches on the model's device, checks that the
// tokenizer fits the model.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>
#include <vector>

#include "can/batching.h"
#include "can/llama.h"
#include "can/preference_data.h"

namespace can {

class ChatTemplate;
class Tokenizer;

// Pairs as chosen (preferred) and rejected token sequences, in the pairs' order.
struct TokenizedPairs {
  std::vector<TokenizedSequence> chosen;
  std::vector<TokenizedSequence> rejected;
  std::vector<bool> chosen_is_safe;  // is_response_*_safe of each side
  std::vector<bool> rejected_is_safe;
  // P(chosen ≻ rejected): the pair's better_probability for PreferenceLabel::kBetter, else 1.
  std::vector<double> chosen_probability;

  int64_t size() const { return static_cast<int64_t>(chosen.size()); }
  bool has_soft_labels() const;  // some chosen_probability is below 1
};

TokenizedPairs tokenize_pairs(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                              const std::vector<PreferencePair>& pairs, PreferenceLabel label);

// Fails unless every id the tokenizer produces is a row of the model's embedding.
void check_tokenizer_fits(const Tokenizer& tokenizer, const LlamaConfig& config, const std::string& stage);

// max_length from the options; padding with the tokenizer's pad id, or EOS when it has none.
BatchingOptions batching_options(const Tokenizer& tokenizer, int64_t max_length);


// The batch's tensors moved to `device`.
SequenceBatch batch_to_device(const SequenceBatch& batch, c10::Device device);

// Real (not padding) tokens of a CPU batch.
int64_t count_tokens(const SequenceBatch& batch);

// The elements of `items` at `indices`, in that order.
template <typename T>
std::vector<T> select(const std::vector<T>& items, const std::vector<int64_t>& indices) {
  std::vector<T> selected;
  selected.reserve(indices.size());
  for (const int64_t index : indices) selected.push_back(items.at(index));
  return selected;
}

}  // namespace can
