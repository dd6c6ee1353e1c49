// A Jinja2 interpreter for the subset that Hugging Face chat templates use (the
// `chat_template` string of a model's tokenizer_config.json), rendering exactly as
// transformers' apply_chat_template does: jinja2 with trim_blocks and lstrip_blocks,
// the loopcontrols extension ({% break %}, {% continue %}), {% generation %} passed
// through, the globals raise_exception(message) and strftime_now(format) (local time, as there),
// and tojson as json.dumps(x, ensure_ascii=False, indent=indent).
//
// Anything outside the subset (macros, call blocks, include/extends/import, unknown
// filters, tests, functions or methods) is refused when the template is parsed, by
// name and line; an operation the subset cannot do on a value, or one whose result
// would be too large, is refused when it is rendered. As far as is known it never
// renders something jinja2 would render differently, except where the input type
// imposes it: nlohmann::json keeps an object's keys sorted, so iterating a mapping of
// the variables, tojson and printing one list its keys in sorted order where Python
// keeps insertion order (a dict literal in the template must list its keys in sorted
// order), and it reads integers above 2**64 - 1 in the variables as floats.
//
// src/data/jinja_template.cpp lists what is supported and what is refused.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>

namespace can {

class JinjaTemplate {
 public:
  // Parses `source`; throws can::Error naming `origin` (e.g. "models/qwen/
  // tokenizer_config.json: chat_template"), the line and column, and what is
  // unsupported or malformed.
  JinjaTemplate(const std::string& source, std::string origin);

  // Renders with the variables of a JSON object (messages, add_generation_prompt,
  // bos_token, ...). Throws can::Error naming the origin, line and column on a
  // run-time problem: raise_exception's message, an unsupported operation on a value.
  std::string render(const nlohmann::json& variables) const;

 private:
  struct Program;  // the parsed template (defined in the .cpp)
  std::shared_ptr<const Program> program_;
};

}  // namespace can
