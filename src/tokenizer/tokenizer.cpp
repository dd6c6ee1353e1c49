// Tokenizer: which kind a path holds, and what both kinds share (BOS, id checks, saving).
#include "can/tokenizer.h"

#include <filesystem>

#include "can/error.h"
#include "tokenizer/tokenizer_handle.h"

namespace can {

namespace fs = std::filesystem;

std::vector<fs::path> companion_files(const fs::path& file) {
  std::vector<fs::path> files;
  for (const char* name : {"tokenizer_config.json", "chat_template.jinja"}) {
    if (fs::is_regular_file(file.parent_path() / name)) files.push_back(file.parent_path() / name);
  }
  return files;
}

Tokenizer::Tokenizer(std::unique_ptr<Handle> handle) : handle_(std::move(handle)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::string& path) {
  fs::path file = path;
  if (fs::is_directory(file)) {
    const bool sentencepiece = fs::is_regular_file(file / "tokenizer.model");
    check(sentencepiece || fs::is_regular_file(file / "tokenizer.json"),
          "the folder '{}' holds no tokenizer: neither tokenizer.model (sentencepiece) nor tokenizer.json", path);
    file /= sentencepiece ? "tokenizer.model" : "tokenizer.json";
  }
  check(fs::is_regular_file(file), "the tokenizer file '{}' does not exist", file.string());
  return Tokenizer(file.extension() == ".json" ? load_byte_level_bpe(file) : load_sentencepiece(file));
}

void Tokenizer::check_fits(int64_t model_vocab_size, const std::string& model) const {
  check(vocab_size() <= model_vocab_size,
        "the tokenizer '{}' has {} pieces but the model '{}' has vocab_size {}: ids from {} on would index past its "
        "embedding; use the tokenizer the model was trained with",
        handle_->path, vocab_size(), model, model_vocab_size, model_vocab_size);
}

void Tokenizer::save(const std::string& folder) const {
  for (const fs::path& file : handle_->files) {
    const fs::path target = fs::path(folder) / file.filename();
    if (fs::exists(target) && fs::equivalent(file, target)) continue;
    fs::copy_file(file, target, fs::copy_options::overwrite_existing);
  }
}

const std::string& Tokenizer::path() const { return handle_->path; }

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int64_t> ids = handle_->encode(text);
  if (add_bos && handle_->adds_bos) ids.insert(ids.begin(), handle_->bos_id);
  return ids;
}

std::vector<std::vector<int64_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts, bool add_bos) const {
  std::vector<std::vector<int64_t>> encoded;
  encoded.reserve(texts.size());
  for (const auto& text : texts) encoded.push_back(encode(text, add_bos));
  return encoded;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    check(ids[i] >= 0 && ids[i] < handle_->vocab_size,
          "token id {} at position {} is outside the vocabulary [0, {}) of '{}'", ids[i], i, handle_->vocab_size,
          handle_->path);
  }
  return handle_->decode(ids);
}

int Tokenizer::vocab_size() const { return handle_->vocab_size; }
int Tokenizer::bos_id() const { return handle_->bos_id; }
int Tokenizer::eos_id() const { return handle_->eos_id; }
int Tokenizer::pad_id() const { return handle_->pad_id; }
int Tokenizer::unk_id() const { return handle_->unk_id; }

}  // namespace can
