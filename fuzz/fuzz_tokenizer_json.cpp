// A tokenizer.json (byte-level BPE, src/tokenizer/byte_level_bpe.cpp) beside a fixed
// tokenizer_config.json, loaded, then used to encode and decode.
#include <nlohmann/json.hpp>

#include "can/tokenizer.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string config = R"({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})";
  can::fuzz::write_input("tokenizer_config.json", reinterpret_cast<const uint8_t*>(config.data()), config.size());
  const auto path = can::fuzz::write_input("tokenizer.json", data, size);
  can::fuzz::expect_clear_error([&] {
    const can::Tokenizer tokenizer = can::Tokenizer::load(path.string());
    const std::vector<int64_t> ids =
        tokenizer.encode("Hello, world.  How do I bake bread?\n\n\t\xC3\xA9\xE2\x82\xAC 123 <|im_end|>x<|im_start|>");
    for (const int64_t id : ids) {
      can::fuzz::require(id >= 0 && id < tokenizer.vocab_size(), "encode gave an id outside the vocabulary");
    }
    // Decoding is lossy UTF-8: whatever the ids, the text is valid UTF-8, which JSON
    // (responses.jsonl) needs.
    const std::string text = tokenizer.decode(ids);
    try {
      (void)nlohmann::json(text).dump();
    } catch (const nlohmann::json::exception&) {
      can::fuzz::require(false, "decode gave text that is not UTF-8");
    }
  });
  return 0;
}
