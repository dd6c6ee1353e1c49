// The byte-level BPE kind of Tokenizer on small tokenizer.json files written here, each
// rule on its own; tests/reference/tokenizer_json_vs_transformers.py compares whole
// tokenizers with transformers.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "can/error.h"
#include "can/tokenizer.h"
#include "temporary_directory.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string utf8(uint32_t code_point) {
  std::string out;
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else {  // the byte alphabet stays below U+0800
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  }
  return out;
}

// GPT-2's byte alphabet, written out: printable bytes are themselves, the other 68
// bytes U+0100 on in order. Id b is the character of byte b.
std::vector<std::string> byte_characters() {
  std::vector<std::string> characters;
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    characters.push_back(utf8(printable ? b : next++));
  }
  return characters;
}

int64_t byte_id(char c) { return static_cast<uint8_t>(c); }

class ByteLevelBpeTest : public ::testing::Test {
 protected:
  // Ids: 0..255 the bytes, then "ab" 256, "bc" 257, "abc" 258, "Ġa" 259; added
  // "<s>" 260 (special), "<s>x" 261 (special), "<tool>" 262 (not special).
  ByteLevelBpeTest() {
    json vocab = json::object();
    const auto characters = byte_characters();
    for (size_t b = 0; b < characters.size(); ++b) vocab[characters[b]] = b;
    vocab["ab"] = 256;
    vocab["bc"] = 257;
    vocab["abc"] = 258;
    vocab[characters[' '] + "a"] = 259;
    document_ = {
        {"version", "1.0"},
        {"added_tokens",
         {{{"id", 260}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
          {{"id", 261}, {"content", "<s>x"}, {"special", true}, {"normalized", false}},
          {{"id", 262}, {"content", "<tool>"}, {"special", false}, {"normalized", false}}}},
        {"normalizer", nullptr},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", R"( ?\p{L}+|\s+|\p{N})"}}}, {"behavior", "Isolated"},
             {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}}},
        {"post_processor",
         {{"type", "TemplateProcessing"},
          {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
          {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {260}}, {"tokens", {"<s>"}}}}}}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model",
         {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"byte_fallback", false},
          {"ignore_merges", false},
          {"vocab", vocab},
          // (json::array: a list of two-string lists would otherwise become an object)
          {"merges", json::array({json::array({"b", "c"}), json::array({"a", "b"}), json::array({"a", "bc"}),
                                  json::array({characters[' '], "a"})})}}}};
    config_ = {{"bos_token", "<s>"}, {"eos_token", {{"content", "<s>x"}}}, {"pad_token", nullptr}};
  }

  can::Tokenizer load() const {
    std::ofstream(dir_.path() / "tokenizer.json") << document_.dump();
    std::ofstream(dir_.path() / "tokenizer_config.json") << config_.dump();
    return can::Tokenizer::load(dir_.path().string());
  }

  // The message of the error loading gives.
  std::string load_error() const {
    try {
      load();
    } catch (const can::Error& error) {
      return error.what();
    }
    return "(no error)";
  }

  can::testing::TemporaryDirectory dir_;
  json document_, config_;
};

TEST_F(ByteLevelBpeTest, MergesTheLowestRankedPairFirst) {
  const can::Tokenizer tokenizer = load();
  // "b c" (rank 0) before "a b" (rank 1): abc -> a + bc -> abc (rank 2).
  EXPECT_EQ(tokenizer.encode("abc", false), (std::vector<int64_t>{258}));
  // Without "a bc", the a stays alone even though "a b" exists.
  document_["model"]["merges"].erase(2);
  EXPECT_EQ(load().encode("abc", false), (std::vector<int64_t>{byte_id('a'), 257}));
}

TEST_F(ByteLevelBpeTest, ADuplicateMergeTakesItsLaterRankAsTheTokenizersLibraryDoes) {
  // Ranks a b 0, b c 1, a bc 2: "abc" merges a b first and stops at ab + c.
  document_["model"]["merges"][0] = json::array({"a", "b"});
  document_["model"]["merges"][1] = json::array({"b", "c"});
  EXPECT_EQ(load().encode("abc", false), (std::vector<int64_t>{256, byte_id('c')}));
  // "a b" again at rank 4 moves it behind b c: a + bc, then abc.
  document_["model"]["merges"].push_back(json::array({"a", "b"}));
  EXPECT_EQ(load().encode("abc", false), (std::vector<int64_t>{258}));
}

TEST_F(ByteLevelBpeTest, EncodesTheSameFromSeveralThreads) {
  const can::Tokenizer tokenizer = load();
  const std::string text = "ab a12 <tool> \xC3\xA9 abc<s>x";
  const std::vector<int64_t> expected = tokenizer.encode(text);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) mismatches += tokenizer.encode(text) != expected;
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(ByteLevelBpeTest, IgnoreMergesTakesAWordInTheVocabularyWhole) {
  document_["model"]["merges"] = json::array();
  EXPECT_EQ(load().encode("abc", false), (std::vector<int64_t>{byte_id('a'), byte_id('b'), byte_id('c')}));
  document_["model"]["ignore_merges"] = true;
  EXPECT_EQ(load().encode("abc", false), (std::vector<int64_t>{258}));
}

TEST_F(ByteLevelBpeTest, TheSplitPatternCutsWordsAndBytesBecomeCharacters) {
  const can::Tokenizer tokenizer = load();
  // " a" is one word (Ġa, 259); digits are one word each; é is two bytes, each its own id.
  EXPECT_EQ(tokenizer.encode("ab a12", false),
            (std::vector<int64_t>{256, 259, byte_id('1'), byte_id('2')}));
  EXPECT_EQ(tokenizer.encode("\xC3\xA9", false), (std::vector<int64_t>{0xC3, 0xA9}));
}

TEST_F(ByteLevelBpeTest, AddedTokensInTheTextAreCutOutLongestFirst) {
  const can::Tokenizer tokenizer = load();
  EXPECT_EQ(tokenizer.encode("ab<s>xab<s>ab", false), (std::vector<int64_t>{256, 261, 256, 260, 256}));
  EXPECT_EQ(tokenizer.encode("<tool><s", false), (std::vector<int64_t>{262, byte_id('<'), byte_id('s')}));
}

TEST_F(ByteLevelBpeTest, TheTemplatesBosIsAddedOnRequest) {
  const can::Tokenizer tokenizer = load();
  EXPECT_EQ(tokenizer.bos_id(), 260);
  EXPECT_EQ(tokenizer.eos_id(), 261);
  EXPECT_EQ(tokenizer.pad_id(), -1);
  EXPECT_EQ(tokenizer.vocab_size(), 263);
  EXPECT_EQ(tokenizer.encode("ab"), (std::vector<int64_t>{260, 256}));
  EXPECT_EQ(tokenizer.encode("ab", false), (std::vector<int64_t>{256}));
}

TEST_F(ByteLevelBpeTest, WithoutATemplateNoBosIsAddedAndNoneIsNeeded) {
  document_["post_processor"] = {{"type", "ByteLevel"}, {"trim_offsets", false}};
  config_["bos_token"] = nullptr;
  const can::Tokenizer tokenizer = load();
  EXPECT_EQ(tokenizer.bos_id(), -1);
  EXPECT_EQ(tokenizer.encode("ab"), (std::vector<int64_t>{256}));
}

TEST_F(ByteLevelBpeTest, DecodeLeavesOutSpecialTokensAndReplacesBrokenCharacters) {
  const can::Tokenizer tokenizer = load();
  EXPECT_EQ(tokenizer.decode({260, 256, 262, 259, 261}), "ab<tool> a");
  EXPECT_EQ(tokenizer.decode({0xC3, 0xA9}), "\xC3\xA9");
  // A two-byte character cut after its first byte, and a lone continuation byte.
  EXPECT_EQ(tokenizer.decode({byte_id('x'), 0xC3}), "x\xEF\xBF\xBD");
  EXPECT_EQ(tokenizer.decode({0xA9, byte_id('x')}), "\xEF\xBF\xBDx");
  const std::string text = "ab a12 <tool> \xC3\xA9\t\n";
  EXPECT_EQ(tokenizer.decode(tokenizer.encode(text)), text);
}

TEST_F(ByteLevelBpeTest, TextThatIsNotUtf8IsRefusedWithItsByte) {
  const can::Tokenizer tokenizer = load();
  try {
    tokenizer.encode("ab\xFFz");
    FAIL() << "no error";
  } catch (const can::Error& error) {
    EXPECT_NE(std::string(error.what()).find("not UTF-8 at byte 2"), std::string::npos) << error.what();
  }
}

TEST_F(ByteLevelBpeTest, AFolderWithTokenizerModelIsSentencepieceAndSaveCopiesTheTokenizersFiles) {
  std::ofstream(dir_.path() / "chat_template.jinja") << "{{ messages[0].content }}";
  const can::Tokenizer tokenizer = load();
  EXPECT_EQ(tokenizer.path(), (dir_.path() / "tokenizer.json").string());
  const fs::path copy = dir_.path() / "copy";
  fs::create_directories(copy);
  tokenizer.save(copy.string());
  EXPECT_TRUE(fs::exists(copy / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(copy / "tokenizer_config.json"));
  EXPECT_TRUE(fs::exists(copy / "chat_template.jinja"));
  EXPECT_EQ(can::Tokenizer::load(copy.string()).encode("abc"), tokenizer.encode("abc"));
  tokenizer.save(dir_.path().string());  // onto itself: nothing to do
  std::ofstream(copy / "tokenizer.model") << "not a sentencepiece model";
  try {  // tokenizer.model wins, and is read
    can::Tokenizer::load(copy.string());
    FAIL() << "no error";
  } catch (const can::Error& error) {
    EXPECT_NE(std::string(error.what()).find((copy / "tokenizer.model").string()), std::string::npos) << error.what();
  }
  fs::remove_all(copy);
  fs::create_directories(copy);
  EXPECT_THROW(can::Tokenizer::load(copy.string()), can::Error);
}

TEST_F(ByteLevelBpeTest, WhatIsNotImplementedIsRefusedByName) {
  const auto refused = [&](const std::string& what) {
    const std::string message = load_error();
    EXPECT_NE(message.find(what), std::string::npos) << "expected '" << what << "' in: " << message;
  };
  const json original = document_;
  document_["model"]["type"] = "Unigram";
  refused("model.type is 'Unigram'");
  document_ = original;
  document_["model"]["byte_fallback"] = true;
  refused("model.byte_fallback is true");
  document_ = original;
  document_["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Metaspace"}};
  refused("the pre-tokenizer Metaspace is not implemented");
  document_ = original;
  document_["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true;
  refused("add_prefix_space is true");
  document_ = original;
  document_["added_tokens"][2]["lstrip"] = true;
  refused("added_tokens[2].lstrip is true");
  document_ = original;
  document_["normalizer"] = {{"type", "NFKC"}};
  refused("the normalizer NFKC is not implemented");
  document_ = original;
  document_["decoder"] = {{"type", "Metaspace"}};
  refused("the decoder Metaspace is not implemented");
  document_["decoder"] = nullptr;
  refused("decoder is null: a byte-level BPE is decoded by the ByteLevel decoder");
  document_ = original;
  document_["model"]["vocab"]["ab"] = 100000;
  refused("model.vocab['ab'] must be an id in [0, 263)");
  document_ = original;
  document_["added_tokens"][0]["id"] = 2000000000;
  refused("added_tokens[0]: id 2000000000 is outside [0, 263)");
  document_ = original;
  document_["pre_tokenizer"]["pretokenizers"] = {{"type", "ByteLevel"}};
  refused("pre_tokenizer.pretokenizers must be an array, got object");
  document_ = original;
  document_["model"]["merges"][0] = "b c d";
  refused("model.merges[0]: 'b c d' is not two tokens");
  document_ = original;
  document_["model"]["merges"][0] = json::array({"b", "q"});
  refused("model.merges[0]: the merged token 'bq' is not in the vocabulary");
  document_ = original;
  document_["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  refused("does not compile at offset");
  document_ = original;
  config_["eos_token"] = nullptr;
  refused("no eos_token");
  config_["eos_token"] = "</missing>";
  refused("eos_token '</missing>' is not a token");
  config_["eos_token"] = "<s>x";
  config_["add_bos_token"] = false;
  refused("add_bos_token is false but the post-processor");
  config_.erase("add_bos_token");
  config_["split_special_tokens"] = true;
  refused("split_special_tokens is true");
}

TEST_F(ByteLevelBpeTest, AMissingTokenizerConfigIsNamed) {
  load();
  fs::remove(dir_.path() / "tokenizer_config.json");
  try {
    can::Tokenizer::load((dir_.path() / "tokenizer.json").string());
    FAIL() << "no error";
  } catch (const can::Error& error) {
    EXPECT_NE(std::string(error.what()).find("tokenizer_config.json' is missing"), std::string::npos) << error.what();
  }
}

}  // namespace
