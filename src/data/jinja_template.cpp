// The Jinja2 subset of chat templates: a lexer (template text and tag tokens, with
// Jinja's whitespace rules), a recursive-descent parser into a small AST, and an
// evaluator over nlohmann::json values plus the few values JSON cannot hold.
//
// Supported:
//  * {{ expr }}, {% statement %}, {# comment #}; `-` on either side of a tag strips
//    the whitespace beside it, `+` turns lstrip_blocks/trim_blocks off for that tag.
//  * statements: if/elif/else/endif; for/else/endfor over lists, strings, mappings
//    (their keys) and items() (with `for k, v in`), with an `if` filter and loop.index,
//    index0, revindex, revindex0, first, last, length, previtem, nextitem; break and
//    continue; set (names, several names from one sequence, ns.attr on a namespace);
//    generation ... endgeneration (rendered as is).
//  * expressions: string literals (either quote, Python escapes), integers, floats,
//    true/false/none (and True/False/None), lists, dicts, names, a.b, a['b'], a[0],
//    a[-1], slices, calls of raise_exception, strftime_now and namespace; the methods
//    strip/lstrip/rstrip(chars), startswith, endswith, split(sep, maxsplit), upper,
//    lower of strings and items(), get(key, default) of mappings; + - * / // %
//    ~, comparisons (chained as in Python), in, not in, and, or, not, `a if c else b`.
//  * tests: defined, undefined, none, string, mapping, iterable, sequence, number,
//    integer, float, boolean, true, false, equalto/eq.
//  * filters: trim, length/count, tojson(indent=), string, lower, upper, default/d,
//    first, last, join, items, select/reject(test, ...).
// Values follow Python: truthiness, str() and repr() of None, True, lists and dicts,
// float repr, code points for len, indexes and slices, Unicode whitespace for strip,
// floor division and modulo, int-float comparisons, json.dumps' Infinity and NaN.
// select, reject and the items filter give generators, as in jinja2: true, and usable
// once, by a for loop, join, first, select or reject.
// An undefined value (a missing variable, attribute, key or index) is falsy, prints
// as "" and iterates as empty; anything else done to it is an error, as in jinja2.
//
// Refused when parsing: a template that is not valid UTF-8; every other statement
// (macro, call, include, extends, import, raw, set blocks, ...), filter, test, function
// and method; `**`; tuples; escaped surrogates; blocks or expressions nested deeper
// than 200 levels. Refused when rendering, where jinja2 would print something else:
// upper/lower of non-ASCII text, printing a namespace, dict_items or generator, using
// a generator twice or otherwise than above, Python's methods and attributes as values
// (text.title), repr() of a code point that Python prints or escapes by its Unicode
// version, integers beyond int64 and dividing integers from 2**53 on (Python's are
// exact), dict literals with unsorted keys (nlohmann::json sorts them), ordering
// lists, `%` formatting of strings. Refused as well, to keep memory, time and the
// stack bounded for any template: values or output above 16 MiB of text or a million
// items, values nested deeper than 200 levels, renders of more than 10^8 steps
// (seconds), and a namespace stored in a namespace (a cycle, never freed).
//
// Known limits, which the input type imposes: nlohmann::json keeps an object's keys
// sorted, so iterating a mapping of the variables, tojson and printing one list its
// keys in sorted order where Python keeps insertion order; and it reads an integer
// above 2**64 - 1 in the variables as a float, where Python keeps an int.
#include "can/jinja_template.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <compare>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "can/error.h"

namespace can {
namespace {

using nlohmann::json;

// A problem with a value (a type error, an undefined operand); the evaluator turns it
// into a can::Error that says where in the template it happened.
struct Problem {
  std::string what;
};

template <typename... Args>
[[noreturn]] void problem(fmt::format_string<Args...> format, Args&&... args) {
  throw Problem{fmt::format(format, std::forward<Args>(args)...)};
}

// --- Caps ----------------------------------------------------------------------------

// Limits that keep memory, time and the stack bounded whatever a template does (no chat
// template comes near them): the text and items of one value and of the output, the
// nesting of values and of the parsed template, and the steps of one render.
constexpr size_t kMaxText = size_t{16} << 20;
constexpr size_t kMaxItems = 1'000'000;
constexpr int kMaxNesting = 200;
constexpr size_t kMaxWork = 100'000'000;  // see Renderer::charge

[[noreturn]] void too_large() {
  problem("unsupported: a value or output above {} MiB of text or {} items", kMaxText >> 20, kMaxItems);
}

struct Size {
  size_t text = 0;   // bytes of its strings and keys
  size_t items = 0;  // the values inside it, at every level
  int depth = 0;     // the deepest level of them
};

// Stops descending past kMaxNesting levels: deeper is refused anyway.
Size size_of(const json& value, int level = 0) {
  Size size{value.is_string() ? value.get_ref<const std::string&>().size() : 0, 0, level};
  if (!value.is_structured() || level > kMaxNesting) return size;
  for (auto it = value.begin(); it != value.end(); ++it) {
    const Size part = size_of(it.value(), level + 1);
    size.text += part.text + (value.is_object() ? it.key().size() : 0);
    size.items += 1 + part.items;
    size.depth = std::max(size.depth, part.depth);
  }
  return size;
}

void check_size(const json& value) {
  const Size size = size_of(value);
  if (size.depth > kMaxNesting) problem("unsupported: values nested deeper than {} levels", kMaxNesting);
  if (size.text > kMaxText || size.items > kMaxItems) too_large();
}

// --- Text as Python sees it: code points, its whitespace, its repr -----------------

// Python's strict UTF-8 decoding: no overlong forms, surrogates or code points past U+10FFFF.
char32_t next_code_point(std::string_view text, size_t& at) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(at);
  const int extra = lead < 0x80 ? 0 : lead < 0xC0 ? -1 : lead < 0xE0 ? 1 : lead < 0xF0 ? 2 : lead < 0xF8 ? 3 : -1;
  if (extra < 0 || at + extra >= text.size()) problem("invalid UTF-8 in text");
  char32_t c = extra == 0 ? lead : lead & (0x3F >> extra);
  for (int i = 1; i <= extra; ++i) {
    if ((byte(at + i) & 0xC0) != 0x80) problem("invalid UTF-8 in text");
    c = (c << 6) | (byte(at + i) & 0x3F);
  }
  static const char32_t kSmallest[] = {0, 0x80, 0x800, 0x10000};
  if (c < kSmallest[extra] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) problem("invalid UTF-8 in text");
  at += extra + 1;
  return c;
}

std::u32string decode(std::string_view text) {
  std::u32string out;
  for (size_t at = 0; at < text.size();) out += next_code_point(text, at);
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  static const unsigned char kLead[] = {0, 0xC0, 0xE0, 0xF0};
  const int extra = c < 0x80 ? 0 : c < 0x800 ? 1 : c < 0x10000 ? 2 : 3;
  out += static_cast<char>(kLead[extra] | (c >> (6 * extra)));
  for (int i = extra - 1; i >= 0; --i) out += static_cast<char>(0x80 | ((c >> (6 * i)) & 0x3F));
}

std::string encode(std::u32string_view text) {
  std::string out;
  for (char32_t c : text) append_utf8(out, c);
  return out;
}

// Python's str.isspace, which str.strip(), str.split() and the regex \s use.
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Where `part` first occurs in `text` from `from` on, or npos, in linear time (Knuth,
// Morris and Pratt), where std::string::find can take len(text) * len(part) steps.
size_t find_part(std::string_view text, std::string_view part, size_t from = 0) {
  if (part.empty()) return from;
  std::vector<size_t> fallback(part.size());  // [i]: the longest proper prefix of part[..i] that ends it
  for (size_t i = 1, k = 0; i < part.size(); ++i) {
    while (k > 0 && part[i] != part[k]) k = fallback[k - 1];
    if (part[i] == part[k]) ++k;
    fallback[i] = k;
  }
  for (size_t i = from, k = 0; i < text.size(); ++i) {
    while (k > 0 && text[i] != part[k]) k = fallback[k - 1];
    if (text[i] == part[k] && ++k == part.size()) return i + 1 - k;
  }
  return std::string_view::npos;
}

// str.strip/lstrip/rstrip(chars): whitespace when `chars` is absent.
std::string strip(std::string_view text, const std::optional<std::string>& chars, bool left, bool right) {
  const std::u32string s = decode(text);
  std::u32string set = chars ? decode(*chars) : U"";
  std::sort(set.begin(), set.end());
  const auto strippable = [&](char32_t c) {
    return chars ? std::binary_search(set.begin(), set.end(), c) : is_space(c);
  };
  size_t begin = 0, end = s.size();
  while (left && begin < end && strippable(s[begin])) ++begin;
  while (right && end > begin && strippable(s[end - 1])) --end;
  return encode(std::u32string_view(s).substr(begin, end - begin));
}

// How Python writes a code point as an escape: \xhh, \uhhhh or \Uhhhhhhhh.
std::string escape(char32_t c) {
  const auto code = static_cast<uint32_t>(c);
  return c < 0x100 ? fmt::format("\\x{:02x}", code) : c < 0x10000 ? fmt::format("\\u{:04x}", code)
                                                                   : fmt::format("\\U{:08x}", code);
}

using CodePoints = std::pair<char32_t, char32_t>;  // a range, both ends included

// Code points from U+0080 on that str.isprintable() accepts in every Python transformers
// runs on (assigned by Unicode 13, Python 3.9): common scripts, punctuation, symbols, CJK,
// emoji. And those it refuses in all of them (repr escapes them): controls, format
// characters, separators, private use. repr() of any other is refused rather than guessed.
constexpr CodePoints kPrintable[] = {
    {0xA1, 0xAC},       {0xAE, 0x377},      {0x384, 0x38A},     {0x38C, 0x38C},     {0x38E, 0x3A1},
    {0x3A3, 0x52F},     {0x5D0, 0x5EA},     {0x606, 0x61B},     {0x61E, 0x6DC},     {0x6DE, 0x6FF},
    {0x900, 0x97F},     {0xE01, 0xE3A},     {0xE3F, 0xE5B},     {0x10D0, 0x11FF},   {0x1E00, 0x1EFF},
    {0x2010, 0x2027},   {0x2030, 0x205E},   {0x20A0, 0x20BF},   {0x2100, 0x218B},   {0x2190, 0x2426},
    {0x2460, 0x2B73},   {0x3001, 0x303F},   {0x3041, 0x3096},   {0x3099, 0x30FF},   {0x3131, 0x318E},
    {0x3220, 0x9FFC},   {0xAC00, 0xD7A3},   {0xF900, 0xFA6D},   {0xFF01, 0xFFBE},   {0xFFFC, 0xFFFD},
    {0x1F300, 0x1F6D7}, {0x1F900, 0x1F978}, {0x1F97A, 0x1F9CB}, {0x1F9CD, 0x1F9FF},
};
constexpr CodePoints kNotPrintable[] = {
    {0x80, 0xA0},     {0xAD, 0xAD},     {0x600, 0x605},     {0x61C, 0x61C},     {0x6DD, 0x6DD},
    {0x70F, 0x70F},   {0x8E2, 0x8E2},   {0x1680, 0x1680},   {0x180E, 0x180E},   {0x2000, 0x200F},
    {0x2028, 0x202F}, {0x205F, 0x2064}, {0x2066, 0x206F},   {0x3000, 0x3000},   {0xE000, 0xF8FF},
    {0xFEFF, 0xFEFF}, {0xFFF9, 0xFFFB}, {0xE0001, 0xE0001}, {0xE0020, 0xE007F}, {0xF0000, 0x10FFFF},
};

template <size_t n>
bool within(const CodePoints (&ranges)[n], char32_t c) {
  return std::any_of(ranges, ranges + n, [c](const CodePoints& r) { return r.first <= c && c <= r.second; });
}

std::string repr_string(std::string_view text) {
  const bool double_quoted = text.find('\'') != std::string_view::npos && text.find('"') == std::string_view::npos;
  const char quote = double_quoted ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : decode(text)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') out += '\\';
    if (c == '\n' || c == '\r' || c == '\t') {
      out += c == '\n' ? "\\n" : c == '\r' ? "\\r" : "\\t";
    } else if (c < 0x20 || within(kNotPrintable, c) || c == 0x7F) {
      out += escape(c);
    } else if (c < 0x7F || within(kPrintable, c)) {
      append_utf8(out, c);
    } else {
      problem("unsupported: repr() of U+{:04X}, which Python prints or escapes by its Unicode version",
              static_cast<uint32_t>(c));
    }
  }
  return out + quote;
}

// Python's repr of a float: the shortest round-trip digits, in exponent form when the
// exponent is below -4 or above 15.
std::string repr_float(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  const std::string scientific(buffer, result.ptr);  // "-1.25e+16"
  const size_t e = scientific.find('e');
  const bool negative = scientific[0] == '-';
  std::string digits;
  for (size_t i = negative ? 1 : 0; i < e; ++i) {
    if (scientific[i] != '.') digits += scientific[i];
  }
  const int exponent = std::stoi(scientific.substr(e + 1));
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    const int point = exponent + 1;  // digits before the decimal point
    const int size = static_cast<int>(digits.size());
    if (point <= 0) return out + "0." + std::string(-point, '0') + digits;
    if (point >= size) return out + digits + std::string(point - size, '0') + ".0";
    return out + digits.substr(0, point) + "." + digits.substr(point);
  }
  out += digits.front();
  if (digits.size() > 1) {
    out += '.';
    out.append(digits, 1);
  }
  return out + fmt::format("e{}{:02}", exponent < 0 ? '-' : '+', std::abs(exponent));
}

// repr() of a JSON value as Python sees the same data (None, True, 'text', [..], {..}).
std::string repr(const json& value) {
  switch (value.type()) {
    case json::value_t::null:
      return "None";
    case json::value_t::boolean:
      return value.get<bool>() ? "True" : "False";
    case json::value_t::number_float:
      return repr_float(value.get<double>());
    case json::value_t::string:
      return repr_string(value.get_ref<const std::string&>());
    case json::value_t::array: {
      std::string out = "[";
      for (size_t i = 0; i < value.size(); ++i) out += (i ? ", " : "") + repr(value[i]);
      return out + "]";
    }
    case json::value_t::object: {
      std::string out = "{";
      for (auto it = value.begin(); it != value.end(); ++it) {
        out += (it == value.begin() ? "" : ", ") + repr_string(it.key()) + ": " + repr(it.value());
      }
      return out + "}";
    }
    default:
      return value.dump();  // integers
  }
}

// json.dumps(value, ensure_ascii=False, indent=indent): ", " between items without an
// indent, "," and a new line with one. Python escapes strings as nlohmann does.
void dump_json(const json& value, std::optional<int64_t> indent, int depth, std::string& out) {
  const auto dump = [](const json& scalar) { return scalar.dump(-1, ' ', false, json::error_handler_t::replace); };
  const auto newline = [&](int level) {
    if (!indent) return;
    const size_t spaces = std::max<int64_t>(0, *indent) * level;  // the caller keeps the indent below kMaxText
    if (out.size() + spaces > kMaxText) too_large();
    out += '\n';
    out.append(spaces, ' ');
  };
  if (value.is_number_float()) {
    const double number = value.get<double>();
    out += std::isnan(number) ? "NaN" : std::isinf(number) ? (number > 0 ? "Infinity" : "-Infinity")
                                                           : repr_float(number);
  } else if (!value.is_structured() || value.empty()) {
    out += dump(value);
  } else {
    out += value.is_array() ? '[' : '{';
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (it != value.begin()) out += indent ? "," : ", ";
      newline(depth + 1);
      if (value.is_object()) out += dump(it.key()) + ": ";
      dump_json(it.value(), indent, depth + 1, out);
    }
    newline(depth);
    out += value.is_array() ? ']' : '}';
  }
}

// --- Values --------------------------------------------------------------------------

struct Namespace;
struct Generator;

struct Value {
  enum class Kind {
    Undefined,  // a missing variable, attribute or item: falsy, renders as ""
    Json,       // None, booleans, numbers, strings, lists, dicts
    Tuple,      // a Python tuple (an items() pair): a list that prints as (a, b)
    Items,      // dict.items(): iterates as (key, value) tuples
    Generator,  // what select, reject and the items filter give: iterable once, nothing else
    Namespace,  // namespace(...) and the loop object
    Function,   // a global: raise_exception, strftime_now, namespace
  };
  Kind kind = Kind::Undefined;
  json data;                             // Json, Tuple, Items (a list of [key, value])
  std::shared_ptr<Namespace> ns;         // Namespace
  std::string name;                      // Function: which; Undefined: why, for messages
  std::shared_ptr<Generator> generator;  // Generator

  static Value of(json data, Kind kind = Kind::Json) { return Value{kind, std::move(data), nullptr, "", nullptr}; }
  static Value undefined(std::string why) { return Value{Kind::Undefined, nullptr, nullptr, std::move(why), nullptr}; }
  bool is(Kind k) const { return kind == k; }
  bool is_json() const { return kind == Kind::Json || kind == Kind::Tuple; }
};

struct Namespace {
  std::map<std::string, Value> attributes;
  bool is_loop = false;  // the loop object: read-only
};

// A Python generator, evaluated eagerly: jinja2's is consumed by its first use, so a
// second one is refused.
struct Generator {
  std::vector<Value> items;
  bool iterated = false;
};

Value generator(std::vector<Value> items) {
  return Value{Value::Kind::Generator, nullptr, nullptr, "", std::make_shared<Generator>(Generator{std::move(items)})};
}

std::string type_name(const Value& value) {
  switch (value.kind) {
    case Value::Kind::Undefined: return "Undefined";
    case Value::Kind::Tuple: return "tuple";
    case Value::Kind::Items: return "dict_items";
    case Value::Kind::Generator: return "generator";
    case Value::Kind::Namespace: return value.ns->is_loop ? "LoopContext" : "Namespace";
    case Value::Kind::Function: return "function";
    case Value::Kind::Json: break;
  }
  switch (value.data.type()) {
    case json::value_t::null: return "NoneType";
    case json::value_t::boolean: return "bool";
    case json::value_t::number_float: return "float";
    case json::value_t::string: return "str";
    case json::value_t::array: return "list";
    case json::value_t::object: return "dict";
    default: return "int";
  }
}

// Jinja raises on everything done to an undefined value except printing, testing,
// iterating, measuring and comparing it for equality.
void require_defined(const Value& value) {
  if (value.is(Value::Kind::Undefined)) problem("{}", value.name);
}

bool truthy(const Value& value) {
  switch (value.kind) {
    case Value::Kind::Undefined: return false;
    case Value::Kind::Generator:
    case Value::Kind::Namespace:
    case Value::Kind::Function: return true;
    default: break;
  }
  const json& d = value.data;
  if (d.is_null()) return false;
  if (d.is_boolean()) return d.get<bool>();
  if (d.is_number()) return d.get<double>() != 0;
  if (d.is_string()) return !d.get_ref<const std::string&>().empty();
  return !d.empty();  // lists, dicts
}

// Python's str(): what {{ }}, ~, join and the string filter print.
std::string str(const Value& value) {
  switch (value.kind) {
    case Value::Kind::Undefined: return "";
    case Value::Kind::Json: return value.data.is_string() ? value.data.get<std::string>() : repr(value.data);
    case Value::Kind::Tuple: {
      std::string out = "(";
      for (size_t i = 0; i < value.data.size(); ++i) out += (i ? ", " : "") + repr(value.data[i]);
      return out + (value.data.size() == 1 ? ",)" : ")");
    }
    default: problem("cannot print a {} value", type_name(value));
  }
}

json to_json(const Value& value) {
  if (!value.is_json()) problem("a {} value cannot be stored in a list or dict, or serialized", type_name(value));
  return value.data;
}

// What `for`, join, first, last, select and reject go through: list items, a string's
// characters, a mapping's keys, items() pairs; nothing for an undefined value.
std::vector<Value> elements(const Value& value) {
  std::vector<Value> out;
  if (value.is(Value::Kind::Undefined)) return out;
  if (value.is(Value::Kind::Generator)) {
    if (std::exchange(value.generator->iterated, true)) {
      problem("unsupported: using a generator (select, reject, items) twice");
    }
    return value.generator->items;
  }
  if (value.is(Value::Kind::Items)) {
    for (const json& pair : value.data) out.push_back(Value::of(pair, Value::Kind::Tuple));
    return out;
  }
  const json& d = value.data;
  if (!value.is_json() || !(d.is_array() || d.is_object() || d.is_string())) {
    problem("'{}' object is not iterable", type_name(value));
  }
  if (d.is_string()) {
    const std::u32string characters = decode(d.get_ref<const std::string&>());
    if (characters.size() > kMaxItems) too_large();
    for (char32_t c : characters) out.push_back(Value::of(encode(std::u32string(1, c))));
  } else if (d.is_object()) {
    for (auto it = d.begin(); it != d.end(); ++it) out.push_back(Value::of(it.key()));
  } else {
    for (const json& item : d) out.push_back(Value::of(item));
  }
  return out;
}

int64_t length(const Value& value) {
  if (value.is(Value::Kind::Undefined)) return 0;
  if (value.is_json() && value.data.is_string()) return decode(value.data.get_ref<const std::string&>()).size();
  if ((value.is_json() || value.is(Value::Kind::Items)) && (value.data.is_array() || value.data.is_object())) {
    return value.data.size();
  }
  problem("object of type '{}' has no len()", type_name(value));
}

// Booleans are integers in Python arithmetic and comparisons.
bool is_numeric(const json& d) { return d.is_number() || d.is_boolean(); }
bool is_integral(const json& d) { return d.is_number_integer() || d.is_boolean(); }
int64_t as_int(const json& d) {
  if (d.is_number_unsigned() && d.get<uint64_t>() > INT64_MAX) problem("unsupported: integers above 2**63 - 1");
  return d.is_boolean() ? d.get<bool>() : d.get<int64_t>();
}
double as_double(const json& d) { return d.is_boolean() ? d.get<bool>() : d.get<double>(); }

// Python compares an int with a float exactly, not through the int's nearest double.
std::partial_ordering compare_numbers(const json& a, const json& b) {
  if (is_integral(a) && is_integral(b)) return as_int(a) <=> as_int(b);
  if (!is_integral(a) && !is_integral(b)) return as_double(a) <=> as_double(b);
  const int64_t i = as_int(is_integral(a) ? a : b);
  const double d = as_double(is_integral(a) ? b : a);
  std::partial_ordering order = std::partial_ordering::unordered;  // of i against d
  if (d >= 0x1p63) {
    order = std::partial_ordering::less;
  } else if (d < -0x1p63) {
    order = std::partial_ordering::greater;
  } else if (!std::isnan(d)) {
    const double whole = std::trunc(d);
    const int64_t integer = static_cast<int64_t>(whole);
    order = i != integer ? i <=> integer : 0.0 <=> d - whole;
  }
  return is_integral(a) ? order : 0 <=> order;
}

bool json_equal(const json& a, const json& b) {
  if (is_numeric(a) && is_numeric(b)) return compare_numbers(a, b) == 0;
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!json_equal(a[i], b[i])) return false;
    }
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (!b.contains(it.key()) || !json_equal(it.value(), b[it.key()])) return false;
    }
    return true;
  }
  return a == b;
}

bool equal(const Value& a, const Value& b) {
  if (a.kind != b.kind) return false;  // undefined == undefined; a tuple is never a list
  switch (a.kind) {
    case Value::Kind::Undefined: return true;
    case Value::Kind::Namespace: return a.ns == b.ns;
    case Value::Kind::Function: return a.name == b.name;
    case Value::Kind::Generator: return a.generator == b.generator;
    default: return json_equal(a.data, b.data);
  }
}

// <, >, <=, >= on numbers and on strings (UTF-8 byte order is code point order).
bool ordered(const std::string& op, const Value& a, const Value& b) {
  require_defined(a);
  require_defined(b);
  std::partial_ordering order = std::partial_ordering::unordered;  // NaN is neither below nor above
  if (a.is_json() && b.is_json() && is_numeric(a.data) && is_numeric(b.data)) {
    order = compare_numbers(a.data, b.data);
  } else if (a.is_json() && b.is_json() && a.data.is_string() && b.data.is_string()) {
    order = a.data.get_ref<const std::string&>().compare(b.data.get_ref<const std::string&>()) <=> 0;
  } else {
    problem("'{}' not supported between instances of '{}' and '{}'", op, type_name(a), type_name(b));
  }
  if (op == "<") return order < 0;
  if (op == ">") return order > 0;
  if (op == "<=") return order <= 0;
  return order >= 0;
}

bool contains(const Value& container, const Value& item) {
  if (container.is(Value::Kind::Undefined)) return false;  // iterates as empty
  const json& c = container.data;
  if (container.is_json() && c.is_string()) {
    if (!(item.is_json() && item.data.is_string())) problem("'in <string>' requires string as left operand");
    return find_part(c.get_ref<const std::string&>(), item.data.get_ref<const std::string&>()) != std::string::npos;
  }
  if (container.is_json() && c.is_array()) {
    for (const json& element : c) {
      if (item.is_json() && json_equal(element, item.data)) return true;
    }
    return false;
  }
  if (container.is_json() && c.is_object()) {
    if (item.is_json() && (item.data.is_array() || item.data.is_object())) problem("unhashable type as a dict key");
    return item.is_json() && item.data.is_string() && c.contains(item.data.get_ref<const std::string&>());
  }
  if (container.is(Value::Kind::Generator) || container.is(Value::Kind::Items)) {
    problem("unsupported: 'in' on a {}", type_name(container));
  }
  problem("argument of type '{}' is not iterable", type_name(container));
}

// The result of __builtin_*_overflow, refused when it overflowed (Python's ints do not).
Value checked_int(int64_t i, int64_t j, bool (*operation)(int64_t, int64_t, int64_t*)) {
  int64_t result = 0;
  if (operation(i, j, &result)) problem("integer overflow");
  return Value::of(result);
}

// + - * / // % as Python computes them on ints, floats, strings and lists.
Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  require_defined(a);
  require_defined(b);
  const json& x = a.data;
  const json& y = b.data;
  if (a.is(Value::Kind::Json) && b.is(Value::Kind::Json)) {
    if (op == "+" && ((x.is_string() && y.is_string()) || (x.is_array() && y.is_array()))) {
      json sum = x;
      if (x.is_string()) {
        sum.get_ref<std::string&>() += y.get_ref<const std::string&>();
      } else {
        sum.insert(sum.end(), y.begin(), y.end());
      }
      check_size(sum);
      return Value::of(std::move(sum));
    }
    if (op == "*" && (x.is_string() || x.is_array() || y.is_string() || y.is_array())) {
      const json& sequence = x.is_string() || x.is_array() ? x : y;
      const json& count = &sequence == &x ? y : x;
      if (!is_integral(count)) problem("can't multiply sequence by non-int of type '{}'", type_name(Value::of(count)));
      const Size size = size_of(sequence);
      const int64_t times = size.text + size.items == 0 ? 0 : std::max<int64_t>(0, as_int(count));
      if (times > 0 && (size.text > kMaxText / times || size.items > kMaxItems / times)) too_large();
      json repeated = sequence.is_string() ? json("") : json::array();
      if (sequence.is_string()) {
        std::string& text = repeated.get_ref<std::string&>();
        text.reserve(size.text * times);
        for (int64_t i = 0; i < times; ++i) text += sequence.get_ref<const std::string&>();
      } else {
        for (int64_t i = 0; i < times; ++i) repeated.insert(repeated.end(), sequence.begin(), sequence.end());
      }
      return Value::of(std::move(repeated));
    }
  }
  if (op == "%" && a.is(Value::Kind::Json) && x.is_string()) problem("'%' formatting of strings is not supported");
  if (!(a.is(Value::Kind::Json) && b.is(Value::Kind::Json) && is_numeric(x) && is_numeric(y))) {
    problem("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b));
  }
  if (is_integral(x) && is_integral(y) && op != "/") {
    const int64_t i = as_int(x), j = as_int(y);
    const auto add = [](int64_t a, int64_t b, int64_t* r) { return __builtin_add_overflow(a, b, r); };
    const auto subtract = [](int64_t a, int64_t b, int64_t* r) { return __builtin_sub_overflow(a, b, r); };
    const auto multiply = [](int64_t a, int64_t b, int64_t* r) { return __builtin_mul_overflow(a, b, r); };
    if (op == "+") return checked_int(i, j, add);
    if (op == "-") return checked_int(i, j, subtract);
    if (op == "*") return checked_int(i, j, multiply);
    if (j == 0) problem("integer division or modulo by zero");
    if (j == -1) return op == "//" ? checked_int(0, i, subtract) : Value::of(0);  // INT64_MIN / -1 overflows
    const int64_t quotient = i / j - ((i % j != 0) && ((i < 0) != (j < 0)));  // floor, as Python
    return Value::of(op == "//" ? quotient : i - quotient * j);
  }
  const auto exact = [](const json& n) { return std::abs(as_double(n)) < 0x1p53; };  // a double holds it exactly
  if (op == "/" && is_integral(x) && is_integral(y) && !(exact(x) && exact(y))) {
    problem("unsupported: dividing integers from 2**53 on (Python divides them exactly)");
  }
  const double u = as_double(x), v = as_double(y);
  if (op == "+") return Value::of(u + v);
  if (op == "-") return Value::of(u - v);
  if (op == "*") return Value::of(u * v);
  if (v == 0) problem("float division by zero");
  if (op == "/") return Value::of(u / v);
  // Python's float floor division and modulo (float_divmod): the remainder takes the
  // divisor's sign, and the quotient is (u - remainder) / v snapped to a whole number.
  double remainder = std::fmod(u, v), quotient = (u - remainder) / v;
  if (remainder == 0) {
    remainder = std::copysign(0.0, v);
  } else if ((remainder < 0) != (v < 0)) {
    remainder += v;
    quotient -= 1;
  }
  if (op == "%") return Value::of(remainder);
  if (quotient == 0) return Value::of(std::copysign(0.0, u / v));
  const double whole = std::floor(quotient);
  return Value::of(quotient - whole > 0.5 ? whole + 1 : whole);
}

// Python's slice semantics: a[start:stop:step] with negative and missing bounds.
Value slice(const Value& value, std::optional<int64_t> start, std::optional<int64_t> stop, int64_t step) {
  require_defined(value);
  if (value.is(Value::Kind::Generator)) problem("unsupported: slicing a generator");
  const bool text = value.is_json() && value.data.is_string();
  if (!(value.is_json() && (text || value.data.is_array()))) return Value::undefined("the value cannot be sliced");
  if (step == 0) problem("slice step cannot be zero");
  const std::u32string characters = text ? decode(value.data.get_ref<const std::string&>()) : U"";
  const int64_t size = text ? characters.size() : value.data.size();
  const int64_t lower = step < 0 ? -1 : 0, upper = step < 0 ? size - 1 : size;
  const auto bound = [&](std::optional<int64_t> index, int64_t missing) {
    if (!index) return missing;
    const int64_t i = *index < 0 ? *index + size : *index;
    return std::clamp(i, lower, upper);
  };
  const int64_t first = bound(start, step < 0 ? upper : lower), end = bound(stop, step < 0 ? lower : upper);
  // How many items: counted first, so that no index goes past the ends (a step may be huge).
  const int64_t count = step > 0 ? (first < end ? (end - first - 1) / step + 1 : 0)
                                 : (first > end ? (end - first + 1) / step + 1 : 0);
  std::u32string taken;
  json items = json::array();
  for (int64_t k = 0; k < count; ++k) {
    const int64_t i = first + k * step;
    if (text) {
      taken += characters[i];
    } else {
      items.push_back(value.data[i]);
    }
  }
  return Value::of(text ? json(encode(taken)) : items, value.kind);
}

// --- Tokens and the lexer ------------------------------------------------------------

struct Token {
  enum class Type {
    Text, VariableBegin, VariableEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, End,
  };
  Type type;
  std::string text;  // the text, the name, the decoded string or the operator
  size_t offset;     // in the (newline-normalized) source
};

// Where an offset of the source is, for messages: "origin: line 3, column 7".
struct Locator {
  std::string origin;
  std::vector<size_t> line_starts{0};

  std::string operator()(size_t offset) const { return origin + ": " + position(offset); }
  std::string position(size_t offset) const {
    const size_t line = std::upper_bound(line_starts.begin(), line_starts.end(), offset) - line_starts.begin();
    return fmt::format("line {}, column {}", line, offset - line_starts[line - 1] + 1);
  }
};

class Lexer {
 public:
  Lexer(const std::string& source, const Locator& where) : source_(source), where_(where) {}

  std::vector<Token> run() {
    bool line_starting = true;  // the text ahead starts a line (lstrip_blocks looks at it)
    while (at_ < source_.size()) {
      size_t open = source_.find('{', at_);  // the next "{{", "{%" or "{#"
      const auto opens_tag = [&](char c) { return c == '{' || c == '%' || c == '#'; };
      while (open != std::string::npos && (open + 1 == source_.size() || !opens_tag(source_[open + 1]))) {
        open = source_.find('{', open + 1);
      }
      std::string text = source_.substr(at_, open == std::string::npos ? std::string::npos : open - at_);
      if (open == std::string::npos) {
        emit(Token::Type::Text, text, at_);
        break;
      }
      const char kind = source_[open + 1];
      const char marker = open + 2 < source_.size() ? source_[open + 2] : 0;
      if (marker == '-') {
        text = strip(text, std::nullopt, false, true);  // {%- strips all whitespace before the tag
      } else if (marker != '+' && kind != '{') {
        // lstrip_blocks: the whitespace between a line's start and a block or comment
        // tag goes, when nothing else stands before the tag on its line.
        const size_t line_start = text.rfind('\n') + 1;  // 0 when the text has no newline
        const std::u32string before = decode(std::string_view(text).substr(line_start));
        if ((line_start > 0 || line_starting) && std::all_of(before.begin(), before.end(), is_space)) {
          text.resize(line_start);
        }
      }
      emit(Token::Type::Text, text, at_);
      at_ = open + 2 + (marker == '-' || marker == '+');
      line_starting = kind == '#' ? comment(open) : tag(kind, open);
    }
    tokens_.push_back({Token::Type::End, "end of template", source_.size()});
    return std::move(tokens_);
  }

 private:
  template <typename... Args>
  [[noreturn]] void error(size_t offset, fmt::format_string<Args...> format, Args&&... args) {
    fail("{}: {}", where_(offset), fmt::format(format, std::forward<Args>(args)...));
  }

  unsigned char byte(size_t i) const { return i < source_.size() ? source_[i] : 0; }
  bool is_digit(size_t i) const { return std::isdigit(byte(i)); }

  void emit(Token::Type type, std::string text, size_t offset) {
    if (type != Token::Type::Text || !text.empty()) tokens_.push_back({type, std::move(text), offset});
  }

  void skip_space() {
    while (at_ < source_.size()) {
      size_t next = at_;
      if (!is_space(next_code_point(source_, next))) break;
      at_ = next;
    }
  }

  // After a tag: `-` strips all whitespace, trim_blocks drops one newline after a
  // block or comment tag unless it ends in `+`. Returns whether a newline ended it.
  bool after_tag(char marker, bool trims) {
    if (marker == '-') {
      skip_space();
    } else if (marker != '+' && trims && at_ < source_.size() && source_[at_] == '\n') {
      ++at_;
    }
    return at_ > 0 && source_[at_ - 1] == '\n';
  }

  bool comment(size_t open) {
    const size_t close = source_.find("#}", at_);
    if (close == std::string::npos) error(open, "unclosed comment: '{{#' without '#}}'");
    const char marker = close > at_ ? source_[close - 1] : 0;
    at_ = close + 2;
    return after_tag(marker, true);
  }

  // The tokens of a {{ }} or {% %} tag; its end counts only outside brackets.
  bool tag(char kind, size_t open) {
    const bool block = kind == '%';
    emit(block ? Token::Type::BlockBegin : Token::Type::VariableBegin, block ? "{%" : "{{", open);
    if (block) {
      skip_space();
      if (source_.compare(at_, 3, "raw") == 0) error(open, "unsupported statement 'raw'");
    }
    const std::string end = block ? "%}" : "}}";
    std::string brackets;
    for (;;) {
      skip_space();
      if (at_ >= source_.size()) error(open, "unclosed tag: '{}' without '{}'", block ? "{%" : "{{", end);
      const char c = source_[at_];
      if (brackets.empty()) {
        const char marker = c == '-' || (c == '+' && block) ? c : 0;
        if (source_.compare(at_ + (marker != 0), 2, end) == 0) {
          emit(block ? Token::Type::BlockEnd : Token::Type::VariableEnd, end, at_);
          at_ += 2 + (marker != 0);
          return after_tag(marker, block);
        }
      }
      const size_t start = at_;
      if (c == '\'' || c == '"') {
        emit(Token::Type::String, string_literal(), start);
      } else if (is_digit(at_)) {
        number();
      } else if (std::isalpha(byte(at_)) || c == '_') {
        while (at_ < source_.size() && (is_digit(at_) || std::isalpha(byte(at_)) || source_[at_] == '_')) ++at_;
        emit(Token::Type::Name, source_.substr(start, at_ - start), start);
      } else {
        static const char* const kOperators[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[",
                                                 "]",  "(",  ")",  "{",  "}",  ">",  "<", "=", ".", ":", "|", ",", ";"};
        const char* op = nullptr;
        for (const char* candidate : kOperators) {
          if (source_.compare(at_, std::strlen(candidate), candidate) == 0) {
            op = candidate;
            break;
          }
        }
        if (!op) error(at_, "unexpected character '{}' in a tag", c);
        const std::string_view opening = "([{", closing = ")]}";
        if (opening.find(*op) != std::string_view::npos) brackets += *op;
        if (closing.find(*op) != std::string_view::npos) {
          if (brackets.empty() || opening[closing.find(*op)] != brackets.back()) error(at_, "unexpected '{}'", op);
          brackets.pop_back();
        }
        at_ += std::strlen(op);
        emit(Token::Type::Operator, op, start);
      }
    }
  }

  // Integers and floats; `_` may separate digits, as in Jinja.
  void number() {
    const size_t start = at_;
    std::string digits;
    const auto take_digits = [&] {
      for (; is_digit(at_) || (byte(at_) == '_' && is_digit(at_ + 1)); ++at_) {
        if (source_[at_] != '_') digits += source_[at_];
      }
    };
    take_digits();
    bool is_float = false;
    if (at_ < source_.size() && source_[at_] == '.' && is_digit(at_ + 1)) {
      digits += source_[at_++];
      take_digits();
      is_float = true;
    }
    if (at_ < source_.size() && (source_[at_] == 'e' || source_[at_] == 'E')) {
      const size_t sign = at_ + 1 < source_.size() && (source_[at_ + 1] == '+' || source_[at_ + 1] == '-');
      if (is_digit(at_ + 1 + sign)) {
        digits += source_.substr(at_, 1 + sign);
        at_ += 1 + sign;
        take_digits();
        is_float = true;
      }
    }
    // Jinja reads "0777" as 0, then 777: a syntax error.
    if (!is_float && digits[0] == '0' && digits.find_first_not_of('0') != std::string::npos) {
      error(start, "leading zeros in an integer literal");
    }
    emit(is_float ? Token::Type::Float : Token::Type::Integer, digits, start);
  }

  // A quoted string with Python's escapes: Jinja decodes it with "unicode-escape" after
  // writing non-ASCII characters as escapes ("backslashreplace").
  std::string string_literal() {
    const size_t open = at_;
    const char quote = source_[at_++];
    std::string out;
    while (at_ < source_.size() && source_[at_] != quote) {
      const char c = source_[at_++];
      if (c != '\\' || at_ == source_.size()) {
        out += c;
        continue;
      }
      const char e = source_[at_++];
      const std::string_view simple = "n\nt\tr\rb\bf\fv\va\a\\\\''\"\"";  // escape letter, character
      const size_t pair = simple.find(e);
      const int hex_digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
      if (e == '\n') continue;  // a backslash before a newline joins the lines
      if (pair != std::string_view::npos && pair % 2 == 0) {
        out += simple[pair + 1];
      } else if (hex_digits > 0) {
        uint32_t code = 0;
        const char* digits = source_.data() + at_;
        const char* digits_end = digits + std::min<size_t>(hex_digits, source_.size() - at_);
        const auto [end, ec] = std::from_chars(digits, digits_end, code, 16);
        if (ec != std::errc() || end != digits + hex_digits) error(at_ - 2, "truncated \\{} escape", e);
        if (code > 0x10FFFF) error(at_ - 2, "illegal Unicode character in a \\{} escape", e);
        if (code >= 0xD800 && code <= 0xDFFF) error(at_ - 2, "unsupported: a surrogate in a \\{} escape", e);
        at_ += hex_digits;
        append_utf8(out, code);
      } else if (e >= '0' && e <= '7') {  // up to three octal digits
        char32_t code = e - '0';
        for (int i = 0; i < 2 && at_ < source_.size() && source_[at_] >= '0' && source_[at_] <= '7'; ++i) {
          code = code * 8 + (source_[at_++] - '0');
        }
        append_utf8(out, code);
      } else if (e == 'N') {
        error(at_ - 2, "unsupported escape \\N{{...}}");
      } else if (static_cast<unsigned char>(e) >= 0x80) {  // \é is read as \\xe9: a backslash, then xe9
        size_t character = at_ - 1;
        out += escape(next_code_point(source_, character));
        at_ = character;
      } else {
        out += '\\';  // an unknown escape stays as written
        out += e;
      }
    }
    if (at_ >= source_.size()) error(open, "unclosed string literal");
    ++at_;
    return out;
  }

  const std::string& source_;
  const Locator& where_;
  size_t at_ = 0;
  std::vector<Token> tokens_;
};

// --- The syntax tree -----------------------------------------------------------------

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Literal, Name, List, Dict, Attribute, Item, Slice, Call, Method, Filter, Test,
    Not, Unary, Binary, Compare, And, Or, Conditional,
  };
  Kind kind;
  size_t offset;
  json literal;       // Literal
  std::string name;   // Name, Attribute, Call, Method, Filter, Test; Unary and Binary: the operator
  // The object or left operand first, then the arguments or right operand. Null for an
  // omitted slice bound or else branch. Dict: keys and values alternate.
  std::vector<ExprPtr> operands;
  std::vector<std::pair<std::string, ExprPtr>> keywords;  // name=value arguments
  std::vector<std::string> comparisons;                   // Compare: the operators, in order
  bool negated = false;                                   // Test: `is not`
  int depth = 1;                                          // of the tree below it, itself included
};

struct Node;
using Body = std::vector<Node>;
struct Branch;

struct Node {
  enum class Kind { Text, Output, If, For, Set, Break, Continue, Generation };
  Kind kind;
  size_t offset;
  std::string text;                  // Text
  ExprPtr value;                     // Output, Set: what is printed or assigned; For: the iterable
  ExprPtr filter;                    // For: the `if` clause
  std::vector<std::string> targets;  // For, Set: the names assigned
  std::string attribute;             // Set of `ns.attribute` (targets then holds "ns")
  std::vector<Branch> branches;      // If: if and elif conditions, then a null one for else
  Body body, otherwise;              // For (otherwise: its else), Generation
};

struct Branch {
  ExprPtr condition;
  Body body;
};

// What filters, tests, functions and methods accept; checked when parsing.
struct Arity {
  int min_args, max_args;                  // positional; max -1: any number
  std::vector<std::string_view> keywords;  // {"*"}: any keyword
};

const std::map<std::string_view, Arity> kFilters = {
    {"trim", {0, 1, {}}},    {"length", {0, 0, {}}},  {"count", {0, 0, {}}},   {"tojson", {0, 0, {"indent"}}},
    {"string", {0, 0, {}}},  {"lower", {0, 0, {}}},   {"upper", {0, 0, {}}},   {"default", {0, 2, {}}},
    {"d", {0, 2, {}}},       {"first", {0, 0, {}}},   {"last", {0, 0, {}}},    {"join", {0, 1, {}}},
    {"items", {0, 0, {}}},   {"select", {1, -1, {}}}, {"reject", {1, -1, {}}},
};
const std::map<std::string_view, Arity> kTests = {
    {"defined", {0, 0, {}}}, {"undefined", {0, 0, {}}}, {"none", {0, 0, {}}},    {"string", {0, 0, {}}},
    {"mapping", {0, 0, {}}}, {"iterable", {0, 0, {}}},  {"sequence", {0, 0, {}}}, {"number", {0, 0, {}}},
    {"integer", {0, 0, {}}}, {"float", {0, 0, {}}},     {"boolean", {0, 0, {}}},  {"true", {0, 0, {}}},
    {"false", {0, 0, {}}},   {"equalto", {1, 1, {}}},   {"eq", {1, 1, {}}},
};
const std::map<std::string_view, Arity> kFunctions = {
    {"raise_exception", {1, 1, {}}}, {"strftime_now", {1, 1, {}}}, {"namespace", {0, 0, {"*"}}},
};
const std::map<std::string_view, Arity> kMethods = {
    {"strip", {0, 1, {}}},      {"lstrip", {0, 1, {}}},   {"rstrip", {0, 1, {}}}, {"startswith", {1, 1, {}}},
    {"endswith", {1, 1, {}}},   {"split", {0, 2, {}}},    {"upper", {0, 0, {}}},  {"lower", {0, 0, {}}},
    {"items", {0, 0, {}}},      {"get", {1, 2, {}}},
};
const std::vector<std::string_view> kStringMethods = {"strip", "lstrip", "rstrip", "startswith",
                                                      "endswith", "split", "upper", "lower"};
const std::vector<std::string_view> kMappingMethods = {"items", "get"};

// The statements that continue or end a block.
const std::vector<std::string_view> kClosers = {"elif", "else", "endif", "endfor", "endgeneration"};

bool one_of(std::string_view name, const std::vector<std::string_view>& names) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string names_of(const std::map<std::string_view, Arity>& table) {
  std::string out;
  for (const auto& [name, arity] : table) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

// --- The parser: Jinja's grammar and operator precedence -----------------------------

// Whether a float literal (digits, maybe a point, maybe an exponent) is at least 1; for
// one out of a double's range: whether it overflows (Python reads inf) or underflows (0.0).
bool at_least_one(std::string_view literal) {
  const size_t e = std::min(literal.find_first_of("eE"), literal.size());
  const std::string_view mantissa = literal.substr(0, e);
  const int64_t first = mantissa.find_first_not_of("0."), point = std::min(mantissa.find('.'), mantissa.size());
  int64_t exponent = 0;  // past 2**62 only its sign matters
  if (e < literal.size()) {
    const bool negative = literal[e + 1] == '-';
    const char* digits = literal.data() + e + 1 + (negative || literal[e + 1] == '+');
    const int64_t most = int64_t{1} << 62;
    if (std::from_chars(digits, literal.data() + literal.size(), exponent).ec != std::errc() || exponent > most) {
      exponent = most;
    }
    if (negative) exponent = -exponent;
  }
  // The literal is 0.d... times 10 to this power, its first non-zero digit d.
  return (first < point ? point - first : point + 1 - first) + exponent > 0;
}

class Parser {
 public:
  Parser(std::vector<Token> tokens, const Locator& where) : tokens_(std::move(tokens)), where_(where) {}

  Body parse() { return body({}, nullptr); }

 private:
  template <typename... Args>
  [[noreturn]] void error(const Token& at, fmt::format_string<Args...> format, Args&&... args) const {
    fail("{}: {}", where_(at.offset), fmt::format(format, std::forward<Args>(args)...));
  }

  static std::string describe(const Token& token) {
    switch (token.type) {
      case Token::Type::Text: return "template text";
      case Token::Type::String: return "a string literal";
      case Token::Type::End: return "the end of the template";
      default: return "'" + token.text + "'";
    }
  }

  [[noreturn]] void unexpected(std::string_view expected) const {
    error(peek(), "expected {}, got {}", expected, describe(peek()));
  }

  const Token& peek(size_t ahead = 0) const { return tokens_[std::min(at_ + ahead, tokens_.size() - 1)]; }
  const Token& next() { return tokens_[at_ < tokens_.size() - 1 ? at_++ : at_]; }
  bool at_operator(std::string_view op, size_t ahead = 0) const {
    return peek(ahead).type == Token::Type::Operator && peek(ahead).text == op;
  }
  bool at_name(std::string_view name, size_t ahead = 0) const {
    return peek(ahead).type == Token::Type::Name && peek(ahead).text == name;
  }
  bool accept_operator(std::string_view op) { return at_operator(op) && (next(), true); }
  bool accept_name(std::string_view name) { return at_name(name) && (next(), true); }
  void expect_operator(std::string_view op) {
    if (!accept_operator(op)) unexpected(fmt::format("'{}'", op));
  }
  std::string expect_name() {
    if (peek().type != Token::Type::Name) unexpected("a name");
    return next().text;
  }
  void expect_block_end() {
    if (peek().type != Token::Type::BlockEnd) unexpected("'%}'");
    next();
  }

  static ExprPtr make(Expr::Kind kind, size_t offset, std::string name = "") {
    auto expr = std::make_unique<Expr>();
    expr->kind = kind;
    expr->offset = offset;
    expr->name = std::move(name);
    return expr;
  }
  ExprPtr make(Expr::Kind kind, size_t offset, std::string name, ExprPtr left, ExprPtr right) {
    ExprPtr expr = make(kind, offset, std::move(name));
    add(*expr, std::move(left));
    add(*expr, std::move(right));
    return expr;
  }

  // Adds an operand (or a keyword argument's value). Loops build trees too (1 + 1 + ...,
  // a.b.c..., x|trim|trim...), and evaluating and destroying a tree recurse on it: its
  // depth is kept within kMaxNesting as well.
  void add(Expr& parent, ExprPtr child, std::string keyword = "") {
    if (child && (parent.depth = std::max(parent.depth, child->depth + 1)) > kMaxNesting) too_deep();
    if (keyword.empty()) {
      parent.operands.push_back(std::move(child));
    } else {
      parent.keywords.emplace_back(std::move(keyword), std::move(child));
    }
  }

  // Nodes up to `{% stop %}` for one of `stops` (left at its name) or the template's
  // end, which is an error inside the block `opener` names.
  Body body(const std::vector<std::string_view>& stops, const Token* opener) {
    const Nested nested(*this);
    std::string expected;
    for (std::string_view stop : stops) expected += fmt::format("{}'{{% {} %}}'", expected.empty() ? "" : " or ", stop);
    Body nodes;
    for (;;) {
      const Token& token = peek();
      if (token.type == Token::Type::End) {
        if (!opener) return nodes;
        error(*opener, "'{{% {} %}}' is not closed: expected {} before the end of the template", opener->text,
              expected);
      }
      next();
      if (token.type == Token::Type::Text) {
        nodes.push_back(Node{Node::Kind::Text, token.offset, token.text, {}, {}, {}, {}, {}, {}, {}});
      } else if (token.type == Token::Type::VariableBegin) {
        Node output{Node::Kind::Output, token.offset, "", expression(), {}, {}, {}, {}, {}, {}};
        if (peek().type != Token::Type::VariableEnd) unexpected("'}}'");
        next();
        nodes.push_back(std::move(output));
      } else {  // BlockBegin
        const Token& name = peek();
        if (name.type != Token::Type::Name) unexpected("a statement name");
        if (one_of(name.text, stops)) return nodes;
        if (opener && one_of(name.text, kClosers)) {
          error(name, "unexpected '{{% {} %}}': the '{{% {} %}}' at {} is not closed yet (expected {})", name.text,
                opener->text, where_.position(opener->offset), expected);
        }
        nodes.push_back(statement());
      }
    }
  }

  Node statement() {
    const Token& keyword = next();
    const std::string& name = keyword.text;
    Node node{Node::Kind::Text, keyword.offset, "", {}, {}, {}, {}, {}, {}, {}};
    if (name == "if") {
      node.kind = Node::Kind::If;
      std::string stop = "elif";
      while (stop == "elif") {
        ExprPtr condition = expression();
        expect_block_end();
        node.branches.push_back({std::move(condition), body({"elif", "else", "endif"}, &keyword)});
        stop = next().text;
      }
      if (stop == "else") {
        expect_block_end();
        node.branches.push_back({nullptr, body({"endif"}, &keyword)});
        next();
      }
    } else if (name == "for") {
      node.kind = Node::Kind::For;
      node.targets = target_names();
      if (one_of("loop", {node.targets.begin(), node.targets.end()})) error(keyword, "a for loop cannot assign 'loop'");
      if (!accept_name("in")) unexpected("'in'");
      node.value = expression(false);  // no `a if b else c` here: `if` starts the filter
      if (accept_name("if")) node.filter = expression();
      if (at_name("recursive")) error(peek(), "unsupported: recursive for loops");
      expect_block_end();
      ++loop_depth_;
      node.body = body({"else", "endfor"}, &keyword);
      --loop_depth_;
      if (next().text == "else") {
        expect_block_end();
        node.otherwise = body({"endfor"}, &keyword);
        next();
      }
    } else if (name == "set") {
      node.kind = Node::Kind::Set;
      node.targets = target_names();
      if (node.targets.size() == 1 && accept_operator(".")) node.attribute = expect_name();
      if (!accept_operator("=")) unexpected("'=' (a '{% set %}' block is not supported)");
      node.value = expression();
    } else if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) error(keyword, "'{{% {} %}}' outside a for loop", name);
      node.kind = name == "break" ? Node::Kind::Break : Node::Kind::Continue;
    } else if (name == "generation") {  // transformers' assistant-mask marker: renders its body
      node.kind = Node::Kind::Generation;
      expect_block_end();
      const int loops = std::exchange(loop_depth_, 0);  // the body is a macro in Jinja
      node.body = body({"endgeneration"}, &keyword);
      loop_depth_ = loops;
      next();
    } else if (one_of(name, kClosers)) {
      error(keyword, "unexpected '{{% {} %}}' without its opening statement", name);
    } else {
      error(keyword, "unsupported statement '{{% {} %}}' (supported: if, for, set, break, continue, generation)", name);
    }
    expect_block_end();
    return node;
  }

  std::vector<std::string> target_names() {
    std::vector<std::string> names{expect_name()};
    while (accept_operator(",")) names.push_back(expect_name());
    return names;
  }

  // Precedence, loosest first: a if c else b; or; and; not; comparisons and in;
  // + -; ~; * / // %; unary - +; then filters and tests, which bind tightest of
  // the operators (a + b | trim trims b only), after attributes, items and calls.
  ExprPtr expression(bool conditional = true) {
    const Nested nested(*this);
    ExprPtr node = or_expression();
    while (conditional && at_name("if")) {
      const size_t offset = next().offset;
      ExprPtr condition = or_expression();
      ExprPtr otherwise = accept_name("else") ? expression() : nullptr;
      ExprPtr choice = make(Expr::Kind::Conditional, offset, "", std::move(node), std::move(condition));
      add(*choice, std::move(otherwise));
      node = std::move(choice);
    }
    return node;
  }

  ExprPtr or_expression() {
    return binary_level(Expr::Kind::Or, {"or"}, [&] { return and_expression(); });
  }
  ExprPtr and_expression() {
    return binary_level(Expr::Kind::And, {"and"}, [&] { return not_expression(); });
  }

  ExprPtr not_expression() {
    if (!at_name("not")) return comparison();
    const Nested nested(*this);
    ExprPtr node = make(Expr::Kind::Not, next().offset, "not");
    add(*node, not_expression());
    return node;
  }

  ExprPtr comparison() {
    const size_t offset = peek().offset;
    ExprPtr first = sum();
    ExprPtr node = make(Expr::Kind::Compare, offset);
    add(*node, std::move(first));
    for (;;) {
      if (peek().type == Token::Type::Operator && one_of(peek().text, {"==", "!=", "<", ">", "<=", ">="})) {
        node->comparisons.push_back(next().text);
      } else if (accept_name("in")) {
        node->comparisons.push_back("in");
      } else if (at_name("not") && at_name("in", 1)) {
        next();
        next();
        node->comparisons.push_back("not in");
      } else {
        break;
      }
      add(*node, sum());
    }
    return node->comparisons.empty() ? std::move(node->operands[0]) : std::move(node);
  }

  // Left-associative binary operators (operator tokens, or the names and, or) of one
  // precedence level.
  template <typename Operand>
  ExprPtr binary_level(Expr::Kind kind, const std::vector<std::string_view>& ops, Operand operand) {
    ExprPtr node = operand();
    while ((peek().type == Token::Type::Operator || peek().type == Token::Type::Name) && one_of(peek().text, ops)) {
      const Token& op = next();
      node = make(kind, op.offset, op.text, std::move(node), operand());
    }
    return node;
  }
  ExprPtr sum() {
    return binary_level(Expr::Kind::Binary, {"+", "-"}, [&] { return concatenation(); });
  }
  ExprPtr concatenation() {
    return binary_level(Expr::Kind::Binary, {"~"}, [&] { return product(); });
  }
  ExprPtr product() {
    ExprPtr node = binary_level(Expr::Kind::Binary, {"*", "/", "//", "%"}, [&] { return unary(true); });
    if (at_operator("**")) error(peek(), "unsupported operator '**'");
    return node;
  }

  ExprPtr unary(bool with_filters) {
    const Nested nested(*this);
    ExprPtr node;
    if (at_operator("-") || at_operator("+")) {
      const Token& op = next();
      node = make(Expr::Kind::Unary, op.offset, op.text);
      add(*node, unary(false));
    } else {
      node = primary();
    }
    node = postfix(std::move(node));
    return with_filters ? filters_and_tests(std::move(node)) : std::move(node);
  }

  ExprPtr primary() {
    const Token& token = peek();
    ExprPtr node = make(Expr::Kind::Literal, token.offset);
    if (token.type == Token::Type::Name) {
      if (one_of(token.text, {"and", "or", "not", "in", "is", "if", "else"})) unexpected("an expression");
      if (one_of(token.text, {"true", "True", "false", "False"})) {
        node->literal = token.text == "true" || token.text == "True";
      } else if (token.text == "none" || token.text == "None") {
        node->literal = nullptr;
      } else {
        node = make(Expr::Kind::Name, token.offset, token.text);
      }
      next();
    } else if (token.type == Token::Type::String) {
      std::string text;
      while (peek().type == Token::Type::String) text += next().text;  // adjacent literals join
      node->literal = text;
    } else if (token.type == Token::Type::Integer) {
      int64_t integer = 0;
      const auto [end, ec] = std::from_chars(token.text.data(), token.text.data() + token.text.size(), integer);
      if (ec != std::errc() || end != token.text.data() + token.text.size()) error(token, "integer literal too large");
      node->literal = integer;
      next();
    } else if (token.type == Token::Type::Float) {
      double number = 0;
      const auto [end, ec] = std::from_chars(token.text.data(), token.text.data() + token.text.size(), number);
      if (ec == std::errc::result_out_of_range) number = at_least_one(token.text) ? HUGE_VAL : 0.0;  // as Python
      node->literal = number;
      next();
    } else if (accept_operator("(")) {
      node = expression();
      if (at_operator(",")) error(peek(), "unsupported: tuples");
      expect_operator(")");
    } else if (accept_operator("[")) {
      node->kind = Expr::Kind::List;
      while (!at_operator("]")) {
        add(*node, expression());
        if (!accept_operator(",")) break;
      }
      expect_operator("]");
    } else if (accept_operator("{")) {
      node->kind = Expr::Kind::Dict;
      while (!at_operator("}")) {
        add(*node, expression());
        expect_operator(":");
        add(*node, expression());
        if (!accept_operator(",")) break;
      }
      expect_operator("}");
    } else {
      unexpected("an expression");
    }
    return node;
  }

  // Attributes, items, slices and calls after a primary expression.
  ExprPtr postfix(ExprPtr node) {
    for (;;) {
      if (at_operator(".")) {
        const size_t offset = next().offset;
        if (peek().type == Token::Type::Integer) {  // a.0 is a[0]
          ExprPtr index = primary();
          node = make(Expr::Kind::Item, offset, "", std::move(node), std::move(index));
          continue;
        }
        const Token& name = peek();
        ExprPtr access = make(Expr::Kind::Attribute, offset, expect_name());
        add(*access, std::move(node));
        if (at_operator("(")) {
          access->kind = Expr::Kind::Method;
          arguments(*access, name, "method", kMethods);
        }
        node = std::move(access);
      } else if (at_operator("[")) {
        node = subscript(std::move(node));
      } else if (at_operator("(")) {
        if (node->kind != Expr::Kind::Name) error(peek(), "unsupported: calling this expression");
        const Token& callee = tokens_[at_ - 1];
        node->kind = Expr::Kind::Call;
        arguments(*node, callee, "function", kFunctions);
      } else {
        return node;
      }
    }
  }

  // a[i], or a slice a[start:stop:step] with any part omitted.
  ExprPtr subscript(ExprPtr node) {
    const size_t offset = next().offset;
    ExprPtr start = at_operator(":") ? nullptr : expression();
    if (start && accept_operator("]")) return make(Expr::Kind::Item, offset, "", std::move(node), std::move(start));
    expect_operator(":");
    ExprPtr stop = at_operator("]") || at_operator(":") ? nullptr : expression();
    ExprPtr step = accept_operator(":") && !at_operator("]") ? expression() : nullptr;
    expect_operator("]");
    ExprPtr slice = make(Expr::Kind::Slice, offset, "", std::move(node), std::move(start));
    add(*slice, std::move(stop));
    add(*slice, std::move(step));
    return slice;
  }

  // `| filter(args)` and `is [not] test arg`, which bind tighter than any operator.
  ExprPtr filters_and_tests(ExprPtr node) {
    for (;;) {
      if (at_operator("|")) {
        next();
        const Token& name = peek();
        ExprPtr filter = make(Expr::Kind::Filter, name.offset, expect_name());
        add(*filter, std::move(node));
        arguments(*filter, name, "filter", kFilters);
        if (filter->name == "select" || filter->name == "reject") {
          const Expr& test = *filter->operands[1];
          if (test.kind != Expr::Kind::Literal || !test.literal.is_string() ||
              !kTests.count(test.literal.get<std::string>())) {
            error(name, "'{}' needs the name of a supported test, as a string, first (supported: {})", filter->name,
                  names_of(kTests));
          }
          const std::string& test_name = test.literal.get_ref<const std::string&>();
          check_count(name, "test", test_name, kTests.at(test_name), static_cast<int>(filter->operands.size()) - 2);
        }
        node = std::move(filter);
      } else if (at_name("is")) {
        next();
        ExprPtr test = make(Expr::Kind::Test, peek().offset);
        test->negated = accept_name("not");
        const Token& name = peek();
        test->name = expect_name();
        add(*test, std::move(node));
        // One argument may follow without parentheses (`is equalto 5`): Jinja takes any
        // name but and, or, else as its start.
        const Token& after = peek();
        if (at_name("is")) error(after, "tests cannot be chained: 'is' after 'is {}'", test->name);
        const bool bare_argument = (after.type == Token::Type::Name && !one_of(after.text, {"and", "or", "else"})) ||
                                   after.type == Token::Type::String || after.type == Token::Type::Integer ||
                                   after.type == Token::Type::Float || at_operator("[") || at_operator("{");
        if (bare_argument) add(*test, postfix(primary()));
        arguments(*test, name, "test", kTests);
        node = std::move(test);
      } else {
        return node;
      }
    }
  }

  // The (optional) argument list of a call, checked against `table`.
  void arguments(Expr& call, const Token& name, std::string_view what, const std::map<std::string_view, Arity>& table) {
    if (accept_operator("(")) {
      while (!at_operator(")")) {
        if (peek().type == Token::Type::Name && at_operator("=", 1)) {
          std::string keyword = next().text;
          next();
          add(call, expression(), std::move(keyword));
        } else {
          if (!call.keywords.empty()) error(peek(), "positional argument after a keyword argument");
          add(call, expression());
        }
        if (!accept_operator(",")) break;
      }
      expect_operator(")");
    }
    const auto found = table.find(call.name);
    if (found == table.end()) error(name, "unknown {} '{}' (supported: {})", what, call.name, names_of(table));
    const Arity& arity = found->second;
    check_count(name, what, call.name, arity, static_cast<int>(call.operands.size()) - (call.kind != Expr::Kind::Call));
    for (const auto& [keyword, value] : call.keywords) {
      if (!one_of("*", arity.keywords) && !one_of(keyword, arity.keywords)) {
        error(name, "{} '{}' takes no keyword argument '{}' here", what, call.name, keyword);
      }
    }
  }

  void check_count(const Token& name, std::string_view what, const std::string& callee, const Arity& arity,
                   int given) const {
    if (given < arity.min_args || (arity.max_args >= 0 && given > arity.max_args)) {
      const std::string expected = arity.max_args < 0 ? fmt::format("at least {}", arity.min_args)
                                   : arity.min_args == arity.max_args
                                       ? fmt::format("{}", arity.min_args)
                                       : fmt::format("{} to {}", arity.min_args, arity.max_args);
      error(name, "{} '{}' takes {} positional argument(s), got {}", what, callee, expected, given);
    }
  }

  // Blocks and expressions nest by recursion; past kMaxNesting levels (no chat template
  // comes near) the template is refused rather than the stack overflowed.
  [[noreturn]] void too_deep() const {
    error(peek(), "blocks or expressions nested deeper than {} levels", kMaxNesting);
  }
  struct Nested {
    explicit Nested(Parser& parser) : parser_(parser) {
      if (++parser_.nesting_ > kMaxNesting) parser_.too_deep();
    }
    ~Nested() { --parser_.nesting_; }
    Parser& parser_;
  };

  std::vector<Token> tokens_;
  const Locator& where_;
  size_t at_ = 0;
  int loop_depth_ = 0;
  int nesting_ = 0;
};

// --- The evaluator -------------------------------------------------------------------

// Attributes of a Python dict that are its methods: jinja2 gives the method, not the
// key of that name, for d.name; only calls of items() and get() are supported.
const std::vector<std::string_view> kDictAttributes = {"clear", "copy",       "fromkeys", "get",
                                                       "items", "keys",       "pop",      "popitem",
                                                       "setdefault", "update", "values"};

// The other types' public attributes (their methods, mostly; the immutable sandbox hides
// the list methods that mutate), which jinja2 gives for a.name: refused, where a missing
// attribute is undefined.
const std::map<std::string_view, std::vector<std::string_view>> kPythonAttributes = {
    {"str",
     {"capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format", "format_map",
      "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric",
      "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans", "partition",
      "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split",
      "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill"}},
    {"list", {"copy", "count", "index"}},
    {"tuple", {"count", "index"}},
    {"int",  // and bool; is_integer since Python 3.12
     {"as_integer_ratio", "bit_count", "bit_length", "conjugate", "denominator", "from_bytes", "imag", "is_integer",
      "numerator", "real", "to_bytes"}},
    {"float", {"as_integer_ratio", "conjugate", "fromhex", "hex", "imag", "is_integer", "real"}},
    {"dict_items", {"isdisjoint", "mapping"}},
    {"LoopContext", {"changed", "cycle"}},
};

std::string text_argument(const Value& value, std::string_view what) {
  if (!(value.is(Value::Kind::Json) && value.data.is_string())) {
    problem("{} must be a string, not '{}'", what, type_name(value));
  }
  return value.data.get<std::string>();
}

// An optional string argument: absent or none means "not given".
std::optional<std::string> optional_text(const std::vector<Value>& args, size_t i, std::string_view what) {
  if (i >= args.size() || (args[i].is(Value::Kind::Json) && args[i].data.is_null())) return std::nullopt;
  return text_argument(args[i], what);
}

int64_t int_argument(const Value& value, std::string_view what) {
  if (!(value.is(Value::Kind::Json) && is_integral(value.data))) {
    problem("{} must be an integer, not '{}'", what, type_name(value));
  }
  return as_int(value.data);
}

// Python's upper() and lower() change non-ASCII letters too; refused rather than wrong.
std::string ascii_case(std::string text, bool upper) {
  for (char& c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) problem("upper() and lower() of non-ASCII text are not supported");
    c = static_cast<char>(upper ? std::toupper(c) : std::tolower(c));
  }
  return text;
}

// str.split(sep, maxsplit); without a separator, on runs of whitespace, ignoring it at
// the start (and at the end unless maxsplit stops short of it).
json split(const std::string& text, const std::optional<std::string>& separator, int64_t max_splits) {
  json parts = json::array();
  const auto add = [&](std::string part) {
    if (parts.size() == kMaxItems) too_large();
    parts.push_back(std::move(part));
  };
  if (separator) {
    if (separator->empty()) problem("empty separator");
    size_t start = 0, found = 0;
    while ((max_splits < 0 || static_cast<int64_t>(parts.size()) < max_splits) &&
           (found = find_part(text, *separator, start)) != std::string::npos) {
      add(text.substr(start, found - start));
      start = found + separator->size();
    }
    add(text.substr(start));
    return parts;
  }
  const std::u32string s = decode(text);
  size_t at = 0;
  while (at < s.size() && is_space(s[at])) ++at;
  while (at < s.size()) {
    if (max_splits >= 0 && static_cast<int64_t>(parts.size()) == max_splits) {
      add(encode(std::u32string_view(s).substr(at)));  // the rest, as it is
      break;
    }
    size_t end = at;
    while (end < s.size() && !is_space(s[end])) ++end;
    add(encode(std::u32string_view(s).substr(at, end - at)));
    at = end;
    while (at < s.size() && is_space(s[at])) ++at;
  }
  return parts;
}

class Renderer {
 public:
  enum class Flow { Normal, Break, Continue };

  Renderer(const Locator& where, const json& variables) : where_(where) {
    check(size_of(variables).depth <= kMaxNesting, "{}: unsupported: variables nested deeper than {} levels",
          where.origin, kMaxNesting);
    scopes_.emplace_back();
    for (auto it = variables.begin(); it != variables.end(); ++it) scopes_.back()[it.key()] = Value::of(it.value());
  }

  Flow execute(const Body& body, std::string& out) {
    for (const Node& node : body) {
      Flow flow;
      try {
        flow = execute(node, out);
      } catch (const Problem& p) {
        fail("{}: {}", where_(node.offset), p.what);
      }
      if (flow != Flow::Normal) return flow;
    }
    return Flow::Normal;
  }

 private:
  Flow execute(const Node& node, std::string& out) {
    switch (node.kind) {
      case Node::Kind::Text:
        out += node.text;
        if (out.size() > kMaxText) too_large();
        break;
      case Node::Kind::Output:
        out += str(eval(*node.value));
        if (out.size() > kMaxText) too_large();
        break;
      case Node::Kind::If:
        for (const Branch& branch : node.branches) {
          if (!branch.condition || truthy(eval(*branch.condition))) return execute(branch.body, out);
        }
        break;
      case Node::Kind::For:
        return loop(node, out);
      case Node::Kind::Set: {
        Value value = eval(*node.value);
        if (node.attribute.empty()) {
          bind(node.targets, std::move(value));
          break;
        }
        const Value target = lookup(node.targets[0]);
        if (!target.is(Value::Kind::Namespace) || target.ns->is_loop) {
          problem("cannot assign attribute on non-namespace object '{}'", node.targets[0]);
        }
        // (A namespace inside one could hold itself, which shared_ptr would never free.)
        if (value.is(Value::Kind::Namespace)) problem("unsupported: a namespace or loop as a namespace attribute");
        target.ns->attributes[node.attribute] = std::move(value);
        break;
      }
      case Node::Kind::Break:
        return Flow::Break;
      case Node::Kind::Continue:
        return Flow::Continue;
      case Node::Kind::Generation:
        scopes_.emplace_back();
        execute(node.body, out);
        scopes_.pop_back();
        break;
    }
    return Flow::Normal;
  }

  // A for loop's body runs in a scope of its own each time: what it sets is gone
  // after the iteration, as in Jinja. Jinja's else runs unless some iteration ran the
  // body to its end (one that ends in break or continue does not count).
  Flow loop(const Node& node, std::string& out) {
    std::vector<Value> items = elements(eval(*node.value));
    if (node.filter) {
      std::vector<Value> kept;
      for (Value& item : items) {
        scopes_.emplace_back();
        bind(node.targets, item);
        const bool keep = truthy(eval(*node.filter));
        scopes_.pop_back();
        if (!keep) continue;
        // Jinja filters through a generator that yields the targets: a tuple for several.
        if (node.targets.size() == 1) {
          kept.push_back(std::move(item));
        } else {
          json parts = json::array();
          for (const Value& part : elements(item)) parts.push_back(to_json(part));
          kept.push_back(Value::of(std::move(parts), Value::Kind::Tuple));
        }
      }
      items = std::move(kept);
    }
    bool completed = false;
    const int64_t size = items.size();
    for (int64_t i = 0; i < size; ++i) {
      charge(50);
      auto info = std::make_shared<Namespace>();
      info->is_loop = true;
      info->attributes = {
          {"index", Value::of(i + 1)},         {"index0", Value::of(i)},         {"revindex", Value::of(size - i)},
          {"revindex0", Value::of(size - i - 1)}, {"first", Value::of(i == 0)}, {"last", Value::of(i == size - 1)},
          {"length", Value::of(size)},         {"depth", Value::of(1)},          {"depth0", Value::of(0)},
      };
      if (i > 0) info->attributes["previtem"] = items[i - 1];
      if (i + 1 < size) info->attributes["nextitem"] = items[i + 1];
      scopes_.emplace_back();
      bind(node.targets, items[i]);
      scopes_.back()["loop"] = Value{Value::Kind::Namespace, nullptr, info, "", nullptr};
      const Flow flow = execute(node.body, out);
      scopes_.pop_back();
      completed = completed || flow == Flow::Normal;
      if (flow == Flow::Break) break;
    }
    if (completed) return Flow::Normal;
    scopes_.emplace_back();  // the else body has a scope of its own too
    const Flow flow = execute(node.otherwise, out);
    scopes_.pop_back();
    return flow;
  }

  // Bounds the time of a render to seconds, in units of about 25 ns: an evaluation's work
  // is of the order of the size of its result and operands (results too), 4 units an
  // item and 1 per 8 bytes of text; a loop iteration takes 50.
  void charge(size_t units) {
    work_ += units;
    if (work_ > kMaxWork) problem("unsupported: rendering takes more than {} steps", kMaxWork);
  }

  // Assigns in the innermost scope; several names take the items of one sequence.
  void bind(const std::vector<std::string>& targets, Value value) {
    if (targets.size() == 1) {
      scopes_.back()[targets[0]] = std::move(value);
      return;
    }
    require_defined(value);
    std::vector<Value> parts = elements(value);
    if (parts.size() != targets.size()) problem("cannot unpack {} values into {} names", parts.size(), targets.size());
    for (size_t i = 0; i < parts.size(); ++i) scopes_.back()[targets[i]] = std::move(parts[i]);
  }

  Value lookup(const std::string& name) const {
    for (auto scope = scopes_.rbegin(); scope != scopes_.rend(); ++scope) {
      const auto found = scope->find(name);
      if (found != scope->end()) return found->second;
    }
    // Jinja's own globals are defined too, though only these three can be called.
    if (kFunctions.count(name) || one_of(name, {"range", "dict", "lipsum", "cycler", "joiner"})) {
      return Value{Value::Kind::Function, nullptr, nullptr, name, nullptr};
    }
    return Value::undefined(fmt::format("'{}' is undefined", name));
  }

  Value eval(const Expr& expr) {
    try {
      Value value = evaluate(expr);
      const Size size = size_of(value.data);
      charge(1 + 4 * (size.items + (value.generator ? value.generator->items.size() : 0)) + size.text / 8);
      return value;
    } catch (const Problem& p) {
      fail("{}: {}", where_(expr.offset), p.what);
    }
  }

  std::vector<Value> arguments(const Expr& expr, size_t first) {
    std::vector<Value> args;
    for (size_t i = first; i < expr.operands.size(); ++i) args.push_back(eval(*expr.operands[i]));
    return args;
  }

  Value evaluate(const Expr& expr) {
    const auto operand = [&](size_t i) { return eval(*expr.operands[i]); };
    // Operands are evaluated left to right, as in Python (which decides the error when
    // two would fail), each once, and only where needed (and, or, if-else).
    switch (expr.kind) {
      case Expr::Kind::Literal:
        return Value::of(expr.literal);
      case Expr::Kind::Name:
        return lookup(expr.name);
      case Expr::Kind::List: {
        json list = json::array();
        for (const ExprPtr& item : expr.operands) list.push_back(to_json(eval(*item)));
        check_size(list);
        return Value::of(std::move(list));
      }
      case Expr::Kind::Dict: {  // nlohmann::json sorts keys, Python keeps their order: both agree on sorted keys
        json dict = json::object();
        for (size_t i = 0; i < expr.operands.size(); i += 2) {
          const std::string key = text_argument(operand(i), "a dict key");
          if (!dict.empty() && key <= std::prev(dict.end()).key()) problem("dict literal keys must be in sorted order");
          dict[key] = to_json(operand(i + 1));
        }
        check_size(dict);
        return Value::of(std::move(dict));
      }
      case Expr::Kind::Attribute:
        return attribute(operand(0), expr.name);
      case Expr::Kind::Item: {
        const Value object = operand(0);
        return item(object, operand(1));
      }
      case Expr::Kind::Slice: {
        const Value object = operand(0);
        const auto bound = [&](size_t i) -> std::optional<int64_t> {
          if (!expr.operands[i]) return std::nullopt;
          const Value index = operand(i);
          if (index.is(Value::Kind::Json) && index.data.is_null()) return std::nullopt;
          return int_argument(index, "a slice index");
        };
        const std::optional<int64_t> start = bound(1), stop = bound(2), step = bound(3);
        return slice(object, start, stop, step.value_or(1));
      }
      case Expr::Kind::Call:
        return call(expr);
      case Expr::Kind::Method: {
        const Value object = operand(0);
        return method(object, expr.name, arguments(expr, 1));
      }
      case Expr::Kind::Filter: {
        const Value object = operand(0);
        return filter(expr, object, arguments(expr, 1));
      }
      case Expr::Kind::Test: {
        const Value object = operand(0);
        return Value::of(test(expr.name, object, arguments(expr, 1)) != expr.negated);
      }
      case Expr::Kind::Not:
        return Value::of(!truthy(operand(0)));
      case Expr::Kind::Unary: {
        const Value object = operand(0);
        require_defined(object);
        if (!(object.is(Value::Kind::Json) && is_numeric(object.data))) {
          problem("bad operand type for unary {}: '{}'", expr.name, type_name(object));
        }
        const json& d = object.data;
        if (d.is_number_float()) return Value::of(expr.name == "-" ? -d.get<double>() : d.get<double>());
        return arithmetic(expr.name, Value::of(0), Value::of(as_int(d)));  // -x is 0 - x, +x is 0 + x
      }
      case Expr::Kind::Binary: {
        const Value left = operand(0), right = operand(1);
        if (expr.name == "~") {
          json text = str(left);
          text.get_ref<std::string&>() += str(right);
          check_size(text);
          return Value::of(std::move(text));
        }
        return arithmetic(expr.name, left, right);
      }
      case Expr::Kind::Compare: {
        Value left = operand(0);
        for (size_t i = 0; i < expr.comparisons.size(); ++i) {  // a < b < c is a < b and b < c
          Value right = operand(i + 1);
          const std::string& op = expr.comparisons[i];
          const bool holds = op == "==" ? equal(left, right)
                             : op == "!=" ? !equal(left, right)
                             : op == "in" ? contains(right, left)
                             : op == "not in" ? !contains(right, left)
                                              : ordered(op, left, right);
          if (!holds) return Value::of(false);
          left = std::move(right);
        }
        return Value::of(true);
      }
      case Expr::Kind::And: {  // and/or give one of their operands, as in Python
        Value left = operand(0);
        return truthy(left) ? operand(1) : left;
      }
      case Expr::Kind::Or: {
        Value left = operand(0);
        return truthy(left) ? left : operand(1);
      }
      case Expr::Kind::Conditional:
        if (truthy(operand(1))) return operand(0);
        if (expr.operands[2]) return operand(2);
        return Value::undefined("an inline if-expression without else was false");
    }
    problem("unknown expression");
  }

  // a.name: the attribute first (a namespace's; a dict's methods), then the item.
  static Value attribute(const Value& value, const std::string& name) {
    require_defined(value);
    const std::string type = type_name(value);
    if (value.is(Value::Kind::Generator)) problem("unsupported: attributes and items of a generator");
    const auto python = kPythonAttributes.find(type == "bool" ? "int" : type);
    if (python != kPythonAttributes.end() && one_of(name, python->second)) {
      problem("unsupported: the method or attribute '{}' of a '{}' value (only calls of some methods are)", name, type);
    }
    const Value missing = Value::undefined(fmt::format("'{}' object has no attribute '{}'", type, name));
    if (value.is(Value::Kind::Namespace)) {
      const auto found = value.ns->attributes.find(name);
      return found == value.ns->attributes.end() ? missing : found->second;
    }
    if (value.is(Value::Kind::Json) && value.data.is_object()) {
      if (one_of(name, kDictAttributes)) problem("'{}' is a method of dict here; call it, or write ['{}']", name, name);
      const auto found = value.data.find(name);
      return found == value.data.end() ? missing : Value::of(*found);
    }
    return missing;
  }

  // a[key]: the item first, then (for a string key) the attribute.
  static Value item(const Value& value, const Value& key) {
    require_defined(value);
    if (value.is(Value::Kind::Items)) problem("'dict_items' object is not subscriptable");
    if (value.is(Value::Kind::Generator)) problem("unsupported: attributes and items of a generator");
    if (key.is(Value::Kind::Json) && key.data.is_string()) {
      const std::string& name = key.data.get_ref<const std::string&>();
      if (value.is(Value::Kind::Json) && value.data.is_object() && value.data.contains(name)) {
        return Value::of(value.data[name]);
      }
      return attribute(value, name);
    }
    const bool text = value.is_json() && value.data.is_string();
    if (key.is(Value::Kind::Json) && is_integral(key.data) && value.is_json() && (text || value.data.is_array())) {
      const std::u32string characters = text ? decode(value.data.get_ref<const std::string&>()) : U"";
      const int64_t size = text ? characters.size() : value.data.size();
      int64_t index = as_int(key.data);
      if (index < 0) index += size;
      if (index < 0 || index >= size) return Value::undefined(fmt::format("{} index out of range", type_name(value)));
      return text ? Value::of(encode(characters.substr(index, 1))) : Value::of(value.data[index]);
    }
    return Value::undefined(fmt::format("'{}' object has no item {}", type_name(value), str(key)));
  }

  Value call(const Expr& expr) {
    const Value callee = lookup(expr.name);
    if (!callee.is(Value::Kind::Function)) problem("'{}' is a {} here, not a function", expr.name, type_name(callee));
    if (expr.name == "namespace") {
      auto ns = std::make_shared<Namespace>();
      for (const auto& [name, value] : expr.keywords) ns->attributes[name] = eval(*value);
      return Value{Value::Kind::Namespace, nullptr, ns, "", nullptr};
    }
    const std::vector<Value> args = arguments(expr, 0);
    if (expr.name == "raise_exception") problem("raise_exception: {}", str(args[0]));
    // strftime_now(format): the local time now, as transformers' datetime.now().strftime(format).
    const std::string format = text_argument(args[0], "strftime_now's format");
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buffer[512];
    const size_t size = std::strftime(buffer, sizeof buffer, format.c_str(), &local);
    if (size == 0 && !format.empty()) problem("strftime_now('{}') gave nothing or too much", format);
    return Value::of(std::string(buffer, size));
  }

  static Value method(const Value& object, const std::string& name, const std::vector<Value>& args) {
    require_defined(object);
    const json& d = object.data;
    if (object.is(Value::Kind::Json) && d.is_object() && one_of(name, kMappingMethods)) {
      if (name == "items") {
        json pairs = json::array();
        for (auto it = d.begin(); it != d.end(); ++it) pairs.push_back(json::array({it.key(), it.value()}));
        return Value::of(std::move(pairs), Value::Kind::Items);
      }
      if (args[0].is(Value::Kind::Json) && args[0].data.is_string() && d.contains(args[0].data.get<std::string>())) {
        return Value::of(d[args[0].data.get<std::string>()]);
      }
      return args.size() > 1 ? args[1] : Value::of(nullptr);  // get(key, default=None)
    }
    if (object.is(Value::Kind::Json) && d.is_string() && one_of(name, kStringMethods)) {
      const std::string& text = d.get_ref<const std::string&>();
      if (name == "strip" || name == "lstrip" || name == "rstrip") {
        const std::optional<std::string> chars = optional_text(args, 0, "the characters to strip");
        return Value::of(strip(text, chars, name != "rstrip", name != "lstrip"));
      }
      if (name == "startswith" || name == "endswith") {
        const std::string part = text_argument(args[0], name + "'s argument");
        if (part.size() > text.size()) return Value::of(false);
        return Value::of(text.compare(name == "startswith" ? 0 : text.size() - part.size(), part.size(), part) == 0);
      }
      if (name == "split") {
        return Value::of(split(text, optional_text(args, 0, "split's separator"),
                               args.size() > 1 ? int_argument(args[1], "split's maxsplit") : -1));
      }
      return Value::of(ascii_case(text, name == "upper"));
    }
    problem("'{}' object has no method '{}' here", type_name(object), name);
  }

  Value filter(const Expr& expr, const Value& value, const std::vector<Value>& args) {
    const std::string& name = expr.name;
    if (name == "default" || name == "d") {  // default(value='', boolean=false)
      const bool replace = value.is(Value::Kind::Undefined) || (args.size() > 1 && truthy(args[1]) && !truthy(value));
      return !replace ? value : args.empty() ? Value::of("") : args[0];
    }
    if (name == "length" || name == "count") return Value::of(length(value));
    if (name == "string") return Value::of(str(value));
    if (name == "trim") return Value::of(strip(str(value), optional_text(args, 0, "trim's characters"), true, true));
    if (name == "lower" || name == "upper") return Value::of(ascii_case(str(value), name == "upper"));
    if (name == "tojson") {
      std::optional<int64_t> indent;
      for (const auto& [keyword, argument] : expr.keywords) {  // only indent= passes the parser
        const Value given = eval(*argument);
        if (!(given.is(Value::Kind::Json) && given.data.is_null())) indent = int_argument(given, "tojson's indent");
      }
      if (indent > static_cast<int64_t>(kMaxText)) too_large();
      std::string out;
      dump_json(to_json(value), indent, 0, out);
      return Value::of(out);
    }
    if (name == "items") {  // a generator of (key, value) tuples
      if (value.is(Value::Kind::Undefined)) return generator({});
      if (!(value.is(Value::Kind::Json) && value.data.is_object())) problem("can only get item pairs from a mapping");
      return generator(elements(method(value, "items", {})));
    }
    if (name == "last" && value.is(Value::Kind::Generator)) problem("'generator' object is not reversible");
    std::vector<Value> items = elements(value);
    if (name == "first" || name == "last") {
      if (items.empty()) return Value::undefined("no first or last item: the sequence was empty");
      return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
      const std::string separator = args.empty() ? "" : str(args[0]);
      std::string out;
      for (size_t i = 0; i < items.size(); ++i) {
        out += i ? separator : "";
        out += str(items[i]);
        if (out.size() > kMaxText) too_large();
      }
      return Value::of(out);
    }
    // select/reject(test, args...): the items that pass, or fail, the test.
    const std::vector<Value> test_args(args.begin() + 1, args.end());
    std::vector<Value> kept;
    for (Value& element : items) {
      if (test(args[0].data.get<std::string>(), element, test_args) == (name == "select")) {
        kept.push_back(std::move(element));
      }
    }
    return generator(std::move(kept));
  }

  static bool test(const std::string& name, const Value& value, const std::vector<Value>& args) {
    const json& d = value.data;
    const bool plain = value.is(Value::Kind::Json);
    const bool container = value.is_json() && (d.is_string() || d.is_array() || d.is_object());
    if (name == "defined") return !value.is(Value::Kind::Undefined);
    if (name == "undefined") return value.is(Value::Kind::Undefined);
    if (name == "none") return plain && d.is_null();
    if (name == "string") return plain && d.is_string();
    if (name == "mapping") return plain && d.is_object();
    if (name == "number") return plain && is_numeric(d);  // booleans are numbers in Python
    if (name == "integer") return plain && d.is_number_integer();
    if (name == "float") return plain && d.is_number_float();
    if (name == "boolean") return plain && d.is_boolean();
    if (name == "true" || name == "false") return plain && d.is_boolean() && d.get<bool>() == (name == "true");
    // An undefined value iterates as empty and has a length of 0; Jinja's loop object iterates too.
    if (name == "iterable") {
      return container || value.is(Value::Kind::Undefined) || value.is(Value::Kind::Items) ||
             value.is(Value::Kind::Generator) || (value.is(Value::Kind::Namespace) && value.ns->is_loop);
    }
    if (name == "sequence") return container || value.is(Value::Kind::Undefined);
    return equal(value, args[0]);  // equalto, eq
  }

  const Locator& where_;
  std::vector<std::map<std::string, Value>> scopes_;
  size_t work_ = 0;  // see charge
};

}  // namespace

struct JinjaTemplate::Program {
  Locator where;
  Body body;
};

JinjaTemplate::JinjaTemplate(const std::string& source, std::string origin) {
  for (size_t at = 0; at < source.size();) {  // Python could not read the file either
    const size_t start = at;
    try {
      next_code_point(source, at);
    } catch (const Problem&) {
      fail("{}: the template is not valid UTF-8 (at byte {})", origin, start);
    }
  }
  auto program = std::make_shared<Program>();
  program->where.origin = std::move(origin);
  // Jinja reads "\r\n" and "\r" as "\n", and drops one newline at the very end
  // (keep_trailing_newline is off).
  std::string text;
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r' && i + 1 < source.size() && source[i + 1] == '\n') continue;
    text += source[i] == '\r' ? '\n' : source[i];
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n') program->where.line_starts.push_back(i + 1);
  }
  try {
    program->body = Parser(Lexer(text, program->where).run(), program->where).parse();
  } catch (const Problem& p) {
    fail("{}: {}", program->where.origin, p.what);
  }
  program_ = std::move(program);
}

std::string JinjaTemplate::render(const json& variables) const {
  check(variables.is_object(), "{}: the template's variables must be a JSON object, not {}", program_->where.origin,
        variables.type_name());
  std::string out;
  Renderer(program_->where, variables).execute(program_->body, out);
  return out;
}

}  // namespace can
