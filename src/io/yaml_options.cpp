#include "can/yaml_options.h"

#include <fmt/format.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <set>
#include <utility>

#include "can/atomic_file.h"
#include "can/error.h"

namespace can {
namespace {

// The alternatives of OptionValue, in order.
enum class ValueType { kInt, kFloat, kBool, kString, kFloatList, kStringList };

std::string parent_of(const std::string& path) {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? "" : path.substr(0, dot);
}

// ---- Text forms of values (YAML) -------------------------------------------------

bool parses_as_number(const std::string& text) {
  if (text.empty()) return false;
  char* end = nullptr;
  std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size();
}

// Plain when unambiguous, else double-quoted with escapes.
std::string yaml_string(const std::string& text) {
  static const std::set<std::string> kSpecialWords = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"};
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  const bool plain_characters = !text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '.' || c == '/' || c == '-' || c == ':' || c == '+';
  });
  if (plain_characters && std::isalnum(static_cast<unsigned char>(text.front())) && text.back() != ':' &&
      !kSpecialWords.count(lower) && !parses_as_number(text)) {
    return text;
  }
  std::string quoted = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        quoted += "\\\"";
        break;
      case '\\':
        quoted += "\\\\";
        break;
      case '\n':
        quoted += "\\n";
        break;
      case '\t':
        quoted += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          quoted += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
        } else {
          quoted += c;
        }
    }
  }
  return quoted + "\"";
}

// The shortest text that reads back as the same double, always with a '.' or exponent.
std::string yaml_float(double value) {
  std::string text = fmt::format("{}", value);
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

template <typename T, typename Format>
std::string yaml_list(const std::vector<T>& values, Format format) {
  std::string text = "[";
  for (size_t i = 0; i < values.size(); ++i) text += (i ? ", " : "") + format(values[i]);
  return text + "]";
}

}  // namespace

std::string option_value_yaml(const OptionValue& value) {
  struct Visitor {
    std::string operator()(int64_t v) const { return fmt::format("{}", v); }
    std::string operator()(double v) const { return yaml_float(v); }
    std::string operator()(bool v) const { return v ? "true" : "false"; }
    std::string operator()(const std::string& v) const { return yaml_string(v); }
    std::string operator()(const std::vector<double>& v) const { return yaml_list(v, yaml_float); }
    std::string operator()(const std::vector<std::string>& v) const { return yaml_list(v, yaml_string); }
  };
  return std::visit(Visitor{}, value);
}


std::string option_type_name(const OptionValue& value) {
  switch (static_cast<ValueType>(value.index())) {
    case ValueType::kInt:
      return "int";
    case ValueType::kFloat:
      return "float";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kFloatList:
      return "list of floats";
    case ValueType::kStringList:
      return "list of strings";
  }
  return "?";
}

// ---- The schema ---------------------------------------------------------------------

bool NumberRange::contains(double value) const {
  if (low && (low_open ? value <= *low : value < *low)) return false;
  if (high && (high_open ? value >= *high : value > *high)) return false;
  return true;
}

std::string NumberRange::describe() const {
  if (low && high) return fmt::format("{}{}, {}{}", low_open ? "(" : "[", *low, *high, high_open ? ")" : "]");
  if (low) return fmt::format("{} {}", low_open ? ">" : ">=", *low);
  if (high) return fmt::format("{} {}", high_open ? "<" : "<=", *high);
  return "";
}

OptionKey& OptionKey::at_least(double bound) {
  range.low = bound;
  return *this;
}

OptionKey& OptionKey::above(double bound) {
  range.low = bound;
  range.low_open = true;
  return *this;
}

OptionKey& OptionKey::at_most(double bound) {
  range.high = bound;
  return *this;
}

OptionKey& OptionKey::below(double bound) {
  range.high = bound;
  range.high_open = true;
  return *this;
}

OptionKey& OptionKey::one_of(std::vector<std::string> allowed) {
  choices = std::move(allowed);
  return *this;
}

OptionKey& OptionKey::a_device() {
  device_name = true;
  return *this;
}

OptionKey& OptionKey::without_effect_on_artifacts() {
  affects_artifacts = false;
  return *this;
}

OptionKey& OptionKey::or_one_string() {
  one_string_is_a_list = true;
  return *this;
}

std::string OptionKey::allowed_values() const {
  if (device_name) return "one of: auto, cpu, cuda, cuda:N";
  if (!choices.empty()) return fmt::format("one of: {}", fmt::join(choices, ", "));
  const std::string described = range.describe();
  return described.empty() ? "" : "range: " + described;
}

std::string OptionKey::leaf_name() const { return path.substr(path.rfind('.') + 1); }

void OptionSchema::section(const std::string& path, const std::string& doc) { sections_.push_back({path, doc}); }

OptionKey& OptionSchema::key(const std::string& path, OptionValue default_value, const std::string& doc) {
  OptionKey key;
  key.path = path;
  key.default_value = std::move(default_value);
  key.doc = doc;
  key_index_.emplace(path, keys_.size());
  keys_.push_back(std::move(key));
  return keys_.back();
}

const OptionKey* OptionSchema::find(const std::string& path) const {
  const auto found = key_index_.find(path);
  return found == key_index_.end() ? nullptr : &keys_[found->second];
}

bool OptionSchema::is_section(const std::string& path) const {
  return std::any_of(sections_.begin(), sections_.end(), [&](const OptionSection& s) { return s.path == path; });
}

std::vector<std::string> OptionSchema::children(const std::string& section) const {
  std::vector<std::string> names;
  const auto add_child = [&](const std::string& path) {
    if (parent_of(path) != section) return;
    const std::string name = section.empty() ? path : path.substr(section.size() + 1);
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  };
  for (const OptionSection& s : sections_) add_child(s.path);
  for (const OptionKey& key : keys_) add_child(key.path);
  return names;
}

namespace {

// Edit distance with adjacent transpositions (optimal string alignment).
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t substitution = d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, substitution});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// " (did you mean 'x'?)" for the nearest candidates within a third of the word's length, or "".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  const size_t limit = std::max<size_t>(1, std::min<size_t>(3, word.size() / 3));
  size_t best = limit + 1;
  std::vector<std::string> nearest;
  for (const std::string& candidate : candidates) {
    const size_t distance = edit_distance(word, candidate);
    if (distance < best) {
      best = distance;
      nearest = {candidate};
    } else if (distance == best) {
      nearest.push_back(candidate);
    }
  }
  if (nearest.empty()) return "";
  return fmt::format(" (did you mean '{}'?)", fmt::join(nearest, "' or '"));
}

// Where a value came from: "file.yaml:12" or "--set dpo.beta=0.2".
struct Source {
  std::string file;
  std::string override_origin;  // set for --set values

  std::string at(const YAML::Node& node) const {
    if (!override_origin.empty()) return override_origin;
    return fmt::format("{}:{}", file, node.Mark().line + 1);
  }
};

[[noreturn]] void fail_at(const std::string& where, const std::string& path, const std::string& problem) {
  fail("{}: {}: {}", where, path, problem);
}

std::string node_kind(const YAML::Node& node) {
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  if (node.IsNull()) return "no value";
  return fmt::format("'{}'", node.Scalar());
}

// yaml-cpp tags quoted scalars "!" and plain ones "?": a quoted "3" is a string, not a number.
bool is_quoted(const YAML::Node& node) { return node.Tag() == "!"; }

const std::string& scalar_text(const YAML::Node& node, const std::string& expected, const std::string& where,
                               const std::string& path) {
  if (!node.IsScalar()) fail_at(where, path, fmt::format("expected {}, got {}", expected, node_kind(node)));
  return node.Scalar();
}

int64_t read_int(const YAML::Node& node, const std::string& where, const std::string& path) {
  std::string text = scalar_text(node, "an int", where, path);
  if (is_quoted(node)) fail_at(where, path, fmt::format("expected an int, got the quoted string \"{}\"", text));
  if (!text.empty() && text.front() == '+') text.erase(0, 1);
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error == std::errc::result_out_of_range) fail_at(where, path, fmt::format("{} overflows a 64-bit int", text));
  if (error != std::errc() || end != text.data() + text.size()) {
    fail_at(where, path, fmt::format("expected an int, got {}", node_kind(node)));
  }
  return value;
}

double read_float(const YAML::Node& node, const std::string& where, const std::string& path) {
  const std::string text = scalar_text(node, "a float", where, path);
  if (is_quoted(node)) fail_at(where, path, fmt::format("expected a float, got the quoted string \"{}\"", text));
  const bool number_characters = !text.empty() && text.find_first_not_of("0123456789+-.eE") == std::string::npos;
  char* end = nullptr;
  const double value = number_characters ? std::strtod(text.c_str(), &end) : 0.0;
  if (!number_characters || end != text.c_str() + text.size()) {
    fail_at(where, path, fmt::format("expected a float, got {}", node_kind(node)));
  }
  if (!std::isfinite(value)) fail_at(where, path, fmt::format("{} is not a finite float", text));
  return value;
}

bool read_bool(const YAML::Node& node, const std::string& where, const std::string& path) {
  const std::string text = scalar_text(node, "true or false", where, path);
  if (!is_quoted(node)) {
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
  }
  fail_at(where, path, fmt::format("expected true or false, got {}", node_kind(node)));
}

std::string read_string(const YAML::Node& node, const std::string& where, const std::string& path) {
  if (node.IsNull()) fail_at(where, path, "has no value; write \"\" for an empty string, or leave the key out");
  return scalar_text(node, "a string", where, path);
}

template <typename T, typename Read>
std::vector<T> read_list(const YAML::Node& node, const std::string& where, const Source& source,
                         const std::string& path, const std::string& example, Read read_element) {
  if (!node.IsSequence()) {
    fail_at(where, path, fmt::format("expected a list like {}, got {}", example, node_kind(node)));
  }
  std::vector<T> values;
  for (size_t i = 0; i < node.size(); ++i) {
    values.push_back(read_element(node[i], source.at(node[i]), fmt::format("{}[{}]", path, i)));
  }
  return values;
}

bool is_device_name(const std::string& name) {
  if (name == "auto" || name == "cpu" || name == "cuda") return true;
  if (name.rfind("cuda:", 0) != 0 || name.size() == 5) return false;
  return name.find_first_not_of("0123456789", 5) == std::string::npos;
}

void check_number(const OptionKey& key, double value, const std::string& where, const std::string& path) {
  if (!key.range.contains(value)) {
    fail_at(where, path, fmt::format("{} is out of range (allowed: {})", value, key.range.describe()));
  }
}

void check_choice(const OptionKey& key, const std::string& value, const std::string& where, const std::string& path) {
  if (key.device_name && !is_device_name(value)) {
    fail_at(where, path, fmt::format("'{}' is not a device (expected auto, cpu, cuda or cuda:N)", value));
  }
  if (!key.choices.empty() && std::find(key.choices.begin(), key.choices.end(), value) == key.choices.end()) {
    fail_at(
        where, path,
        fmt::format("'{}' is not one of: {}{}", value, fmt::join(key.choices, ", "), did_you_mean(value, key.choices)));
  }
}

// Reads and checks one key's value; `where` names the key's line or the --set argument,
// list elements are named by their own lines.
OptionValue read_value(const OptionKey& key, const YAML::Node& node, const std::string& where, const Source& source) {
  const std::string& path = key.path;
  switch (static_cast<ValueType>(key.default_value.index())) {
    case ValueType::kInt: {
      const int64_t value = read_int(node, where, path);
      check_number(key, static_cast<double>(value), where, path);
      return value;
    }
    case ValueType::kFloat: {
      const double value = read_float(node, where, path);
      check_number(key, value, where, path);
      return value;
    }
    case ValueType::kBool:
      return read_bool(node, where, path);
    case ValueType::kString: {
      std::string value = read_string(node, where, path);
      check_choice(key, value, where, path);
      return value;
    }
    case ValueType::kFloatList:
      return read_list<double>(node, where, source, path, "[1.0, 2.0]",
                               [&](const YAML::Node& element, const std::string& at, const std::string& element_path) {
                                 const double value = read_float(element, at, element_path);
                                 check_number(key, value, at, element_path);
                                 return value;
                               });
    case ValueType::kStringList:
      if (key.one_string_is_a_list && node.IsScalar()) {
        std::string value = read_string(node, where, path);
        if (value.empty()) return std::vector<std::string>{};
        check_choice(key, value, where, path);
        return std::vector<std::string>{std::move(value)};
      }
      return read_list<std::string>(
          node, where, source, path, "[a, b]",
          [&](const YAML::Node& element, const std::string& at, const std::string& element_path) {
            std::string value = read_string(element, at, element_path);
            check_choice(key, value, at, element_path);
            return value;
          });
  }
  fail("unreachable");
}


std::string unknown_key_message(const OptionSchema& s, const std::string& path) {
  std::vector<std::string> known;
  for (const OptionSection& section : s.sections()) known.push_back(section.path);
  for (const OptionKey& key : s.keys()) known.push_back(key.path);
  std::string suggestion = did_you_mean(path, known);
  if (suggestion.empty()) {
    // The right name in the wrong section: "sampling.beta" -> dpo.beta, dual.beta.
    const std::string leaf = path.substr(path.rfind('.') + 1);
    std::vector<std::string> same_leaf;
    for (const OptionKey& key : s.keys()) {
      if (key.leaf_name() == leaf && key.path.find('.') != std::string::npos) same_leaf.push_back(key.path);
    }
    if (!same_leaf.empty()) suggestion = fmt::format(" (did you mean '{}'?)", fmt::join(same_leaf, "' or '"));
  }
  std::string parent = parent_of(path);
  while (!parent.empty() && !s.is_section(parent)) parent = parent_of(parent);
  return fmt::format("unknown key{}; {} has: {}", suggestion,
                     parent.empty() ? std::string("the top level") : "'" + parent + "'",
                     fmt::join(s.children(parent), ", "));
}

// ---- Loading -----------------------------------------------------------------------

// yaml-cpp's message for an error; its parser says "bad file" when nesting runs past
// its depth limit.
std::string yaml_error_text(const YAML::Exception& error) {
  if (const auto* deep = dynamic_cast<const YAML::DeepRecursion*>(&error)) {
    return fmt::format("nested {} levels deep, past what the YAML parser takes", deep->depth());
  }
  return error.msg;
}

class OptionReader {
 public:
  OptionReader(const OptionSchema& schema, std::string file) : schema_(schema), file_(std::move(file)) {
    for (const OptionKey& key : schema_.keys()) result_.values[key.path] = key.default_value;
  }

  void read_file_tree(const YAML::Node& root) {
    if (root.IsNull()) return;
    if (!root.IsMap()) {
      fail("{}:{}: expected a mapping of keys at the top level, got {}", file_, root.Mark().line + 1, node_kind(root));
    }
    read_mapping(root, "");
  }

  void apply(const OptionOverride& override_value) {
    const OptionKey* key = schema_.find(override_value.key);
    if (key == nullptr) {
      const std::string problem = schema_.is_section(override_value.key)
                                      ? fmt::format("is a section; set one of its keys: {}",
                                                    fmt::join(schema_.children(override_value.key), ", "))
                                      : unknown_key_message(schema_, override_value.key);
      fail_at(override_value.origin, override_value.key, problem);
    }
    // An empty value is the empty string for string keys (`--set models.policy=`).
    if (override_value.value.empty() && std::holds_alternative<std::string>(key->default_value)) {
      store(*key, std::string(), override_value.origin);
      return;
    }
    YAML::Node node;
    try {
      node = YAML::Load(override_value.value);
    } catch (const YAML::Exception& error) {
      fail_at(override_value.origin, override_value.key, fmt::format("not a YAML value: {}", yaml_error_text(error)));
    }
    store(*key, read_value(*key, node, override_value.origin, Source{file_, override_value.origin}),
          override_value.origin);
  }

  OptionValues take() { return std::move(result_); }

 private:
  void read_mapping(const YAML::Node& mapping, const std::string& prefix) {
    std::map<std::string, int> first_line;
    for (const auto& entry : mapping) {
      const YAML::Node& name_node = entry.first;
      const std::string where = fmt::format("{}:{}", file_, name_node.Mark().line + 1);
      if (!name_node.IsScalar()) fail("{}: a key must be a plain name, got {}", where, node_kind(name_node));
      const std::string path = prefix.empty() ? name_node.Scalar() : prefix + "." + name_node.Scalar();
      const auto [previous, inserted] = first_line.emplace(path, name_node.Mark().line + 1);
      if (!inserted) fail_at(where, path, fmt::format("appears twice (first at line {})", previous->second));
      if (const OptionKey* key = schema_.find(path)) {
        store(*key, read_value(*key, entry.second, where, Source{file_, ""}), where);
      } else if (schema_.is_section(path)) {
        if (entry.second.IsNull()) continue;
        if (!entry.second.IsMap()) {
          fail_at(where, path,
                  fmt::format("is a section; expected a mapping of its keys ({}), got {}",
                              fmt::join(schema_.children(path), ", "), node_kind(entry.second)));
        }
        read_mapping(entry.second, path);
      } else {
        fail_at(where, path, unknown_key_message(schema_, path));
      }
    }
  }

  void store(const OptionKey& key, OptionValue value, const std::string& where) {
    result_.values[key.path] = std::move(value);
    result_.origins[key.path] = where;
  }

  const OptionSchema& schema_;
  std::string file_;
  OptionValues result_;
};

}  // namespace

void OptionSchema::check() const {
  std::set<std::string> seen;
  for (const OptionSection& s : sections_) {
    can::check(seen.insert(s.path).second, "option schema: '{}' declared twice", s.path);
    const std::string parent = parent_of(s.path);
    can::check(parent.empty() || seen.count(parent), "option schema: section '{}' before its parent", s.path);
  }
  for (const OptionKey& key : keys_) {
    can::check(seen.insert(key.path).second, "option schema: '{}' declared twice", key.path);
    const std::string parent = parent_of(key.path);
    can::check(parent.empty() || is_section(parent), "option schema: key '{}' outside a section", key.path);
    // The default must pass the checks a read value passes.
    try {
      const YAML::Node node = YAML::Load(option_value_yaml(key.default_value));
      can::check(read_value(key, node, "default", Source{"schema", "default"}) == key.default_value,
            "reads back as another value");
    } catch (const Error& error) {
      fail("option schema: the default of '{}' is not allowed: {}", key.path, error.what());
    }
  }
}

OptionOverride parse_set_option(const std::string& assignment) {
  const size_t equals = assignment.find('=');
  check(equals != std::string::npos && equals > 0, "--set {}: expected key.path=value, like --set dpo.beta=0.2",
        assignment);
  return {assignment.substr(0, equals), assignment.substr(equals + 1), "--set " + assignment};
}

std::string OptionValues::origin_of(const std::string& path, const std::string& file) const {
  const auto found = origins.find(path);
  return found == origins.end() ? file + " (default)" : found->second;
}

OptionValues read_options(const OptionSchema& schema, const std::filesystem::path& file,
                          const std::vector<OptionOverride>& overrides) {
  const std::string text = read_text_file(file);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& error) {
    fail("{}:{}: not valid YAML: {}", file.string(), error.mark.line + 1, yaml_error_text(error));
  }
  OptionReader reader(schema, file.string());
  reader.read_file_tree(root);
  for (const OptionOverride& override_value : overrides) reader.apply(override_value);
  return reader.take();
}

std::string options_to_yaml(const OptionSchema& s, const std::function<OptionValue(const OptionKey&)>& value_of,
                            const std::string& header) {
  std::string out = header;
  const auto section_doc = [&](const std::string& path) -> const std::string& {
    return std::find_if(s.sections().begin(), s.sections().end(),
                        [&](const OptionSection& section) { return section.path == path; })
        ->doc;
  };
  std::string open_section;  // the section of the previous key
  for (const OptionKey& key : s.keys()) {
    const std::string section = parent_of(key.path);
    if (section != open_section) {
      // Open the sections between the common ancestor and this key's section.
      std::string common = open_section;
      while (!common.empty() && section != common && section.rfind(common + ".", 0) != 0) common = parent_of(common);
      std::vector<std::string> to_open;
      for (std::string path = section; path != common; path = parent_of(path)) to_open.push_back(path);
      for (auto path = to_open.rbegin(); path != to_open.rend(); ++path) {
        const size_t depth = std::count(path->begin(), path->end(), '.');
        const std::string indent(2 * depth, ' ');
        if (depth == 0) out += "\n";
        out += fmt::format("{}# {}\n{}{}:\n", indent, section_doc(*path), indent, path->substr(path->rfind('.') + 1));
      }
      if (section.empty()) out += "\n";
      open_section = section;
    }
    const std::string indent(section.empty() ? 0 : 2 * (std::count(section.begin(), section.end(), '.') + 1), ' ');
    std::string details =
        fmt::format("{}, default: {}", option_type_name(key.default_value), option_value_yaml(key.default_value));
    if (const std::string allowed = key.allowed_values(); !allowed.empty()) details += ", " + allowed;
    // The details go on a line of their own when the comment would pass 120 columns.
    std::string comment = fmt::format("{}# {} ({})", indent, key.doc, details);
    if (comment.size() > 120) comment = fmt::format("{}# {}\n{}# ({})", indent, key.doc, indent, details);
    out += fmt::format("{}\n{}{}: {}\n", comment, indent, key.leaf_name(), option_value_yaml(value_of(key)));
  }
  return out;
}

}  // namespace can
