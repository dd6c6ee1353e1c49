// A model's Jinja chat template (src/data/jinja_template.cpp) parsed and rendered for
// one user message, as ChatTemplate::format renders it.
#include <nlohmann/json.hpp>

#include <string>

#include "can/jinja_template.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  static const nlohmann::json variables = {
      {"messages", {{{"role", "user"}, {"content", "  How do I bake bread?\n"}}}},
      {"add_generation_prompt", true},
      {"bos_token", "<|begin_of_text|>"},
      {"eos_token", "<|eot_id|>"},
      {"tools", nullptr},
      {"documents", nullptr}};
  can::fuzz::expect_clear_error([&] {
    const can::JinjaTemplate chat_template(source, "chat_template.jinja");
    chat_template.render(variables);
  });
  return 0;
}
