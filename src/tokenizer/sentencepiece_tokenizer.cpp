// The sentencepiece kind of Tokenizer (tokenizer.model), and Tokenizer::train.
#include <dlfcn.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can_build_paths.h"
#include "tokenizer/sentencepiece_backend.h"
#include "tokenizer/tokenizer_handle.h"

namespace can {

namespace {

namespace fs = std::filesystem;

constexpr size_t kErrorCapacity = 2048;
constexpr int kBytePieces = 256;  // byte_fallback adds <0x00> ... <0xFF>

// The backend's functions, resolved once. Their types come from the backend's
// header; the `can` library never links the backend, it only calls through these.
struct Backend {
  decltype(&can_spm_abi_version) abi_version;
  decltype(&can_spm_load) load;
  decltype(&can_spm_free) free;
  decltype(&can_spm_piece_count) piece_count;
  decltype(&can_spm_bos_id) bos_id;
  decltype(&can_spm_eos_id) eos_id;
  decltype(&can_spm_pad_id) pad_id;
  decltype(&can_spm_unk_id) unk_id;
  decltype(&can_spm_encode) encode;
  decltype(&can_spm_decode) decode;
  decltype(&can_spm_train) train;
  decltype(&can_spm_training_model) training_model;
  decltype(&can_spm_training_vocab) training_vocab;
  decltype(&can_spm_free_training_result) free_training_result;
};

fs::path locate_backend() {
  if (const char* configured = std::getenv("CAN_SPM_BACKEND"); configured != nullptr && *configured != '\0') {
    check(fs::is_regular_file(configured), "the sentencepiece backend '{}' named by CAN_SPM_BACKEND does not exist",
          configured);
    return configured;
  }
  const fs::path file_name = fs::path(CAN_SPM_BACKEND_INSTALL_PATH).filename();
  std::vector<fs::path> candidates = {CAN_SPM_BACKEND_BUILD_PATH, CAN_SPM_BACKEND_INSTALL_PATH};
  std::error_code error;
  const fs::path executable = fs::read_symlink("/proc/self/exe", error);
  if (!error) {
    candidates.push_back(executable.parent_path() / file_name);
    candidates.push_back(executable.parent_path() / "lib" / file_name);
  }
  std::string looked_at;
  for (const auto& candidate : candidates) {
    if (fs::is_regular_file(candidate)) return candidate;
    looked_at += fmt::format("{}'{}'", looked_at.empty() ? "" : ", ", candidate.string());
  }
  fail(
      "cannot find the sentencepiece backend {} (looked at {}); build the target can_spm_backend, or set "
      "CAN_SPM_BACKEND to the library's path",
      file_name.string(), looked_at);
}

template <typename Function>
void resolve(void* library, const fs::path& path, const char* name, Function& function) {
  function = reinterpret_cast<Function>(dlsym(library, name));
  check(function != nullptr, "the sentencepiece backend '{}' lacks the function {}; rebuild can_spm_backend",
        path.string(), name);
}

Backend open_backend() {
  const fs::path path = locate_backend();
  // A link namespace of its own, so sentencepiece's bundled protobuf 3.14 never
  // meets the protobuf LibTorch loaded (docs/design.md §7).
  void* library = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* reason = dlerror();
    fail("cannot load the sentencepiece backend '{}': {}", path.string(), reason != nullptr ? reason : "unknown");
  }
  Backend backend{};
  resolve(library, path, "can_spm_abi_version", backend.abi_version);
  check(backend.abi_version() == CAN_SPM_BACKEND_ABI_VERSION,
        "the sentencepiece backend '{}' has interface version {} but this program needs {}; rebuild can_spm_backend",
        path.string(), backend.abi_version(), CAN_SPM_BACKEND_ABI_VERSION);
  resolve(library, path, "can_spm_load", backend.load);
  resolve(library, path, "can_spm_free", backend.free);
  resolve(library, path, "can_spm_piece_count", backend.piece_count);
  resolve(library, path, "can_spm_bos_id", backend.bos_id);
  resolve(library, path, "can_spm_eos_id", backend.eos_id);
  resolve(library, path, "can_spm_pad_id", backend.pad_id);
  resolve(library, path, "can_spm_unk_id", backend.unk_id);
  resolve(library, path, "can_spm_encode", backend.encode);
  resolve(library, path, "can_spm_decode", backend.decode);
  resolve(library, path, "can_spm_train", backend.train);
  resolve(library, path, "can_spm_training_model", backend.training_model);
  resolve(library, path, "can_spm_training_vocab", backend.training_vocab);
  resolve(library, path, "can_spm_free_training_result", backend.free_training_result);
  return backend;
}

// Loaded once per process; a failed load throws and is retried on the next call.
const Backend& backend() {
  static const Backend instance = open_backend();
  return instance;
}

bool has_a_sentence(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "cannot open the tokenizer training corpus '{}' for reading", path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) return true;
  }
  return false;
}

// Sentencepiece answers bad options with terse internal messages (or none):
// check what we can here and say what to change.
void validate(const TokenizerTrainOptions& options) {
  check(fs::is_regular_file(options.input_file), "the tokenizer training corpus '{}' does not exist",
        options.input_file);
  check(has_a_sentence(options.input_file), "the tokenizer training corpus '{}' has no non-blank line",
        options.input_file);
  check(!options.model_prefix.empty(), "tokenizer training needs a model_prefix (it writes <model_prefix>.model)");
  check(options.model_type == "bpe" || options.model_type == "unigram",
        "unknown tokenizer model_type '{}' (expected bpe or unigram)", options.model_type);
  check(options.character_coverage > 0.0 && options.character_coverage <= 1.0,
        "tokenizer character_coverage {} is outside (0, 1]", options.character_coverage);
  check(options.seed <= std::numeric_limits<uint32_t>::max(),
        "tokenizer seed {} does not fit sentencepiece's 32-bit seed", options.seed);
  check(options.unk_id >= 0, "tokenizer unk_id {} must be >= 0: sentencepiece always has an unknown piece",
        options.unk_id);
  std::set<int> special_ids;
  const std::pair<const char*, int> specials[] = {
      {"unk_id", options.unk_id}, {"bos_id", options.bos_id}, {"eos_id", options.eos_id}, {"pad_id", options.pad_id}};
  for (const auto& [name, id] : specials) {
    if (id == -1) continue;
    check(id >= 0 && id < options.vocab_size, "tokenizer {} {} is outside [0, vocab_size {}) (-1 disables it)", name,
          id, options.vocab_size);
    check(special_ids.insert(id).second, "tokenizer {} {} is already taken by another special piece", name, id);
  }
  const int minimum = kBytePieces + static_cast<int>(special_ids.size()) + 1;
  check(
      options.vocab_size >= minimum,
      "tokenizer vocab_size {} is too small: byte fallback takes {} pieces and the special pieces {}, leaving no room "
      "for the corpus's characters (use at least {}, in practice a few hundred more)",
      options.vocab_size, kBytePieces, special_ids.size(), minimum);
}

// The model lives in the backend's namespace; ids cross as int32.
class SentencepieceHandle : public Tokenizer::Handle {
 public:
  SentencepieceHandle(const Backend& backend, CanSpmModel* model) : backend_(backend), model_(model) {}
  ~SentencepieceHandle() override { backend_.free(model_); }

  std::vector<int64_t> encode(const std::string& text) const override {
    // Usually fewer ids than bytes; normalization can expand text, hence the retry.
    std::vector<int32_t> ids(text.size() + 16);
    char error[kErrorCapacity] = "";
    int64_t count = backend_.encode(model_, text.data(), text.size(), ids.data(), ids.size(), error, sizeof(error));
    if (count > static_cast<int64_t>(ids.size())) {
      ids.resize(static_cast<size_t>(count));
      count = backend_.encode(model_, text.data(), text.size(), ids.data(), ids.size(), error, sizeof(error));
    }
    check(count >= 0, "encoding {} bytes of text with the tokenizer '{}' failed: {}", text.size(), path, error);
    return std::vector<int64_t>(ids.begin(), ids.begin() + count);
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<int32_t> kept;
    kept.reserve(ids.size());
    for (const int64_t id : ids) {
      if (id != bos_id && id != eos_id && id != pad_id) kept.push_back(static_cast<int32_t>(id));
    }
    std::string text(kept.size() * 8 + 16, '\0');
    char error[kErrorCapacity] = "";
    int64_t size = backend_.decode(model_, kept.data(), kept.size(), text.data(), text.size(), error, sizeof(error));
    if (size > static_cast<int64_t>(text.size())) {
      text.resize(static_cast<size_t>(size));
      size = backend_.decode(model_, kept.data(), kept.size(), text.data(), text.size(), error, sizeof(error));
    }
    check(size >= 0, "decoding {} ids with the tokenizer '{}' failed: {}", kept.size(), path, error);
    text.resize(static_cast<size_t>(size));
    return text;
  }

 private:
  const Backend& backend_;
  CanSpmModel* model_;
};

}  // namespace

std::unique_ptr<Tokenizer::Handle> load_sentencepiece(const fs::path& model_file) {
  const Backend& spm = backend();
  char error[kErrorCapacity] = "";
  CanSpmModel* model = spm.load(model_file.c_str(), error, sizeof(error));
  check(model != nullptr, "cannot load the sentencepiece model '{}': {}", model_file.string(), error);
  auto handle = std::make_unique<SentencepieceHandle>(spm, model);
  handle->path = model_file.string();
  handle->files = {model_file};
  for (const fs::path& companion : companion_files(model_file)) handle->files.push_back(companion);
  handle->vocab_size = spm.piece_count(model);
  handle->bos_id = spm.bos_id(model);
  handle->eos_id = spm.eos_id(model);
  handle->pad_id = spm.pad_id(model);
  handle->unk_id = spm.unk_id(model);
  handle->adds_bos = handle->bos_id >= 0;
  return handle;
}

void Tokenizer::train(const TokenizerTrainOptions& options) {
  validate(options);
  // Reproducible bit for bit: the unigram trainer's result depends on its thread
  // count, so it is fixed rather than taken from the machine.
  const std::vector<std::pair<std::string, std::string>> flags = {
      {"vocab_size", std::to_string(options.vocab_size)},
      {"model_type", options.model_type},
      {"character_coverage", fmt::format("{}", options.character_coverage)},
      {"byte_fallback", "true"},  // any UTF-8 text encodes, unseen characters as bytes
      {"unk_id", std::to_string(options.unk_id)},
      {"bos_id", std::to_string(options.bos_id)},
      {"eos_id", std::to_string(options.eos_id)},
      {"pad_id", std::to_string(options.pad_id)},
      {"num_threads", "1"},
      {"minloglevel", "1"},  // sentencepiece logs every merge at INFO
  };
  std::vector<const char*> keys, values;
  for (const auto& [key, value] : flags) {
    keys.push_back(key.c_str());
    values.push_back(value.c_str());
  }
  const Backend& spm = backend();
  char error[kErrorCapacity] = "";
  // The seed drives only sentencepiece's sentence sampling, which stays off here
  // (every line is used), so it cannot change the model; it is passed for the record.
  const std::unique_ptr<CanSpmTrainingResult, decltype(spm.free_training_result)> result(
      spm.train(options.input_file.c_str(), keys.data(), values.data(), keys.size(),
                static_cast<uint32_t>(options.seed), error, sizeof(error)),
      spm.free_training_result);
  check(result != nullptr, "training a {} tokenizer of {} pieces on '{}' failed: {}", options.model_type,
        options.vocab_size, options.input_file, error);
  const auto write_from_backend = [&](const std::string& path, decltype(spm.training_model) content) {
    size_t size = 0;
    const char* data = content(result.get(), &size);
    write_file_atomically(path, [&](std::ostream& out) { out.write(data, static_cast<std::streamsize>(size)); });
  };
  write_from_backend(options.model_prefix + ".model", spm.training_model);
  write_from_backend(options.model_prefix + ".vocab", spm.training_vocab);
  spdlog::info("trained a {} tokenizer of {} pieces on '{}' into '{}.model'", options.model_type, options.vocab_size,
               options.input_file, options.model_prefix);
}

}  // namespace can
