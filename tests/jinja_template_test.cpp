// JinjaTemplate against jinja2: every expected string below is what jinja2 3.1.6
// itself renders for the same template and variables, with the environment
// transformers' apply_chat_template builds: ImmutableSandboxedEnvironment(
// trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]), the globals
// raise_exception and strftime_now, and tojson overridden as json.dumps(x,
// ensure_ascii=False, indent=indent). (transformers 5.18's _compile_jinja_template
// produced them; dicts were passed with sorted keys, as nlohmann::json keeps them.)
#include "can/jinja_template.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <ctime>
#include <string>
#include <vector>

#include "assertions.h"
#include "can/error.h"

namespace {

using can::JinjaTemplate;
using can::testing::contains;
using can::testing::error_message;
using nlohmann::json;

const char* const kOrigin = "models/test/tokenizer_config.json: chat_template";

// Meta's Llama 3 (3.0) Instruct template, as in its tokenizer_config.json.
const char* const kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

// Meta's Llama 3.1 Instruct template.
const char* const kLlama31 = R"JINJA({{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
)JINJA";

// Meta's Llama 3.2 Instruct template.
const char* const kLlama32 = R"JINJA({{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
)JINJA";

// Qwen 2.5 Instruct's template.
const char* const kQwen25 = R"JINJA({%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)JINJA";

// What apply_chat_template passes for one user message (and a system message first).
json chat_variables(bool with_system) {
  json messages = json::array();
  if (with_system) messages.push_back({{"role", "system"}, {"content", "You are a concise assistant."}});
  messages.push_back({{"role", "user"}, {"content", "What is the capital of France?\n"}});
  return {{"messages", messages}, {"add_generation_prompt", true}, {"bos_token", "<|begin_of_text|>"},
          {"eos_token", "<|eot_id|>"}, {"tools", nullptr}, {"documents", nullptr}};
}

std::string render(const std::string& source, const json& variables) {
  return JinjaTemplate(source, kOrigin).render(variables);
}

struct Case {
  const char* source;
  const char* expected;
};

// Renders each case with the same variables.
void expect_renders(const std::vector<Case>& cases) {
  const json variables = json::parse(R"({
    "messages": [{"role": "user", "content": "  Hi there  "}],
    "text": "  Hello, World  ", "items": [1, 2, 3, 4, 5], "words": ["a", "b", "c"], "empty": [],
    "none_value": null, "mapping": {"b": 2, "a": 1}, "unicode": "héllo wörld",
    "tool": {"name": "get_weather", "parameters": {"city": "string"}}
  })");
  for (const Case& c : cases) EXPECT_EQ(render(c.source, variables), c.expected) << "template: " << c.source;
}

std::string local_date_now() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char date[32];
  return std::string(date, std::strftime(date, sizeof date, "%d %b %Y", &local));
}

TEST(JinjaTemplate, RendersTheLlama3Template) {
  EXPECT_EQ(render(kLlama3, chat_variables(false)),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(render(kLlama3, chat_variables(true)),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a concise assistant.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(JinjaTemplate, RendersTheLlama32TemplateWithAGivenDate) {
  json variables = chat_variables(false);
  variables["date_string"] = "26 Jul 2024";
  EXPECT_EQ(render(kLlama32, variables),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
            "Today Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "What is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  variables = chat_variables(true);
  variables["date_string"] = "26 Jul 2024";
  EXPECT_EQ(render(kLlama32, variables),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
            "Today Date: 26 Jul 2024\n\nYou are a concise assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>"
            "\n\nWhat is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

// Without date_string the template asks strftime_now("%d %b %Y") for today's date.
TEST(JinjaTemplate, RendersTheLlama32TemplateWithTodaysDate) {
  const std::string before = local_date_now();
  const std::string text = render(kLlama32, chat_variables(false));
  const std::string after = local_date_now();
  const std::string head =
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
      "Today Date: ";
  const std::string tail =
      "\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n";
  ASSERT_EQ(text.substr(0, head.size()), head);
  ASSERT_GT(text.size(), head.size() + tail.size());
  EXPECT_EQ(text.substr(text.size() - tail.size()), tail);
  const std::string date = text.substr(head.size(), text.size() - head.size() - tail.size());
  EXPECT_TRUE(date == before || date == after) << date;
  EXPECT_EQ(date.size(), 11u) << date;  // "01 Dec 2026"
}

// Llama 3.1 differs by its builtin_tools, listed with reject('equalto', ...) | join.
TEST(JinjaTemplate, RendersTheLlama31Template) {
  json variables = chat_variables(false);
  EXPECT_EQ(render(kLlama31, variables),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
            "Today Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "What is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  variables = chat_variables(true);
  variables["builtin_tools"] = {"brave_search", "code_interpreter", "wolfram_alpha"};
  EXPECT_EQ(render(kLlama31, variables),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
            "Tools: brave_search, wolfram_alpha\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
            "You are a concise assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "What is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(JinjaTemplate, RendersTheQwen25TemplateWithoutASystemMessage) {
  EXPECT_EQ(render(kQwen25, chat_variables(false)),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nWhat is the capital of France?\n<|im_end|>\n<|im_start|>assistant\n");
}

TEST(JinjaTemplate, RendersTheQwen25TemplateWithASystemMessage) {
  EXPECT_EQ(render(kQwen25, chat_variables(true)),
            "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n"
            "<|im_start|>user\nWhat is the capital of France?\n<|im_end|>\n<|im_start|>assistant\n");
}

// `-` strips all whitespace beside a tag; trim_blocks drops the newline after a block
// or comment tag; lstrip_blocks drops the indentation before one; `+` keeps both.
TEST(JinjaTemplate, AppliesWhitespaceControlTrimBlocksAndLstripBlocks) {
  expect_renders({
      {"a  {{- ' b ' -}}  c",
       "a b c"},
      {"a\n  {%- if true %} b {% endif -%}\n  c",
       "a b c"},
      {"a {#- comment -#} b",
       "ab"},
      {"{% if true %}\nline\n{% endif %}\nafter",
       "line\nafter"},
      {"  {% if true %}\n  indented\n  {% endif %}\nend",
       "  indented\nend"},
      {"x {% if true %}y{% endif %}\n",
       "x y"},
      {"  {{ 'var' }}  \n",
       "  var  "},
      {"{# comment #}\nnext",
       "next"},
      {"    {# comment #}\nnext",
       "next"},
      {"a\n  {%+ if true %}b{% endif +%}\nc",
       "a\n  b\nc"},
      {"{% for w in words %}\n  {{ w }}\n{% endfor %}\n",
       "  a\n  b\n  c\n"},
      {"{%- for w in words -%}\n  {{ w }}\n{%- endfor %}",
       "abc"},
      {"line one\r\nline two\n\n",
       "line one\nline two\n"},
  });
}

TEST(JinjaTemplate, TreatsUndefinedValuesAsJinjaDoes) {
  expect_renders({
      {"[{{ missing }}]",
       "[]"},
      {"{% if missing %}yes{% else %}no{% endif %}",
       "no"},
      {"{{ missing is defined }} {{ missing is undefined }} {{ messages[0].role is defined }}",
       "False True True"},
      {"{{ messages[0].name is defined }} {{ messages[3] is defined }} {{ mapping.c is defined }}",
       "False False False"},
      {"[{{ mapping.c }}][{{ mapping['c'] }}][{{ items[10] }}][{{ none_value.attribute }}]",
       "[][][][]"},
      {"{{ missing | default('fallback') }} {{ missing | length }} [{{ missing | trim }}] [{{ missing ~ 'x' }}]",
       "fallback 0 [] [x]"},
      {"{% for m in missing %}never{% else %}empty{% endfor %} {{ not missing }} {{ missing == missing }}",
       "empty True True"},
      {"{{ 'x' if false }}|{{ missing or 'or' }}",
       "|or"},
  });
  // Anything more done to an undefined value is an error, as in jinja2.
  EXPECT_TRUE(contains(error_message([] { render("{{ missing.attribute }}", json::object()); }),
                       "'missing' is undefined"));
  EXPECT_TRUE(contains(error_message([] { render("{{ missing + 1 }}", json::object()); }), "'missing' is undefined"));
}

TEST(JinjaTemplate, AppliesFilters) {
  expect_renders({
      {"[{{ text | trim }}] [{{ '--x--' | trim('-') }}] {{ text | length }} {{ words | length }} {{ mapping | length "
       "}} {{ unicode | length }}",
       "[Hello, World] [x] 16 3 2 11"},
      {"{{ tool | tojson }}",
       "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"string\"}}"},
      {"{{ tool | tojson(indent=2) }}",
       "{\n  \"name\": \"get_weather\",\n  \"parameters\": {\n    \"city\": \"string\"\n  }\n}"},
      {"{{ [1, 'two', none, true, 2.5] | tojson }} {{ 'quote \" and é' | tojson }}",
       "[1, \"two\", null, true, 2.5] \"quote \\\" and é\""},
      {"{{ 42 | string ~ '!' }} {{ none | string }} {{ words | string }} {{ 'MiXeD' | lower }} {{ 'MiXeD' | upper }}",
       "42! None ['a', 'b', 'c'] mixed MIXED"},
      {"{{ '' | default('d') }} {{ '' | default('d', true) }} {{ none_value | default('d') }} {{ missing | "
       "default(none) }}",
       " d None None"},
      {"{{ words | first }} {{ words | last }} {{ 'abc' | first }} {{ empty | first is defined }}",
       "a c a False"},
      {"{{ words | join }} {{ words | join(', ') }} {{ items | join('-') }}",
       "abc a, b, c 1-2-3-4-5"},
  });
}

TEST(JinjaTemplate, SlicesListsAndStrings) {
  expect_renders({
      {"{{ items[1:] }} {{ items[:2] }} {{ items[1:4] }} {{ items[-2:] }} {{ items[:-1] }}",
       "[2, 3, 4, 5] [1, 2] [2, 3, 4] [4, 5] [1, 2, 3, 4]"},
      {"{{ items[::-1] }} {{ items[::2] }} {{ items[4:1:-1] }} {{ items[10:] }} {{ items[-1] }} {{ items[-5] }}",
       "[5, 4, 3, 2, 1] [1, 3, 5] [5, 4, 3] [] 5 1"},
      {"{{ 'abcdef'[1:3] }} {{ 'abcdef'[::-1] }} {{ unicode[1:4] }} {{ unicode[-5:] }} {{ unicode[1] }}",
       "bc fedcba éll wörld é"},
  });
}

// Filters and tests bind tighter than any operator: 'a' + text | trim trims text only.
TEST(JinjaTemplate, EvaluatesExpressionsWithJinjasPrecedence) {
  expect_renders({
      {"{{ 'a' + text | trim + 'b' }}",
       "aHello, Worldb"},
      {"{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 10 - 4 - 3 }} {{ 'ab' * 2 }} {{ [1] + [2, 3] }}",
       "7 9 1 2 3 abab [1, 2, 3]"},
      {"{{ 1 ~ 2 }} {{ 'n=' ~ none_value }} {{ 1 == 1 }} {{ 1 != 1 }} {{ 2 < 3 }} {{ 'a' >= 'b' }} {{ 1 < 2 < 3 }}",
       "12 n=None True False True False True"},
      {"{{ 'ell' in text }} {{ 3 in items }} {{ 'a' in mapping }} {{ 'z' not in mapping }} {{ not true or true }}",
       "True True True True True"},
      {"{{ none_value is none }} {{ 1 is not none }} {{ text is string }} {{ mapping is mapping }} {{ items is "
       "iterable }} {{ 3 is iterable }}",
       "True True True True True False"},
      {"{{ 1 is number }} {{ '1' is number }} {{ items is sequence }} {{ mapping is sequence }} {{ true is true }} {{ "
       "1 is true }} {{ false is false }}",
       "True False True True True False True"},
      {"{{ 'yes' if items else 'no' }} {{ 'yes' if empty else 'no' }} {{ 0 or '' or 'last' }} {{ 'first' and 0 }}",
       "yes no last 0"},
      {"{{ text.strip() }}|{{ text.lstrip() }}|{{ text.rstrip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a,b,c'.split(',') }}",
       "Hello, World|Hello, World  |  Hello, World|a|['a', 'b', 'c']"},
      {"{{ text.startswith('  H') }} {{ text.endswith('x') }} {{ 'Ab'.upper() }} {{ 'Ab'.lower() }} {{ "
       "mapping.get('a') }} {{ mapping.get('z', 0) }}",
       "True False AB ab 1 0"},
      {"{% for key, value in mapping.items() %}{{ key }}={{ value }};{% endfor %} {{ 'it\\'s' }} {{ "
       "\"tab\\tquote\\\"\" }} {{ '\\u00e9\\x41' }}",
       "a=1;b=2; it's tab\tquote\" éA"},
      {"{{ messages[0]['role'] }} {{ messages[0].content | trim }} {{ messages | length }}",
       "user Hi there 1"},
  });
}

TEST(JinjaTemplate, RunsLoopsAndNamespaces) {
  expect_renders({
      {"{% for w in words %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }} {% "
       "endfor %}",
       "10TrueFalse3 21FalseFalse3 32FalseTrue3 "},
      {"{% for w in words %}{{ loop.revindex }}{{ loop.previtem }}{{ loop.nextitem }} {% endfor %}",
       "3b 2ac 1b "},
      {"{% for i in [1, 2] %}{% continue %}{% else %}jinja runs else when no iteration reached the end{% endfor %}",
       "jinja runs else when no iteration reached the end"},
      {"{% for i in items if i > 2 %}{{ i }}{% endfor %}",
       "345"},
      {"{% for i in items %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{% "
       "endfor %}",
       "13"},
      {"{% for i in empty %}{{ i }}{% else %}none{% endfor %}",
       "none"},
      {"{% set ns = namespace(total=0, seen=false) %}{% for i in items %}{% set ns.total = ns.total + i %}{% endfor "
       "%}{{ ns.total }} {{ ns.seen }}",
       "15 False"},
      {"{% set x = 1 %}{% for i in items %}{% set x = i %}{% endfor %}{{ x }}",
       "1"},
      {"{% set first, second = words[:2] %}{{ first }}{{ second }} {% set messages = messages[1:] %}{{ messages | "
       "length }}",
       "ab 0"},
      {"{% for m in messages %}{% generation %}{{ m.role }}{% endgeneration %}{% endfor %}",
       "user"},
  });
}

TEST(JinjaTemplate, RefusesUnsupportedStatementsWhenParsing) {
  for (const char* statement : {"macro greet() %}hi{% endmacro", "include 'other.jinja'", "extends 'base.jinja'",
                                "import 'macros.jinja' as m", "call greet()", "raw %}x{% endraw"}) {
    const std::string message =
        error_message([&] { JinjaTemplate(fmt::format("Hello\n  {{% {} %}}", statement), kOrigin); });
    EXPECT_TRUE(contains(message, kOrigin));
    EXPECT_TRUE(contains(message, "line 2"));
    EXPECT_TRUE(contains(message, "unsupported statement"));
    EXPECT_TRUE(contains(message, std::string(statement).substr(0, std::string(statement).find(' '))));
  }
}

TEST(JinjaTemplate, RefusesUnknownFiltersTestsFunctionsAndMethodsWhenParsing) {
  const std::string filter = error_message([] { JinjaTemplate("{{ a }}\n\n{{ a | capitalize }}", kOrigin); });
  EXPECT_TRUE(contains(filter, std::string(kOrigin) + ": line 3, column 8: unknown filter 'capitalize'"));
  const std::string test = error_message([] { JinjaTemplate("{% if a is odd %}{% endif %}", kOrigin); });
  EXPECT_TRUE(contains(test, std::string(kOrigin) + ": line 1, column 12: unknown test 'odd'"));
  const std::string function = error_message([] { JinjaTemplate("{{ range(3) }}", kOrigin); });
  EXPECT_TRUE(contains(function, std::string(kOrigin) + ": line 1, column 4: unknown function 'range'"));
  const std::string method = error_message([] { JinjaTemplate("{{ a.title() }}", kOrigin); });
  EXPECT_TRUE(contains(method, std::string(kOrigin) + ": line 1, column 6: unknown method 'title'"));
  const std::string arguments = error_message([] { JinjaTemplate("{{ a | join(',', 'x') }}", kOrigin); });
  EXPECT_TRUE(contains(arguments, "filter 'join' takes 0 to 1 positional argument(s), got 2"));
}

TEST(JinjaTemplate, ReportsRaiseExceptionWithItsMessage) {
  const JinjaTemplate chat(
      "{% if messages[0]['role'] != 'user' %}\n"
      "  {{ raise_exception('Conversations must start with a user message') }}\n"
      "{% endif %}{{ messages[0]['content'] }}",
      kOrigin);
  EXPECT_EQ(chat.render(json::parse(R"({"messages": [{"role": "user", "content": "hi"}]})")), "hi");
  const std::string message = error_message(
      [&] { chat.render(json::parse(R"({"messages": [{"role": "system", "content": "hi"}]})")); });
  EXPECT_TRUE(contains(message, std::string(kOrigin) + ": line 2"));
  EXPECT_TRUE(contains(message, "raise_exception: Conversations must start with a user message"));
}

TEST(JinjaTemplate, ReportsUnclosedBlocksAndTags) {
  const std::string block = error_message([] { JinjaTemplate("a\n{% for m in messages %}\n{{ m }}", kOrigin); });
  EXPECT_TRUE(contains(block, std::string(kOrigin) + ": line 2, column 4: '{% for %}' is not closed"));
  EXPECT_TRUE(contains(block, "'{% endfor %}'"));
  const std::string nested = error_message([] { JinjaTemplate("{% if a %}{% for b in c %}{% endif %}", kOrigin); });
  EXPECT_TRUE(contains(nested, std::string(kOrigin) + ": line 1, column 30: unexpected '{% endif %}'"));
  EXPECT_TRUE(contains(nested, "the '{% for %}' at line 1, column 14 is not closed yet (expected '{% else %}' or "
                               "'{% endfor %}')"));
  const std::string tag = error_message([] { JinjaTemplate("x\n\n{{ messages[0] ", kOrigin); });
  EXPECT_TRUE(contains(tag, std::string(kOrigin) + ": line 3, column 1: unclosed tag"));
  const std::string comment = error_message([] { JinjaTemplate("{# note", kOrigin); });
  EXPECT_TRUE(contains(comment, std::string(kOrigin) + ": line 1, column 1: unclosed comment"));
  const std::string text = error_message([] { JinjaTemplate("{{ 'open }}", kOrigin); });
  EXPECT_TRUE(contains(text, std::string(kOrigin) + ": line 1, column 4: unclosed string literal"));
}

TEST(JinjaTemplate, ReportsRunTimeErrorsWithTheirLine) {
  const std::string operands = error_message([] { render("\n{{ 1 + 'a' }}", json::object()); });
  EXPECT_TRUE(contains(operands, std::string(kOrigin) + ": line 2, column 6: unsupported operand type(s) for +"));
  const std::string iteration = error_message([] { render("{% for x in 3 %}{% endfor %}", json::object()); });
  EXPECT_TRUE(contains(iteration, "'int' object is not iterable"));
  const std::string assignment = error_message([] { render("{% set d.x = 1 %}", json::parse(R"({"d": {}})")); });
  EXPECT_TRUE(contains(assignment, "cannot assign attribute on non-namespace object 'd'"));
  const std::string variables = error_message([] { render("x", json::array()); });
  EXPECT_TRUE(contains(variables, std::string(kOrigin) + ": the template's variables must be a JSON object"));
}

// jinja2's select, reject and items filter give generators, which print as "<generator
// object ...>", have no length and are used up by one loop.
TEST(JinjaTemplate, IteratesTheGeneratorsOfSelectRejectAndItemsOnce) {
  expect_renders({
      {"{% if words | select('equalto', 'z') %}a generator is true{% endif %}",
       "a generator is true"},
      {"{% for w in words | reject('equalto', 'b') %}{{ w }}{% endfor %} {{ words | select('equalto', 'b') | join }} "
       "{{ words | select('equalto', 'c') | first }}",
       "ac b c"},
      {"{% for pair in mapping | items %}{{ pair }}{% endfor %} {% for key, value in mapping | items %}{{ key }}={{ "
       "value }}{% endfor %} {% for pair in mapping.items() | select('defined') %}{{ pair }}{% endfor %}",
       "('a', 1)('b', 2) a=1b=2 ('a', 1)('b', 2)"},
      {"{{ words | select('equalto', 'a') is iterable }} {{ words | select('equalto', 'a') is sequence }}",
       "True False"},
  });
  const json variables = json::parse(R"({"words": ["a", "b"], "mapping": {"a": 1}})");
  for (const char* source : {"{{ words | select('equalto', 'a') }}", "{{ mapping | items }}"}) {
    EXPECT_TRUE(contains(error_message([&] { render(source, variables); }), "cannot print a generator")) << source;
  }
  EXPECT_TRUE(contains(error_message([&] { render("{{ words | reject('equalto', 'a') | length }}", variables); }),
                       "object of type 'generator' has no len()"));
  EXPECT_TRUE(contains(error_message([&] { render("{{ (words | select('equalto', 'a'))[0] }}", variables); }),
                       "unsupported: attributes and items of a generator"));
  // jinja2's second loop would see the generator used up.
  EXPECT_TRUE(contains(error_message([&] {
                         render("{% set found = words | select('equalto', 'a') %}{% for w in found %}{{ w }}{% endfor "
                                "%}{% for w in found %}{{ w }}{% endfor %}",
                                variables);
                       }),
                       "unsupported: using a generator (select, reject, items) twice"));
  // The test's arguments are checked when parsing, like a test's after `is`.
  EXPECT_TRUE(contains(error_message([] { JinjaTemplate("{{ ['a'] | select('equalto') }}", kOrigin); }),
                       "test 'equalto' takes 1 positional argument(s), got 0"));
}

// jinja2 gives Python's bound methods for these (defined, truthy, printed as
// "<built-in method ...>"); a missing attribute is undefined there and here.
TEST(JinjaTemplate, RefusesPythonsMethodsAsAttributes) {
  expect_renders({
      {"{{ text.capitalize_it is defined }} [{{ text.foo }}] {{ words.append is defined }} {{ mapping.c is defined }}",
       "False [] False False"},
  });
  for (const char* source : {"{{ text.title }}", "{{ text.title is defined }}", "{{ words.copy }}", "{{ (1).real }}"}) {
    const std::string message = error_message([&] { render(source, json::parse(R"({"text": "a", "words": []})")); });
    EXPECT_TRUE(contains(message, "unsupported: the method or attribute")) << source;
  }
}

TEST(JinjaTemplate, WritesReprAsPython) {
  expect_renders({
      {"{{ ['\\u200b', '\\u2028', '\\ufeff', '\\x85', '\\xa0', '\\xad', '\\ue000', 'é', 'Ω', 'я', '中', 'あ', '한', "
       "'→', '😀', \"'\"] }}",
       R"(['\u200b', '\u2028', '\ufeff', '\x85', '\xa0', '\xad', '\ue000', 'é', 'Ω', 'я', '中', 'あ', '한', '→', '😀', "'"])"},
  });
  // U+0378 is unassigned: Python escapes it until a Unicode version assigns it.
  EXPECT_TRUE(contains(error_message([] { render("{{ ['\\u0378'] }}", json::object()); }),
                       "unsupported: repr() of U+0378"));
}

TEST(JinjaTemplate, ComputesFloatsAsPython) {
  expect_renders({
      {"{{ 1 // 0.1 }} {{ -4.0 % 2 }} {{ 4.0 % -2 }} {{ -7.5 // 2 }} {{ 7.5 % -2 }} {{ -0.0 // 1 }} {{ 7 // 2.0 }}",
       "9.0 0.0 -0.0 -4.0 -0.5 -0.0 3.0"},
      {"{{ 1e999 }} {{ -1e999 }} {{ 1e-999 }} {{ 0.0001e312 }} {{ [1e999, -1e999, 1e999 - 1e999] | tojson }}",
       "inf -inf 0.0 1e+308 [Infinity, -Infinity, NaN]"},
      {"{{ 9007199254740993 == 9007199254740992.0 }} {{ 9007199254740993 > 9007199254740992.0 }} {{ -2.5 < -2 }} "
       "{{ (1e999 - 1e999) <= 1 }} {{ (1e999 - 1e999) >= 1 }} {{ 9007199254740993 / 2.0 }}",
       "False True True False False 4503599627370496.0"},
  });
  // Python divides integers exactly: 3002399751580331.0, where doubles give ...0.5.
  EXPECT_TRUE(contains(error_message([] { render("{{ 9007199254740993 / 3 }}", json::object()); }),
                       "unsupported: dividing integers from 2**53 on"));
}

TEST(JinjaTemplate, RefusesIntegerOverflow) {
  expect_renders({
      {"{{ (-9223372036854775807 - 1) % -1 }} {{ 7 // -1 }} {{ -7 % -1 }} {{ -9223372036854775807 // -1 }}",
       "0 -7 0 9223372036854775807"},
  });
  // Python's integers do not overflow; past int64 the template is refused.
  for (const char* source : {"{{ (-9223372036854775807 - 1) // -1 }}", "{{ 9223372036854775807 + 1 }}",
                             "{{ -9223372036854775807 - 2 }}", "{{ 3037000500 * 3037000500 }}"}) {
    EXPECT_TRUE(contains(error_message([&] { render(source, json::object()); }), "integer overflow")) << source;
  }
}

TEST(JinjaTemplate, SlicesWithHugeSteps) {
  expect_renders({
      {"{{ 'abc'[1::9223372036854775807] }}|{{ 'abc'[::-9223372036854775807] }}|{{ items[::-9223372036854775807] }}|{{ "
       "items[-9223372036854775807:9223372036854775807:4611686018427387904] }}|{{ "
       "unicode[9223372036854775807:-9223372036854775807:-3] }}",
       "b|c|[5]|[1]|döoé"},
  });
}

// Results above 16 MiB of text or a million items are refused before they are built;
// so is a render that would take long.
TEST(JinjaTemplate, RefusesResultsAndRendersAboveItsCaps) {
  expect_renders({
      {"{{ '' * 9223372036854775807 }}|{{ [] * 9223372036854775807 }}|{{ 'ab' * -3 }}|{{ words * 2 }}|{{ 2 * 'ab' }}",
       "|[]||['a', 'b', 'c', 'a', 'b', 'c']|abab"},
  });
  for (const char* source : {"{{ 'a' * 10000000000 }}", "{{ [1, 2] * 600000 }}",
                             "{% set ns = namespace(s='a') %}{% for i in 'x' * 30 %}{% set ns.s = ns.s + ns.s %}{% "
                             "endfor %}",
                             "{% set s = 'a' * 10000000 %}{% for i in 'x' * 3 %}{{ s }}{% endfor %}"}) {
    EXPECT_TRUE(contains(error_message([&] { render(source, json::object()); }), "above 16 MiB of text")) << source;
  }
  const std::string slow = error_message([] {
    render("{% set s = ('x' * 4000) * 4000 %}{% for i in 'x' * 1000 %}{% set copy = s %}{% endfor %}", json::object());
  });
  EXPECT_TRUE(contains(slow, "unsupported: rendering takes more than 100000000 steps"));
}

TEST(JinjaTemplate, ReadsNumberLiteralsAsJinja) {
  expect_renders({
      {"{{ 007.5 }} {{ 00 }} {{ 0_0 }} {{ 1_000e1_0 }} {{ 10_000 }} {{ 0.5_5 }}",
       "7.5 0 0 10000000000000.0 10000 0.55"},
  });
  // jinja2 reads 0777 as 0 then 777, and 1__0 as 1 then the name __0: syntax errors.
  for (const char* source : {"{{ 0777 }}", "{{ 1__0 }}", "{{ 1_ }}", "{{ 1.5_ }}"}) {
    EXPECT_FALSE(error_message([&] { JinjaTemplate(source, kOrigin); }).empty()) << source;
  }
}

// Jinja decodes a string literal as Python's "unicode-escape" after writing its non-ASCII
// characters as escapes: a backslash before one stays, with the escape.
TEST(JinjaTemplate, DecodesStringLiteralsAsJinja) {
  expect_renders({
      {"{{ '\\é' }}|{{ '\\中' }}|{{ '\\😀' }}|{{ '\\q' }}|{{ 'ü' }}",
       R"(\xe9|\u4e2d|\U0001f600|\q|ü)"},
  });
  EXPECT_TRUE(contains(error_message([] { JinjaTemplate("{{ '\\U00110000' }}", kOrigin); }),
                       "line 1, column 5: illegal Unicode character"));
  EXPECT_TRUE(contains(error_message([] { JinjaTemplate("{{ 'a\\ud800' }}", kOrigin); }),
                       "line 1, column 6: unsupported: a surrogate"));
}

TEST(JinjaTemplate, TakesABraceBeforeANulByteAsText) {
  EXPECT_EQ(render(std::string("a{\0b{{ 1 }}{\0", 13), json::object()), std::string("a{\0b1{\0", 7));
}

// transformers could not read such a file either: Python's UTF-8 decoder refuses it.
TEST(JinjaTemplate, RefusesATemplateThatIsNotValidUtf8) {
  for (const auto& [bytes, offset] : std::vector<std::pair<std::string, int>>{
           {"ab\xff", 2}, {"\xc0\x80", 0}, {"x\xed\xa0\x80", 1}, {"\xf4\x90\x80\x80", 0}, {"abc\xe4\xb8", 3}}) {
    const std::string& source = bytes;  // (clang 14 cannot capture a structured binding)
    EXPECT_TRUE(contains(error_message([&] { JinjaTemplate(source, kOrigin); }),
                         fmt::format("{}: the template is not valid UTF-8 (at byte {})", kOrigin, offset)));
  }
}

TEST(JinjaTemplate, RefusesANamespaceInsideANamespace) {
  // (It could hold itself, a cycle that shared_ptr never frees.)
  EXPECT_TRUE(contains(error_message([] { render("{% set ns = namespace() %}{% set ns.me = ns %}", json::object()); }),
                       "unsupported: a namespace or loop as a namespace attribute"));
}

TEST(JinjaTemplate, RefusesNestingDeeperThanItsLimitInsteadOfOverflowingTheStack) {
  const auto repeated = [](int times, const char* text) {
    std::string out;
    for (int i = 0; i < times; ++i) out += text;
    return out;
  };
  const auto nested = [&](int levels, const char* open, const char* close) {
    return repeated(levels, open) + "1" + repeated(levels, close);
  };
  EXPECT_EQ(JinjaTemplate("{{ " + nested(50, "(", ")") + " }}", kOrigin).render(json::object()), "1");
  EXPECT_EQ(JinjaTemplate("{{ 1" + repeated(150, " + 1") + " }}", kOrigin).render(json::object()), "151");
  // Recursion nests, and so do loops: 1 + 1 + ..., a.b.c..., a[0][0]..., x|trim|trim...
  // build trees that evaluating and destroying recurse on.
  for (const std::string& source :
       {"{{ " + nested(5000, "(", ")") + " }}", "{{ " + nested(5000, "not ", "") + " }}",
        "{{ " + nested(5000, "-", "") + " }}", nested(5000, "{% if true %}", "{% endif %}"),
        "{{ 1" + repeated(100000, " + 1") + " }}", "{{ a" + repeated(100000, ".b") + " }}",
        "{{ a" + repeated(100000, "[0]") + " }}", "{{ x" + repeated(100000, " | trim") + " }}",
        "{{ a" + repeated(100000, " if b") + " }}", "{{ a" + repeated(100000, " or b") + " }}",
        "{{ a" + repeated(100000, " is eq b") + " }}"}) {
    const std::string message = error_message([&] { JinjaTemplate(source, kOrigin); });
    EXPECT_TRUE(contains(message, "nested deeper than 200 levels")) << message;
  }
  // Values nest by loops too; repr, tojson and copies recurse on them.
  for (const char* source :
       {"{% set ns = namespace(x=1) %}{% for i in 'x' * 1000 %}{% set ns.x = [ns.x] %}{% endfor %}",
        "{% set ns = namespace(x=1) %}{% for i in 'x' * 1000 %}{% set ns.x = {'a': ns.x} %}{% endfor %}"}) {
    const std::string message = error_message([&] { render(source, json::object()); });
    EXPECT_TRUE(contains(message, "unsupported: values nested deeper than 200 levels")) << message;
  }
}

}  // namespace
