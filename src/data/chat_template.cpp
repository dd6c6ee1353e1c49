#include "can/chat_template.h"

#include <fmt/format.h>

#include <filesystem>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can/jinja_template.h"
#include "can/json_fields.h"

namespace can {

namespace fs = std::filesystem;

ChatTemplate::ChatTemplate() : ChatTemplate(kSafeRlhf) {}

std::string ChatTemplate::problem(const std::string& pattern) {
  if (pattern == kModelsOwn) return "";
  const std::string placeholder = kPlaceholder;
  const size_t at = pattern.find(placeholder);
  if (at == std::string::npos) return fmt::format("chat template '{}' has no {} placeholder", pattern, placeholder);
  if (pattern.find(placeholder, at + 1) != std::string::npos) {
    return fmt::format("chat template '{}' has more than one {} placeholder", pattern, placeholder);
  }
  if (pattern.back() == ' ') {
    return fmt::format(
        "chat template '{}' ends in a space: end it where the response begins (e.g. 'ASSISTANT:'); the response's "
        "tokens bring their own leading space",
        pattern);
  }
  return "";
}

ChatTemplate::ChatTemplate(std::string pattern) : pattern_(std::move(pattern)) {
  check(pattern_ != kModelsOwn, "the chat template '{}' names a model's own: use ChatTemplate::from_setting", pattern_);
  const std::string why_not = problem(pattern_);
  check(why_not.empty(), "{}", why_not);
  placeholder_at_ = pattern_.find(kPlaceholder);
}

ChatTemplate ChatTemplate::of_model(const std::string& folder) {
  const fs::path jinja_file = fs::path(folder) / "chat_template.jinja";
  const fs::path config_file = fs::path(folder) / "tokenizer_config.json";
  const std::string hint = fmt::format("set data.chat_template to a pattern with {} instead", kPlaceholder);
  check(fs::is_regular_file(config_file) || fs::is_regular_file(jinja_file),
        "data.chat_template is '{}' but the model folder '{}' has neither chat_template.jinja nor "
        "tokenizer_config.json; {}",
        kModelsOwn, folder, hint);
  const nlohmann::json config = fs::is_regular_file(config_file) ? read_json_file(config_file) : nlohmann::json::object();
  ChatTemplate chat;
  std::string origin;
  if (fs::is_regular_file(jinja_file)) {  // transformers 5 saves the template in a file of its own
    chat.pattern_ = read_text_file(jinja_file);
    origin = jinja_file.string();
  } else {
    const nlohmann::json* source = optional_field(config, "chat_template");
    check(source != nullptr && !source->is_null(), "{}: no chat_template (and no chat_template.jinja beside it); {}",
          config_file.string(), hint);
    if (source->is_array()) {  // named templates: [{"name": ..., "template": ...}], "default" is the chat one
      for (const auto& named : *source) {
        if (named.is_object() && named.value("name", "") == "default") chat.pattern_ = named.value("template", "");
      }
      check(!chat.pattern_.empty(), "{}: chat_template lists named templates but none named 'default'; {}",
            config_file.string(), hint);
    } else {
      chat.pattern_ = string_field(config, "chat_template", config_file.string());
    }
    origin = config_file.string() + ": chat_template";
  }
  try {
    chat.jinja_ = std::make_shared<const JinjaTemplate>(chat.pattern_, origin);
  } catch (const Error& error) {
    fail("{}; {}", error.what(), hint);
  }
  // transformers passes its special_tokens_map: the named special tokens, and the list of
  // additional ones, each a string or {"content": string}.
  const auto text_of = [&](const nlohmann::json& token, const std::string& name) {
    return token.is_string() ? token.get<std::string>() : string_field(token, "content", config_file.string() + ": " + name);
  };
  chat.special_tokens_ = nlohmann::json::object();
  for (const char* name :
       {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    const nlohmann::json* token = optional_field(config, name);
    if (token != nullptr && !token->is_null()) chat.special_tokens_[name] = text_of(*token, name);
  }
  if (const nlohmann::json* extra = optional_field(config, "additional_special_tokens"); extra != nullptr) {
    check(extra->is_array(), "{}: additional_special_tokens must be an array", config_file.string());
    nlohmann::json texts = nlohmann::json::array();
    for (const nlohmann::json& token : *extra) texts.push_back(text_of(token, "additional_special_tokens"));
    chat.special_tokens_["additional_special_tokens"] = texts;
  }
  return chat;
}

ChatTemplate ChatTemplate::from_setting(const std::string& setting, const std::string& model_folder) {
  if (setting != kModelsOwn) return ChatTemplate(setting);
  check(!model_folder.empty(), "data.chat_template is '{}', the policy's own, but models.policy is empty", kModelsOwn);
  return of_model(model_folder);
}

std::string ChatTemplate::format(const std::string& prompt) const {
  if (jinja_ != nullptr) {
    // What apply_chat_template passes: the special tokens, the conversation, and no tools
    // or documents (None, which a template's `is defined` sees as defined).
    nlohmann::json variables = special_tokens_;
    variables["messages"] = nlohmann::json::array({{{"role", "user"}, {"content", prompt}}});
    variables["add_generation_prompt"] = true;
    variables["tools"] = nullptr;
    variables["documents"] = nullptr;
    return jinja_->render(variables);
  }
  std::string text = pattern_;
  text.replace(placeholder_at_, std::char_traits<char>::length(kPlaceholder), prompt);
  return text;
}

}  // namespace can
