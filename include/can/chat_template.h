// The chat template that turns a user's request into the text a model continues.
// Score models depend on it (they were trained on one), so it is configurable.
//
// Joining with the response: the template ends where the response begins, with
// no space ("...ASSISTANT:"), as Safe-RLHF writes it (its constants carry "should
// not have a space at the end"; it tokenizes prompt + response + eos as one
// string). CAN tokenizes the formatted prompt and the response separately
// (batching.h), and sentencepiece's dummy prefix gives the response a leading
// "▁", so the model sees "ASSISTANT: Sure..." with exactly one space. A template
// that itself ends in a space would add a second, stray "▁" token, which is why
// it is rejected.
#pragma once

#include <string>

namespace can {

class ChatTemplate {
 public:
  static constexpr const char* kSafeRlhf = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:";
  static constexpr const char* kPlaceholder = "{prompt}";

  // Safe-RLHF's template.
  ChatTemplate();
  // `pattern` must contain "{prompt}" exactly once and must not end in a space.
  explicit ChatTemplate(std::string pattern);

  // Why `pattern` is not a valid template, or "" when it is.
  static std::string problem(const std::string& pattern);

  // The pattern with "{prompt}" replaced by `prompt` verbatim.
  std::string format(const std::string& prompt) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  std::string::size_type placeholder_at_;
};

}  // namespace can
