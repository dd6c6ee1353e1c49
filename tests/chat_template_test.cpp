// ChatTemplate in both forms: a pattern, and a model folder's own Jinja template (read
// from chat_template.jinja or tokenizer_config.json). Whole real templates against
// transformers: tests/reference/chat_template_vs_transformers.py.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "can/chat_template.h"
#include "can/error.h"
#include "temporary_directory.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ChatML as Qwen writes it, with a system turn only when none is given.
constexpr const char* kChatMl =
    "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nBe brief.<|im_end|>\\n' }}{%- endif %}\n"
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}\n{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n";
constexpr const char* kChatMlPrompt =
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n";

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const can::Error& error) {
    return error.what();
  }
  return "(no error)";
}

class ModelChatTemplateTest : public ::testing::Test {
 protected:
  void write_config(const json& config) const { std::ofstream(dir_.path() / "tokenizer_config.json") << config.dump(); }
  std::string folder() const { return dir_.path().string(); }
  can::testing::TemporaryDirectory dir_;
};

TEST_F(ModelChatTemplateTest, TheTemplateInTokenizerConfigRendersOneUserTurnWithItsSpecialTokens) {
  // Llama 3's template, which writes bos_token itself and trims the message.
  write_config({{"bos_token", "<|begin_of_text|>"},
                {"eos_token", {{"content", "<|eot_id|>"}}},
                {"chat_template",
                 "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
                 "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% "
                 "set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt "
                 "%}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"}});
  const can::ChatTemplate chat = can::ChatTemplate::from_setting("model", folder());
  EXPECT_EQ(chat.format("  How are you? \n"),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_FALSE(chat.add_bos());  // the template wrote the BOS
}

TEST_F(ModelChatTemplateTest, ChatTemplateJinjaIsPreferredAsTransformersFiveWritesIt) {
  write_config({{"eos_token", "<|im_end|>"}, {"chat_template", "{{ 'the old one' }}"}});
  std::ofstream(dir_.path() / "chat_template.jinja") << kChatMl;
  EXPECT_EQ(can::ChatTemplate::of_model(folder()).format("Hi there"), kChatMlPrompt);
}

TEST_F(ModelChatTemplateTest, OfNamedTemplatesTheDefaultOneIsTheChatTemplate) {
  write_config({{"chat_template", json::array({{{"name", "tool_use"}, {"template", "{{ 'tools' }}"}},
                                               {{"name", "default"}, {"template", kChatMl}}})}});
  EXPECT_EQ(can::ChatTemplate::of_model(folder()).format("Hi there"), kChatMlPrompt);
}

TEST_F(ModelChatTemplateTest, AFolderWithoutATemplateIsRefusedWithTheHint) {
  EXPECT_NE(error_of([&] { can::ChatTemplate::of_model(folder()); }).find("set data.chat_template"),
            std::string::npos);
  write_config({{"eos_token", "</s>"}});
  const std::string message = error_of([&] { can::ChatTemplate::of_model(folder()); });
  EXPECT_NE(message.find("tokenizer_config.json: no chat_template"), std::string::npos) << message;
  EXPECT_NE(message.find("set data.chat_template"), std::string::npos) << message;
}

TEST_F(ModelChatTemplateTest, JinjaBeyondTheSubsetIsRefusedWithTheFileAndTheHint) {
  write_config({{"chat_template", "{% macro turn(m) %}{{ m }}{% endmacro %}{{ turn(messages[0].content) }}"}});
  const std::string message = error_of([&] { can::ChatTemplate::of_model(folder()); });
  EXPECT_NE(message.find("tokenizer_config.json: chat_template"), std::string::npos) << message;
  EXPECT_NE(message.find("macro"), std::string::npos) << message;
  EXPECT_NE(message.find("set data.chat_template"), std::string::npos) << message;
}

TEST(ChatTemplate, APatternKeepsTheTokenizersBosAndModelNeedsAPolicy) {
  const can::ChatTemplate chat = can::ChatTemplate::from_setting("USER: {prompt} ASSISTANT:", "");
  EXPECT_EQ(chat.format("hi"), "USER: hi ASSISTANT:");
  EXPECT_TRUE(chat.add_bos());
  EXPECT_NE(error_of([] { can::ChatTemplate::from_setting("model", ""); }).find("models.policy is empty"),
            std::string::npos);
  EXPECT_EQ(can::ChatTemplate::problem("model"), "");
}

}  // namespace
