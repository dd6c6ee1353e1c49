// The tokenizer: text to ids and back, of one of two kinds, chosen by the files.
//  * sentencepiece (tokenizer.model: Llama 1 and 2, Alpaca, CAN's own). Sentencepiece
//    lives in a backend library loaded with dlmopen(LM_ID_NEWLM) into its own link
//    namespace, because its bundled protobuf crashes LibTorch's when the two share one
//    (docs/design.md §7); only C types cross.
//  * byte-level BPE of Hugging Face's `tokenizers` library (tokenizer.json, with the
//    special tokens named in tokenizer_config.json beside it: Llama 3, Qwen 2 and 2.5,
//    GPT-2); src/tokenizer/byte_level_bpe.cpp says what of the
//    format is implemented, and everything else is refused by name.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace can {

// The smallest vocabulary Tokenizer::train accepts with the four special pieces:
// byte fallback's 256 byte pieces, the specials and one more (a real corpus needs a
// few hundred more, one per distinct character).
constexpr int kMinTrainedVocabSize = 256 + 4 + 1;

struct TokenizerTrainOptions {
  std::string input_file;    // one sentence per line
  std::string model_prefix;  // writes <prefix>.model and <prefix>.vocab
  int vocab_size = 1000;
  std::string model_type = "bpe";  // bpe or unigram
  double character_coverage = 1.0;
  // Llama's convention: unk 0, bos 1, eos 2, pad 3 (pad -1 disables it).
  int unk_id = 0, bos_id = 1, eos_id = 2, pad_id = 3;
  uint64_t seed = 0;
};

class Tokenizer {
 public:
  // `path`: a tokenizer.json (byte-level BPE), any other file (a sentencepiece model),
  // or a model folder: its tokenizer.model when it has one, else its tokenizer.json.
  static Tokenizer load(const std::string& path);
  // Trains a model from a text file and writes <model_prefix>.model.
  static void train(const TokenizerTrainOptions& options);

  // The ids as transformers' tokenizer gives them: with add_bos, the BOS this
  // tokenizer adds (sentencepiece: its bos piece, when it has one; tokenizer.json: the
  // post-processor's, none for Qwen), then the text's ids. tokenizer.json's added
  // tokens written in the text are those tokens, as in transformers.
  std::vector<int64_t> encode(const std::string& text, bool add_bos = true) const;
  std::vector<std::vector<int64_t>> encode_batch(const std::vector<std::string>& texts, bool add_bos = true) const;
  // Leaves out special tokens (sentencepiece: bos, eos and pad). Byte-level ids that
  // end mid-character decode to U+FFFD, as transformers decodes them.
  std::string decode(const std::vector<int64_t>& ids) const;

  int vocab_size() const;
  int bos_id() const;
  int eos_id() const;
  int pad_id() const;  // -1 when the model has none
  int unk_id() const;

  // Throws when some id of this tokenizer is past the vocabulary of the model named
  // `model` (vocab_size rows of embedding); a smaller tokenizer fits.
  void check_fits(int64_t model_vocab_size, const std::string& model) const;

  // Copies the files this tokenizer was read from into `folder` (tokenizer.model or
  // tokenizer.json, with the tokenizer_config.json and chat_template.jinja beside it when
  // present), so that the folder loads as the same tokenizer with the same chat template.
  void save(const std::string& folder) const;
  // The file it was read from.
  const std::string& path() const;

  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  struct Handle;  // the kind's own state: src/tokenizer/tokenizer_handle.h

 private:
  explicit Tokenizer(std::unique_ptr<Handle> handle);
  std::unique_ptr<Handle> handle_;
};

}  // namespace can
