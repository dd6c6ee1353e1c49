// Typed options read from YAML: a schema of keys (a dotted path, a type, a
// default, an allowed range or set of choices, a one-line meaning) grouped in
// sections; a reader that takes a YAML file and `--set key.path=value`
// overrides and checks every value against the schema; a writer that prints
// every key with its meaning as a commented YAML file that reads back to the
// same values. The engine knows nothing of CAN's settings: src/pipeline/config.cpp
// declares those and binds each key to a field of can::Config.
//
// Errors are can::Error naming the source (`file:line`, or the `--set`
// argument) and the key path: an unknown key (with a "did you mean" for near
// misses), a key given twice, a value of the wrong type, out of range or not
// among the choices.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace can {

// One value; its alternative is the key's type: int, float, bool, string, list of floats, list of strings.
using OptionValue = std::variant<int64_t, double, bool, std::string, std::vector<double>, std::vector<std::string>>;

// "int", "float", "bool", "string", "list of floats" or "list of strings".
std::string option_type_name(const OptionValue& value);

// The value as YAML text: `0.5`, `cosine`, `"a b"`, `[1.0, 2.0]`. Floats always
// carry a '.' or an exponent and read back as the same double.
std::string option_value_yaml(const OptionValue& value);

// Numbers allowed by a key: each bound optional, open or closed.
struct NumberRange {
  std::optional<double> low, high;
  bool low_open = false, high_open = false;

  bool contains(double value) const;
  std::string describe() const;  // "[0, 1)", "> 0", or "" without bounds
};

struct OptionKey {
  std::string path;  // "dpo.beta"
  OptionValue default_value;
  std::string doc;
  NumberRange range;                 // int and float keys, and each element of a float list
  std::vector<std::string> choices;  // string keys, and each element of a string list; empty: any
  bool device_name = false;          // auto, cpu, cuda or cuda:N
  bool affects_artifacts = true;     // false: a run's outputs do not depend on the value (a directory, a log level)
  bool one_string_is_a_list = false;  // a list of strings also read from one string: "a" is [a], "" is []

  OptionKey& at_least(double bound);
  OptionKey& above(double bound);
  OptionKey& at_most(double bound);
  OptionKey& below(double bound);
  OptionKey& one_of(std::vector<std::string> allowed);
  OptionKey& a_device();
  OptionKey& without_effect_on_artifacts();
  OptionKey& or_one_string();

  std::string allowed_values() const;  // "one of: cosine, constant", "range: > 0" or ""
  std::string leaf_name() const;       // "beta"
};

struct OptionSection {
  std::string path;  // "pecan.safety_dpo"
  std::string doc;
};

// Keys and sections in declaration order, which is the order they are written in.
class OptionSchema {
 public:
  void section(const std::string& path, const std::string& doc);
  OptionKey& key(const std::string& path, OptionValue default_value, const std::string& doc);

  const std::vector<OptionKey>& keys() const { return keys_; }
  const std::vector<OptionSection>& sections() const { return sections_; }
  const OptionKey* find(const std::string& path) const;
  bool is_section(const std::string& path) const;
  // Names directly under `section` ("" for the top level): its keys and subsections.
  std::vector<std::string> children(const std::string& section) const;

  // An error when a key or section is declared twice or outside a declared
  // section, or a default is not an allowed value. A unit test runs it; loading does not.
  void check() const;

 private:
  std::vector<OptionKey> keys_;
  std::vector<OptionSection> sections_;
  std::map<std::string, size_t> key_index_;
};

// One `--set key.path=value`. The value is read as a YAML scalar or flow list.
struct OptionOverride {
  std::string key;
  std::string value;
  std::string origin;  // named in errors: "--set dpo.beta=abc"
};

// Splits "key.path=value" at the first '='; an error when there is none or the key is empty.
OptionOverride parse_set_option(const std::string& assignment);

// Every key's value, and where each was set.
struct OptionValues {
  std::map<std::string, OptionValue> values;   // every key of the schema
  std::map<std::string, std::string> origins;  // "file:line" or "--set ..."; a key at its default has none

  // "file.yaml:12", "--set k=v", or "file.yaml (default)".
  std::string origin_of(const std::string& path, const std::string& file) const;
};

// Reads `file` (missing keys take their defaults), then applies `overrides` in order.
OptionValues read_options(const OptionSchema& schema, const std::filesystem::path& file,
                          const std::vector<OptionOverride>& overrides);

// The YAML of every key in schema order, each preceded by a comment with its
// meaning, type, default and allowed values, after `header` (comment lines).
std::string options_to_yaml(const OptionSchema& schema, const std::function<OptionValue(const OptionKey&)>& value_of,
                            const std::string& header);

}  // namespace can
