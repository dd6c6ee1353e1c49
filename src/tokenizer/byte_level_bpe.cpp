// The byte-level BPE kind of Tokenizer: a tokenizer.json of Hugging Face's `tokenizers`
// library run as that library runs it (Llama 3, Qwen 2 and 2.5, GPT-2; Mistral's
// tokenizer.json is byte-fallback BPE, refused: its tokenizer.model is read instead).
// Encoding a text:
//   1. added tokens: the text is cut at every added token written in it (leftmost,
//      then longest), each becoming its id;
//   2. normalizer (each piece between added tokens): none, or Unicode NFC (Qwen);
//   3. pre-tokenizer: regular expressions (the Split step's, then ByteLevel's own
//      GPT-2 expression when use_regex) cut the piece into words, matches and the
//      text between them alike ("Isolated"); ByteLevel then writes each byte as one
//      printable character (GPT-2's byte alphabet);
//   4. model: each word is its vocabulary id whole when `ignore_merges` and it is in
//      the vocabulary (Llama 3), else its characters merged pair by pair, always the
//      pair of lowest merge rank, leftmost first;
//   5. post-processor: the BOS of a TemplateProcessing "<bos> $A" (Tokenizer::encode
//      adds it), nothing for ByteLevel alone (Qwen).
// Decoding maps the characters back to bytes (a token with a character outside the
// byte alphabet, such as an added token, is taken as its UTF-8), leaves special added
// tokens out, and replaces bytes that are not UTF-8 by U+FFFD as Rust's
// String::from_utf8_lossy does; transformers' clean_up_tokenization_spaces is not
// applied (it breaks the round trip).
//
// The regular expressions run on PCRE2 (UTF and Unicode properties), `tokenizers` on
// Oniguruma; the one difference that matters here is \s, which in Oniguruma also
// matches U+0085 (NEL): patterns are rewritten to say so (onig_compatible below).
// Anything of the format not described here is refused naming the field.
// tokenizer_config.json (beside tokenizer.json) names the bos, eos, pad and unk tokens.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <queue>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "can/error.h"
#include "can/json_fields.h"
#include "tokenizer/tokenizer_handle.h"

namespace can {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ----------------------------------------------------------------------------- UTF-8

std::string utf8_of(uint32_t code_point) {
  std::string out;
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else if (code_point < 0x10000) {
    out += static_cast<char>(0xE0 | (code_point >> 12));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code_point >> 18));
    out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  }
  return out;
}

// The length of the well-formed UTF-8 character at `at` (Unicode's Table 3-7), or 0
// when the bytes there are not one; `prefix` gets how many bytes form the longest
// start of a character (the "maximal subpart" that becomes one U+FFFD).
size_t utf8_length(std::string_view text, size_t at, size_t& prefix) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t lead = byte(at);
  prefix = 1;
  if (lead < 0x80) return 1;
  size_t length;
  uint8_t low = 0x80, high = 0xBF;  // the range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  for (size_t i = 1; i < length; ++i) {
    if (at + i >= text.size()) return 0;
    const uint8_t next = byte(at + i);
    if (next < (i == 1 ? low : 0x80) || next > (i == 1 ? high : 0xBF)) return 0;
    prefix = i + 1;
  }
  return length;
}

uint32_t code_point_at(std::string_view text, size_t at, size_t length) {
  const auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(text[at + i])); };
  switch (length) {
    case 1: return byte(0);
    case 2: return ((byte(0) & 0x1F) << 6) | (byte(1) & 0x3F);
    case 3: return ((byte(0) & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F);
    default: return ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) | (byte(3) & 0x3F);
  }
}

// The byte offset of the first byte that is not well-formed UTF-8, or npos.
size_t first_invalid_utf8(std::string_view text) {
  size_t prefix = 0;
  for (size_t at = 0; at < text.size();) {
    const size_t length = utf8_length(text, at, prefix);
    if (length == 0) return at;
    at += length;
  }
  return std::string_view::npos;
}

// Rust's String::from_utf8_lossy: each maximal ill-formed subpart becomes U+FFFD.
std::string lossy_utf8(std::string_view bytes) {
  static const std::string replacement = utf8_of(0xFFFD);
  std::string out;
  out.reserve(bytes.size());
  size_t prefix = 0;
  for (size_t at = 0; at < bytes.size();) {
    const size_t length = utf8_length(bytes, at, prefix);
    if (length == 0) {
      out += replacement;
      at += prefix;
    } else {
      out.append(bytes.substr(at, length));
      at += length;
    }
  }
  return out;
}

// The characters of a well-formed UTF-8 string, each as its bytes.
std::vector<std::string> characters(std::string_view text) {
  std::vector<std::string> out;
  size_t prefix = 0;
  for (size_t at = 0; at < text.size();) {
    const size_t length = std::max<size_t>(utf8_length(text, at, prefix), 1);
    out.emplace_back(text.substr(at, length));
    at += length;
  }
  return out;
}

// --------------------------------------------------------------- GPT-2's byte alphabet

// Bytes that are printable characters (!..~, ¡..¬, ®..ÿ) stand for themselves; the
// other 68 bytes, in order, for the characters from U+0100 on.
struct ByteAlphabet {
  std::array<std::string, 256> character;            // byte -> its character's UTF-8
  std::unordered_map<uint32_t, uint8_t> byte_of;     // character -> byte
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet = [] {
    ByteAlphabet a;
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t code_point = printable ? b : next++;
      a.character[b] = utf8_of(code_point);
      a.byte_of[code_point] = static_cast<uint8_t>(b);
    }
    return a;
  }();
  return alphabet;
}

// ------------------------------------------------------------------ regular expressions

// GPT-2's pattern, which ByteLevel applies itself when use_regex is true.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// `pattern` (Oniguruma's syntax, as `tokenizers` runs it) for PCRE2: \s also matches
// U+0085 there. \S inside a class has no such rewriting and is refused.
std::string onig_compatible(const std::string& pattern, const std::string& where) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char escaped = pattern[++i];
      if (escaped == 's') {
        out += in_class ? R"(\s\x{85})" : R"([\s\x{85}])";
      } else if (escaped == 'S') {
        check(!in_class, "{}: \\S inside a character class is not supported", where);
        out += R"([^\s\x{85}])";
      } else {
        out += c;
        out += escaped;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // a literal ] first
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    const std::string translated = onig_compatible(pattern, where);
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                              PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr));
    if (!code_) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      fail("{}: the regular expression '{}' does not compile at offset {}: {}", where, pattern, offset,
           reinterpret_cast<const char*>(message));
    }
    pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE);  // faster where PCRE2 has a JIT; the same matches
  }

  // `text` cut into the matches and the stretches between them, in order, none empty.
  // `text` must be well-formed UTF-8.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const {
    const std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr), pcre2_match_data_free);
    size_t done = 0, from = 0, prefix = 0;
    while (from < text.size()) {
      const int found = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), from,
                                    PCRE2_NO_UTF_CHECK, match.get(), nullptr);
      if (found == PCRE2_ERROR_NOMATCH) break;
      check(found >= 0, "matching the tokenizer's regular expression failed (PCRE2 error {})", found);
      const PCRE2_SIZE* range = pcre2_get_ovector_pointer(match.get());
      if (range[0] == range[1]) {  // an empty match cuts nothing: look again one character on
        from = range[1] + std::max<size_t>(utf8_length(text, range[1], prefix), 1);
        continue;
      }
      if (range[0] > done) pieces.push_back(text.substr(done, range[0] - done));
      pieces.push_back(text.substr(range[0], range[1] - range[0]));
      done = from = range[1];
    }
    if (done < text.size()) pieces.push_back(text.substr(done));
  }

 private:
  std::unique_ptr<pcre2_code, decltype(&pcre2_code_free)> code_{nullptr, pcre2_code_free};
};

// ------------------------------------------------------------------------- the format

struct AddedToken {
  std::string content;
  int64_t id;
  bool special;
};

std::string type_of(const json& step, const std::string& where) { return string_field(step, "type", where); }

// The steps of a normalizer, pre-tokenizer or post-processor: `step` itself, or the
// array `field` of a Sequence.
std::vector<json> steps_of(const json& step, const char* field, const std::string& where) {
  if (type_of(step, where) != "Sequence") return {step};
  const json& steps = required_field(step, field, where);
  check(steps.is_array(), "{}.{} must be an array, got {}", where, field, steps.type_name());
  return steps.get<std::vector<json>>();
}

// A field that must be absent, null or `expected` (CAN implements only that value).
void require_value(const json& object, const std::string& field, const json& expected, const std::string& where,
                   const std::string& why) {
  const json* value = optional_field(object, field);
  if (value == nullptr || value->is_null() || *value == expected) return;
  fail("{}.{} is {}: {}", where, field, value->dump(), why);
}

// A token named in tokenizer_config.json: a string, {"content": string}, or null.
std::string special_token_name(const json& config, const std::string& field, const std::string& where) {
  const json* value = optional_field(config, field);
  if (value == nullptr || value->is_null()) return "";
  if (value->is_string()) return value->get<std::string>();
  return string_field(*value, "content", where + "." + field);
}

class ByteLevelBpe : public Tokenizer::Handle {
 public:
  explicit ByteLevelBpe(const fs::path& file) {
    path = file.string();
    files = {file};
    const json document = read_json_file(file);
    read_normalizer(document);
    const json* added = optional_field(document, "added_tokens");
    read_model(required_field(document, "model", path), path + ": model",
               added != nullptr && added->is_array() ? added->size() : 0);
    read_added_tokens(document);
    read_pre_tokenizer(document);
    read_post_processor(document);
    read_decoder(document);
    read_special_tokens(file.parent_path() / "tokenizer_config.json");
    for (const fs::path& companion : companion_files(file)) files.push_back(companion);
    write_token_bytes();
  }

  std::vector<int64_t> encode(const std::string& text) const override {
    const size_t invalid = first_invalid_utf8(text);
    check(invalid == std::string::npos, "cannot encode with the tokenizer '{}': the text is not UTF-8 at byte {}", path,
          invalid);
    std::vector<int64_t> ids;
    size_t done = 0;
    for (size_t at = 0; at < text.size();) {
      const AddedToken* added = added_token_at(text, at);
      if (added == nullptr) {
        ++at;
        continue;
      }
      encode_plain(std::string_view(text).substr(done, at - done), ids);
      ids.push_back(added->id);
      at = done = at + added->content.size();
    }
    encode_plain(std::string_view(text).substr(done), ids);
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string bytes;
    for (const int64_t id : ids) {
      const auto at = static_cast<size_t>(id);
      check(present_[at], "token id {} is not in the vocabulary of '{}'", id, path);
      if (!special_[at]) bytes += bytes_of_[at];
    }
    return lossy_utf8(bytes);
  }

 private:
  // Each token's bytes, once: its characters mapped back through the byte alphabet, or,
  // for a token with a character outside it (an added token's text), its UTF-8 as is.
  void write_token_bytes() {
    const ByteAlphabet& alphabet = byte_alphabet();
    bytes_of_.resize(token_of_.size());
    for (size_t id = 0; id < token_of_.size(); ++id) {
      std::string& bytes = bytes_of_[id];
      for (const std::string& character : characters(token_of_[id])) {
        size_t length = 0;
        const auto found = alphabet.byte_of.find(code_point_at(character, 0, utf8_length(character, 0, length)));
        if (found == alphabet.byte_of.end()) {
          bytes = token_of_[id];
          break;
        }
        bytes += static_cast<char>(found->second);
      }
    }
  }

  // `added_count`: how many added tokens follow, so that ids can be checked to be dense.
  void read_model(const json& model, const std::string& where, size_t added_count) {
    const std::string type = type_of(model, where);
    check(type == "BPE", "{}.type is '{}': CAN reads BPE tokenizer.json files only (a sentencepiece model comes as "
          "tokenizer.model)", where, type);
    require_value(model, "dropout", 0.0, where, "BPE dropout is not implemented");
    require_value(model, "byte_fallback", false, where,
                  "byte-fallback BPE (the tokenizer.json of Llama 2 and Mistral) is not "
                  "implemented; give CAN the model's tokenizer.model instead");
    require_value(model, "continuing_subword_prefix", "", where, "subword prefixes are not implemented");
    require_value(model, "end_of_word_suffix", "", where, "end-of-word suffixes are not implemented");
    if (const json* ignore = optional_field(model, "ignore_merges"); ignore != nullptr && !ignore->is_null()) {
      ignore_merges_ = bool_field(model, "ignore_merges", where);
    }
    const json& vocab = required_field(model, "vocab", where);
    check(vocab.is_object(), "{}.vocab must be an object of token: id", where);
    token_count_ = static_cast<int64_t>(vocab.size() + added_count);  // ids are dense, below it
    for (const auto& [token, id] : vocab.items()) {
      check(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < token_count_,
            "{}.vocab['{}'] must be an id in [0, {}) (the number of tokens), got {}", where, token, token_count_,
            id.dump());
      add_token(token, id.get<int64_t>(), where + ".vocab");
      vocab_[token] = id.get<int64_t>();
    }
    const json& merges = required_field(model, "merges", where);
    check(merges.is_array(), "{}.merges must be an array", where);
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const std::string at = fmt::format("{}.merges[{}]", where, rank);
      const json& merge = merges[rank];
      std::string left, right;
      if (merge.is_string()) {  // "left right", the format of tokenizers before 0.20
        const std::string text = merge.get<std::string>();
        const size_t space = text.find(' ');
        check(space != std::string::npos && text.find(' ', space + 1) == std::string::npos,
              "{}: '{}' is not two tokens separated by one space", at, text);
        left = text.substr(0, space);
        right = text.substr(space + 1);
      } else {
        check(merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string(),
              "{}: a merge is \"left right\" or [left, right], got {}", at, merge.dump());
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      }
      for (const std::string* token : {&left, &right}) {
        check(vocab.contains(*token), "{}: '{}' is not in the vocabulary", at, *token);
      }
      check(vocab.contains(left + right), "{}: the merged token '{}' is not in the vocabulary", at, left + right);
      // A duplicate takes the later rank, as `tokenizers` inserts each merge into its map in turn.
      merge_rank_[merge_key(left, right)] = static_cast<int64_t>(rank);
    }
    if (const json* unk = optional_field(model, "unk_token"); unk != nullptr && !unk->is_null()) {
      check(unk->is_string() && vocab.contains(unk->get<std::string>()),
            "{}.unk_token must name a token of the vocabulary, got {}", where, unk->dump());
      unk_id = vocab.at(unk->get<std::string>()).get<int>();
    }
    for (const auto& [byte_character, unused] : byte_alphabet().byte_of) {
      (void)unused;
      check(vocab.contains(utf8_of(byte_character)),
            "{}.vocab lacks the byte character U+{:04X}: not a byte-level BPE vocabulary", where, byte_character);
    }
  }

  void read_added_tokens(const json& document) {
    const json* added = optional_field(document, "added_tokens");
    if (added == nullptr || added->is_null()) return;
    check(added->is_array(), "{}: added_tokens must be an array", path);
    for (size_t i = 0; i < added->size(); ++i) {
      const json& token = (*added)[i];
      const std::string where = fmt::format("{}: added_tokens[{}]", path, i);
      AddedToken entry{string_field(token, "content", where), integer_field(token, "id", where),
                       bool_field(token, "special", where)};
      check(!entry.content.empty(), "{}: content is empty", where);
      check(entry.id >= 0 && entry.id < token_count_, "{}: id {} is outside [0, {}) (the number of tokens)", where,
            entry.id, token_count_);
      for (const char* option : {"single_word", "lstrip", "rstrip"}) {
        require_value(token, option, false, where, "this option of added tokens is not implemented");
      }
      // Matched in the text before normalization: the same as after it when nothing normalizes.
      if (const json* normalized = optional_field(token, "normalized"); normalized != nullptr && *normalized == true) {
        check(!normalizes_nfc_,
              "{}: normalized is true with a normalizer: matching added tokens in normalized text is not implemented",
              where);
      }
      add_token(entry.content, entry.id, where);
      added_id_of_[entry.content] = entry.id;
      special_[static_cast<size_t>(entry.id)] = entry.special;
      added_by_first_byte_[static_cast<uint8_t>(entry.content[0])].push_back(entry);
    }
    for (auto& [first, tokens] : added_by_first_byte_) {  // longest first: the match taken is the longest
      (void)first;
      std::stable_sort(tokens.begin(), tokens.end(),
                       [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    }
  }

  void read_normalizer(const json& document) {
    const json* normalizer = optional_field(document, "normalizer");
    if (normalizer == nullptr || normalizer->is_null()) return;
    const std::string where = path + ": normalizer";
    for (const json& step : steps_of(*normalizer, "normalizers", where)) {
      const std::string type = type_of(step, where);
      check(type == "NFC", "{}: the normalizer {} is not implemented (CAN implements NFC)", where, type);
      normalizes_nfc_ = true;
    }
  }

  void read_pre_tokenizer(const json& document) {
    const std::string where = path + ": pre_tokenizer";
    const json& pre_tokenizer = required_field(document, "pre_tokenizer", path);
    check(pre_tokenizer.is_object(), "{} is {}: a byte-level BPE needs the ByteLevel pre-tokenizer", where,
          pre_tokenizer.dump());
    const std::vector<json> steps = steps_of(pre_tokenizer, "pretokenizers", where);
    std::string types;
    for (const json& step : steps) types += (types.empty() ? "" : ", ") + type_of(step, where);
    check(!steps.empty() && type_of(steps.back(), where) == "ByteLevel",
          "{} is [{}]: CAN implements a Split by regular expression followed by ByteLevel, or ByteLevel alone", where,
          types);
    for (size_t i = 0; i < steps.size(); ++i) {
      const json& step = steps[i];
      const std::string at = fmt::format("{}[{}]", where, i);
      const std::string type = type_of(step, at);
      if (type == "ByteLevel") {
        check(i + 1 == steps.size(), "{}: ByteLevel must be the last pre-tokenizer", at);
        require_value(step, "add_prefix_space", false, at, "a prefix space is not implemented");
        const json* use_regex = optional_field(step, "use_regex");  // `tokenizers`' default: true
        if (use_regex == nullptr || use_regex->is_null() || bool_field(step, "use_regex", at)) {
          splits_.emplace_back(kGpt2Pattern, at);
        }
      } else if (type == "Split") {
        check(string_field(step, "behavior", at) == "Isolated", "{}.behavior: only Isolated is implemented", at);
        require_value(step, "invert", false, at, "inverted splits are not implemented");
        const json& pattern = required_field(step, "pattern", at);
        if (const json* regex = optional_field(pattern, "Regex"); regex != nullptr) {
          splits_.emplace_back(string_field(pattern, "Regex", at + ".pattern"), at + ".pattern.Regex");
        } else {
          fail("{}.pattern: only {{\"Regex\": ...}} patterns are implemented, got {}", at, pattern.dump());
        }
      } else {
        fail("{}: the pre-tokenizer {} is not implemented", at, type);
      }
    }
  }

  void read_post_processor(const json& document) {
    const json* processor = optional_field(document, "post_processor");
    if (processor == nullptr || processor->is_null()) return;
    const std::string where = path + ": post_processor";
    for (const json& step : steps_of(*processor, "processors", where)) {
      const std::string type = type_of(step, where);
      if (type == "ByteLevel") continue;  // its trim_offsets changes offsets, never ids
      check(type == "TemplateProcessing", "{}: the post-processor {} is not implemented", where, type);
      const json& single = required_field(step, "single", where);
      check(single.is_array(), "{}.single must be an array", where);
      size_t text_at = single.size();
      for (size_t i = 0; i < single.size(); ++i) {
        if (optional_field(single[i], "Sequence") != nullptr) text_at = i;
      }
      check(text_at + 1 == single.size() && text_at <= 1,
            "{}.single is {}: CAN implements templates of the text alone or one special token then the text", where,
            single.dump());
      if (text_at == 1) {
        const std::string name = string_field(required_field(single[0], "SpecialToken", where + ".single[0]"), "id",
                                              where + ".single[0].SpecialToken");
        const json& special = required_field(required_field(step, "special_tokens", where), name,
                                             where + ".special_tokens");
        const json& special_ids = required_field(special, "ids", where + ".special_tokens." + name);
        check(special_ids.is_array() && special_ids.size() == 1 && special_ids[0].is_number_integer(),
              "{}.special_tokens.{}.ids must be one id, got {}", where, name, special_ids.dump());
        bos_id = special_ids[0].get<int>();
        check(bos_id >= 0 && bos_id < vocab_size && present_[static_cast<size_t>(bos_id)],
              "{}.special_tokens.{}: id {} is not in the vocabulary", where, name, bos_id);
        adds_bos = true;
      }
    }
  }

  void read_decoder(const json& document) {
    const json& decoder = required_field(document, "decoder", path);
    check(decoder.is_object(), "{}: decoder is {}: a byte-level BPE is decoded by the ByteLevel decoder", path,
          decoder.dump());
    const std::string type = type_of(decoder, path + ": decoder");
    check(type == "ByteLevel", "{}: decoder: the decoder {} is not implemented (CAN decodes byte-level BPE)", path,
          type);
  }

  // bos (when the post-processor adds none), eos, pad and unk by name.
  void read_special_tokens(const fs::path& config_file) {
    check(fs::is_regular_file(config_file),
          "'{}' is missing: beside tokenizer.json it names the special tokens (eos_token, which ends every response)",
          config_file.string());
    const json config = read_json_file(config_file);
    const std::string where = config_file.string();
    for (const char* option : {"add_eos_token", "split_special_tokens"}) {
      require_value(config, option, false, where, "not implemented: CAN adds no EOS when encoding text, and treats "
                    "added tokens written in the text as those tokens, as transformers does by default");
    }
    const auto id_of = [&](const char* field) {
      const std::string name = special_token_name(config, field, where);
      if (name.empty()) return -1;
      // An added token with a vocabulary token's text takes its place.
      if (const auto added = added_id_of_.find(name); added != added_id_of_.end()) return static_cast<int>(added->second);
      const auto found = vocab_.find(name);
      check(found != vocab_.end(), "{}: {} '{}' is not a token of '{}'", where, field, name, path);
      return static_cast<int>(found->second);
    };
    const int named_bos = id_of("bos_token");
    if (!adds_bos) bos_id = named_bos;
    if (const json* add_bos = optional_field(config, "add_bos_token"); add_bos != nullptr && !add_bos->is_null()) {
      check(add_bos->is_boolean() && add_bos->get<bool>() == adds_bos,
            "{}: add_bos_token is {} but the post-processor of '{}' {} a BOS: CAN follows tokenizer.json, so the two "
            "must agree", where, add_bos->dump(), path, adds_bos ? "adds" : "adds no");
    }
    eos_id = id_of("eos_token");
    check(eos_id >= 0, "{}: no eos_token: CAN ends every response with it", where);
    pad_id = id_of("pad_token");
    if (const int named_unk = id_of("unk_token"); named_unk >= 0) unk_id = named_unk;
  }

  void add_token(const std::string& token, int64_t id, const std::string& where) {
    if (static_cast<size_t>(id) >= token_of_.size()) {
      token_of_.resize(static_cast<size_t>(id) + 1);
      present_.resize(static_cast<size_t>(id) + 1, false);
      special_.resize(static_cast<size_t>(id) + 1, false);
    }
    const size_t at = static_cast<size_t>(id);
    check(!present_[at] || token_of_[at] == token, "{}: id {} is given to both '{}' and '{}'", where, id,
          token_of_[at], token);
    token_of_[at] = token;
    present_[at] = true;
    vocab_size = static_cast<int>(token_of_.size());
  }

  static std::string merge_key(const std::string& left, const std::string& right) {
    std::string key = left;
    key += '\0';  // in no byte-level token: byte 0 is written U+0100
    key += right;
    return key;
  }

  // The longest added token that starts at byte `at` of `text`, or null.
  const AddedToken* added_token_at(const std::string& text, size_t at) const {
    const auto candidates = added_by_first_byte_.find(static_cast<uint8_t>(text[at]));
    if (candidates == added_by_first_byte_.end()) return nullptr;
    for (const AddedToken& token : candidates->second) {
      if (text.compare(at, token.content.size(), token.content) == 0) return &token;
    }
    return nullptr;
  }

  // Steps 2 to 4 for text without added tokens.
  void encode_plain(std::string_view text, std::vector<int64_t>& ids) const {
    if (text.empty()) return;
    std::string normalized(text);
    if (normalizes_nfc_) {
      utf8proc_uint8_t* composed = nullptr;
      const utf8proc_ssize_t size =
          utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()),
                       &composed, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
      check(size >= 0, "normalizing text to NFC for the tokenizer '{}' failed: {}", path, utf8proc_errmsg(size));
      normalized.assign(reinterpret_cast<const char*>(composed), static_cast<size_t>(size));
      std::free(composed);
    }
    std::vector<std::string_view> words = {normalized}, next;
    for (const Regex& split : splits_) {
      next.clear();
      for (const std::string_view word : words) split.split(word, next);
      words.swap(next);
    }
    const ByteAlphabet& alphabet = byte_alphabet();
    for (const std::string_view word : words) {
      std::string mapped;
      for (const char byte : word) mapped += alphabet.character[static_cast<uint8_t>(byte)];
      encode_word(mapped, ids);
    }
  }

  // BPE on one pre-tokenized word, written in the byte alphabet: while some adjacent pair
  // of symbols has a merge, merge the pair of lowest rank, the leftmost of equals. The
  // candidates wait in a heap by (rank, position), each checked when it comes out (its
  // two symbols may have merged since): n log n, where rescanning every pair after each
  // merge took seconds for a 20,000-character word.
  void encode_word(const std::string& word, std::vector<int64_t>& ids) const {
    if (ignore_merges_) {
      if (const auto whole = vocab_.find(word); whole != vocab_.end()) {
        ids.push_back(whole->second);
        return;
      }
    }
    struct Symbol {
      std::string text;
      int64_t previous, next;  // neighbours still in the word; -1 at its ends
    };
    std::vector<Symbol> symbols;
    for (std::string& character : characters(word)) {
      const auto at = static_cast<int64_t>(symbols.size());
      symbols.push_back({std::move(character), at - 1, -1});
      if (at > 0) symbols[static_cast<size_t>(at - 1)].next = at;
    }
    const auto rank_of = [&](int64_t left) -> std::optional<int64_t> {  // of the pair starting at `left`
      const Symbol& symbol = symbols[static_cast<size_t>(left)];
      if (symbol.next < 0) return std::nullopt;
      const auto found = merge_rank_.find(merge_key(symbol.text, symbols[static_cast<size_t>(symbol.next)].text));
      return found == merge_rank_.end() ? std::nullopt : std::optional<int64_t>(found->second);
    };
    using Candidate = std::pair<int64_t, int64_t>;  // (rank, position of the pair's left symbol)
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> candidates;
    const auto offer = [&](int64_t left) {
      if (left < 0) return;
      if (const auto rank = rank_of(left)) candidates.emplace(*rank, left);
    };
    for (int64_t i = 0; i + 1 < static_cast<int64_t>(symbols.size()); ++i) offer(i);
    std::vector<bool> merged_away(symbols.size(), false);
    while (!candidates.empty()) {
      const auto [rank, left] = candidates.top();
      candidates.pop();
      if (merged_away[static_cast<size_t>(left)] || rank_of(left) != rank) continue;  // no longer this pair
      Symbol& symbol = symbols[static_cast<size_t>(left)];
      const int64_t right = symbol.next;
      symbol.text += symbols[static_cast<size_t>(right)].text;
      merged_away[static_cast<size_t>(right)] = true;
      symbol.next = symbols[static_cast<size_t>(right)].next;
      if (symbol.next >= 0) symbols[static_cast<size_t>(symbol.next)].previous = left;
      offer(symbol.previous);
      offer(left);
    }
    // Each symbol is a byte character or a merge's result, all in the vocabulary (read_model checks).
    for (int64_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[static_cast<size_t>(i)].next) {
      ids.push_back(vocab_.at(symbols[static_cast<size_t>(i)].text));
    }
  }

  std::vector<std::string> token_of_;  // id -> token (vocabulary and added tokens)
  std::vector<std::string> bytes_of_;  // id -> the bytes the token decodes to
  std::vector<bool> present_, special_;
  std::unordered_map<std::string, int64_t> vocab_;        // the model's token -> id
  std::unordered_map<std::string, int64_t> added_id_of_;  // added token -> id
  std::unordered_map<std::string, int64_t> merge_rank_;  // merge_key(left, right) -> rank
  std::map<uint8_t, std::vector<AddedToken>> added_by_first_byte_;
  std::vector<Regex> splits_;
  int64_t token_count_ = 0;  // vocabulary and added tokens
  bool normalizes_nfc_ = false;
  bool ignore_merges_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer::Handle> load_byte_level_bpe(const fs::path& tokenizer_json) {
  return std::make_unique<ByteLevelBpe>(tokenizer_json);
}

}  // namespace can
