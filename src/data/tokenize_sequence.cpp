// Kept apart from batching.cpp so that the id-level batching links without the tokenizer.
#include "can/batching.h"
#include "can/chat_template.h"
#include "can/tokenizer.h"

namespace can {

std::vector<int64_t> tokenize_prompt(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                     const std::string& prompt) {
  return tokenizer.encode(chat_template.format(prompt), chat_template.add_bos());
}

TokenizedSequence tokenize_sequence(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                                    const std::string& prompt, const std::string& response) {
  TokenizedSequence sequence;
  sequence.prompt_ids = tokenize_prompt(tokenizer, chat_template, prompt);
  sequence.response_ids = tokenizer.encode(response, /*add_bos=*/false);
  sequence.response_ids.push_back(tokenizer.eos_id());
  return sequence;
}

}  // namespace can
