// The chat template that turns a user's request into the text a model continues.
// Score models depend on it (they were trained on one), so it is configurable, in
// one of two forms:
//  * a pattern with "{prompt}" (data.chat_template; Safe-RLHF's is the default);
//  * a model's own Jinja chat template (data.chat_template: model), rendered as
//    transformers' apply_chat_template renders one user message with
//    add_generation_prompt=True (jinja_template.h says which Jinja it implements).
//
// Joining with the response: a pattern ends where the response begins, with no
// space ("...ASSISTANT:"), as Safe-RLHF writes it (its constants carry "should not
// have a space at the end"; it tokenizes prompt + response + eos as one string).
// CAN tokenizes the formatted prompt and the response separately (batching.h), and
// sentencepiece's dummy prefix gives the response a leading "▁", so the model sees
// "ASSISTANT: Sure..." with exactly one space. A pattern that itself ends in a space
// would add a second, stray "▁" token, which is why it is rejected. A model's template
// ends with its assistant header ("<|im_start|>assistant\n"), and the response
// follows it directly.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace can {

class JinjaTemplate;

class ChatTemplate {
 public:
  static constexpr const char* kSafeRlhf = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:";
  static constexpr const char* kPlaceholder = "{prompt}";
  static constexpr const char* kModelsOwn = "model";  // data.chat_template's value for the policy's own

  // Safe-RLHF's template.
  ChatTemplate();
  // `pattern` must contain "{prompt}" exactly once and must not end in a space.
  explicit ChatTemplate(std::string pattern);
  // The Jinja chat template of the model folder `folder`: its chat_template.jinja, else
  // tokenizer_config.json's chat_template; the special tokens named in
  // tokenizer_config.json are the template's variables (bos_token, eos_token, ...).
  // Throws, with the hint to set data.chat_template, when the folder has none or the
  // template uses Jinja that CAN does not implement.
  static ChatTemplate of_model(const std::string& folder);
  // data.chat_template's value: "model" for `model_folder`'s own, else a pattern.
  static ChatTemplate from_setting(const std::string& setting, const std::string& model_folder);

  // Why `pattern` is not a valid template, or "" when it is.
  static std::string problem(const std::string& pattern);

  // The text the model continues for a request `prompt`.
  std::string format(const std::string& prompt) const;
  // Whether the formatted prompt is encoded with the tokenizer's BOS: a pattern's is; a
  // model's template writes its special tokens itself (apply_chat_template tokenizes
  // with add_special_tokens=False).
  bool add_bos() const { return jinja_ == nullptr; }
  // The pattern, or the model's Jinja source.
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  std::string::size_type placeholder_at_ = 0;
  std::shared_ptr<const JinjaTemplate> jinja_;  // a model's template; null for a pattern
  nlohmann::json special_tokens_;               // its variables bos_token, eos_token, ...
};

}  // namespace can
