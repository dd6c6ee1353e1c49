// What a Tokenizer holds: one of its two kinds (sentencepiece's tokenizer.model, the
// `tokenizers` library's byte-level BPE in tokenizer.json) behind one interface.
// Private to src/tokenizer/.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "can/tokenizer.h"

namespace can {

struct Tokenizer::Handle {
  std::string path;                           // the file read, for messages
  std::vector<std::filesystem::path> files;   // what save() copies: the file and its companion_files
  int vocab_size = 0;                         // ids are in [0, vocab_size)
  int bos_id = -1, eos_id = -1, pad_id = -1, unk_id = -1;
  bool adds_bos = false;                      // encode(text, add_bos=true) prepends bos_id

  virtual ~Handle() = default;
  // The ids of `text`, without the BOS that Tokenizer::encode adds.
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // The text of `ids` (each in [0, vocab_size)), special tokens left out.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
};

// The files beside `file` that belong to the tokenizer in transformers' layout and that
// save() copies with it: tokenizer_config.json and chat_template.jinja, when present.
std::vector<std::filesystem::path> companion_files(const std::filesystem::path& file);

std::unique_ptr<Tokenizer::Handle> load_sentencepiece(const std::filesystem::path& model_file);
// `tokenizer_json`, with the tokenizer_config.json beside it when there is one.
std::unique_ptr<Tokenizer::Handle> load_byte_level_bpe(const std::filesystem::path& tokenizer_json);

}  // namespace can
