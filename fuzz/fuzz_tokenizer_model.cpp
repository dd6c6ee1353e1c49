// A sentencepiece tokenizer.model, loaded through the isolated backend
// (src/tokenizer/tokenizer.cpp), then used to encode and decode.
#include "can/tokenizer.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = can::fuzz::write_input("tokenizer.model", data, size);
  can::fuzz::expect_clear_error([&] {
    const can::Tokenizer tokenizer = can::Tokenizer::load(path.string());
    const std::vector<int64_t> ids = tokenizer.encode("Hello, world. How do I bake bread? \xC3\xA9\xE2\x82\xAC 123");
    for (const int64_t id : ids) {
      can::fuzz::require(id >= 0 && id < tokenizer.vocab_size(), "encode gave an id outside the vocabulary");
    }
    tokenizer.decode(ids);
  });
  return 0;
}
