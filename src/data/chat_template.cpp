#include "can/chat_template.h"

#include <fmt/format.h>

#include "can/error.h"

namespace can {

ChatTemplate::ChatTemplate() : ChatTemplate(kSafeRlhf) {}

std::string ChatTemplate::problem(const std::string& pattern) {
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
  const std::string why_not = problem(pattern_);
  check(why_not.empty(), "{}", why_not);
  placeholder_at_ = pattern_.find(kPlaceholder);
}

std::string ChatTemplate::format(const std::string& prompt) const {
  std::string text = pattern_;
  text.replace(placeholder_at_, std::char_traits<char>::length(kPlaceholder), prompt);
  return text;
}

}  // namespace can
