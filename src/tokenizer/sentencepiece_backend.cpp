// libcan_spm_backend.so: sentencepiece behind the C API of sentencepiece_backend.h.
// Links sentencepiece only, never LibTorch or the `can` library (docs/design.md §7).
#include "sentencepiece_backend.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

struct CanSpmModel {
  sentencepiece::SentencePieceProcessor processor;
};

struct CanSpmTrainingResult {
  std::string model;
  std::string vocab;
};

namespace {

void copy_error(const std::string& message, char* error, size_t error_capacity) {
  if (error == nullptr || error_capacity == 0) return;
  const size_t length = std::min(message.size(), error_capacity - 1);
  std::memcpy(error, message.data(), length);
  error[length] = '\0';
}

// Feeds the trainer from our own reader, so a path is never parsed as
// sentencepiece's comma-separated `input` flag and the trained model does not
// record where its corpus lay (same corpus and flags, same bytes).
class FileSentenceIterator : public sentencepiece::SentenceIterator {
 public:
  explicit FileSentenceIterator(const char* path) : in_(path, std::ios::binary) {
    if (!in_) {
      status_ = sentencepiece::util::Status(sentencepiece::util::StatusCode::kNotFound,
                                            std::string("cannot open '") + path + "' for reading");
      done_ = true;
      return;
    }
    Next();
  }
  bool done() const override { return done_; }
  void Next() override { done_ = done_ || !std::getline(in_, line_); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return status_; }

 private:
  std::ifstream in_;
  std::string line_;
  bool done_ = false;
  sentencepiece::util::Status status_;
};

// ---- Checking a model's normalisation tables before sentencepiece uses them ---------
// Sentencepiece trusts the precompiled character maps inside a model file: a damaged
// one makes its Normalizer read past the table (found by fuzz/fuzz_tokenizer_model.cpp:
// one flipped bit, a segmentation fault in strlen). The maps are read here from the
// protobuf wire format (ModelProto field 3 normalizer_spec and 5 denormalizer_spec,
// NormalizerSpec field 2 precompiled_charsmap) and checked first.

// Reads a base-128 varint from the front of `in`; false when it runs past the end.
bool read_varint(std::string_view& in, uint64_t& value) {
  value = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    const auto byte = static_cast<uint8_t>(in.front());
    in.remove_prefix(1);
    value |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// The length-delimited fields numbered `field` of a message; empty when malformed
// (sentencepiece's own parser then reports it).
std::vector<std::string_view> bytes_fields(std::string_view message, uint64_t field) {
  std::vector<std::string_view> found;
  while (!message.empty()) {
    uint64_t key = 0, length = 0;
    if (!read_varint(message, key)) return {};
    switch (key & 7) {
      case 0:
        if (!read_varint(message, length)) return {};
        break;
      case 1:
      case 5: {
        const size_t size = (key & 7) == 1 ? 8 : 4;
        if (message.size() < size) return {};
        message.remove_prefix(size);
        break;
      }
      case 2:
        if (!read_varint(message, length) || length > message.size()) return {};
        if ((key >> 3) == field) found.push_back(message.substr(0, length));
        message.remove_prefix(length);
        break;
      default:
        return {};
    }
  }
  return found;
}

// What is wrong with a precompiled character map, or "" when nothing is: a uint32
// (little-endian) trie size, a darts-clone double array of that many bytes, then
// NUL-terminated replacement strings. Every value unit (bit 31 set) indexes those
// strings, and every other unit's child block lies inside the array.
std::string charsmap_problem(std::string_view blob) {
  if (blob.empty()) return "";
  if (blob.size() < 4) return "shorter than its 4-byte header";
  uint32_t trie_bytes = 0;
  for (int i = 3; i >= 0; --i) trie_bytes = (trie_bytes << 8) | static_cast<uint8_t>(blob[i]);
  if (trie_bytes % 4 != 0 || trie_bytes > blob.size() - 4) return "its trie size does not fit the table";
  const std::string_view strings = blob.substr(4 + trie_bytes);
  if (!strings.empty() && strings.back() != '\0') return "its replacement strings are not NUL-terminated";
  const size_t units = trie_bytes / 4;
  for (size_t id = 0; id < units; ++id) {
    uint32_t unit = 0;
    std::memcpy(&unit, blob.data() + 4 + 4 * id, 4);
    if (unit >> 31) {
      if ((unit & 0x7FFFFFFFU) >= strings.size()) return "a trie value points past the replacement strings";
    } else {
      const uint64_t offset = static_cast<uint64_t>(unit >> 10) << ((unit & (1U << 9)) >> 6);
      if (((id ^ offset) | 0xFF) >= units && unit != 0) return "a trie offset points past the trie";
    }
  }
  return "";
}

// "" when the model file's character maps are whole, else what is damaged.
std::string normalization_problem(const char* model_path) {
  std::ifstream in(model_path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const auto& [spec_field, spec_name] : {std::pair<uint64_t, const char*>{3, "normalizer_spec"}, {5, "denormalizer_spec"}}) {
    for (const std::string_view spec : bytes_fields(bytes, spec_field)) {
      for (const std::string_view charsmap : bytes_fields(spec, 2)) {
        const std::string problem = charsmap_problem(charsmap);
        if (!problem.empty()) return std::string(spec_name) + ".precompiled_charsmap is damaged: " + problem;
      }
    }
  }
  return "";
}

// The `.vocab` listing spm_train writes: piece TAB score, scores as "%g".
std::string vocab_listing(const sentencepiece::SentencePieceProcessor& processor) {
  std::string listing;
  char score[32];
  for (int id = 0; id < processor.GetPieceSize(); ++id) {
    std::snprintf(score, sizeof(score), "%g", processor.GetScore(id));
    listing += processor.IdToPiece(id);
    listing += '\t';
    listing += score;
    listing += '\n';
  }
  return listing;
}

}  // namespace

extern "C" {

int can_spm_abi_version(void) { return CAN_SPM_BACKEND_ABI_VERSION; }

CanSpmModel* can_spm_load(const char* model_path, char* error, size_t error_capacity) {
  try {
    const std::string damaged = normalization_problem(model_path);
    if (!damaged.empty()) {
      copy_error(damaged, error, error_capacity);
      return nullptr;
    }
    auto model = std::make_unique<CanSpmModel>();
    const auto status = model->processor.Load(model_path);
    if (!status.ok()) {
      copy_error(status.ToString(), error, error_capacity);
      return nullptr;
    }
    return model.release();
  } catch (const std::exception& exception) {
    copy_error(exception.what(), error, error_capacity);
  } catch (...) {
    copy_error("unknown exception in sentencepiece", error, error_capacity);
  }
  return nullptr;
}

void can_spm_free(CanSpmModel* model) { delete model; }

int32_t can_spm_piece_count(const CanSpmModel* model) { return model->processor.GetPieceSize(); }
int32_t can_spm_bos_id(const CanSpmModel* model) { return model->processor.bos_id(); }
int32_t can_spm_eos_id(const CanSpmModel* model) { return model->processor.eos_id(); }
int32_t can_spm_pad_id(const CanSpmModel* model) { return model->processor.pad_id(); }
int32_t can_spm_unk_id(const CanSpmModel* model) { return model->processor.unk_id(); }

int64_t can_spm_encode(const CanSpmModel* model, const char* text, size_t text_size, int32_t* ids, size_t ids_capacity,
                       char* error, size_t error_capacity) {
  try {
    std::vector<int> encoded;
    const auto status = model->processor.Encode(std::string_view(text, text_size), &encoded);
    if (!status.ok()) {
      copy_error(status.ToString(), error, error_capacity);
      return -1;
    }
    if (encoded.size() <= ids_capacity) std::copy(encoded.begin(), encoded.end(), ids);
    return static_cast<int64_t>(encoded.size());
  } catch (const std::exception& exception) {
    copy_error(exception.what(), error, error_capacity);
  } catch (...) {
    copy_error("unknown exception in sentencepiece", error, error_capacity);
  }
  return -1;
}

int64_t can_spm_decode(const CanSpmModel* model, const int32_t* ids, size_t ids_count, char* text, size_t text_capacity,
                       char* error, size_t error_capacity) {
  try {
    const std::vector<int> input(ids, ids + ids_count);
    std::string decoded;
    const auto status = model->processor.Decode(input, &decoded);
    if (!status.ok()) {
      copy_error(status.ToString(), error, error_capacity);
      return -1;
    }
    if (decoded.size() <= text_capacity) std::memcpy(text, decoded.data(), decoded.size());
    return static_cast<int64_t>(decoded.size());
  } catch (const std::exception& exception) {
    copy_error(exception.what(), error, error_capacity);
  } catch (...) {
    copy_error("unknown exception in sentencepiece", error, error_capacity);
  }
  return -1;
}

CanSpmTrainingResult* can_spm_train(const char* input_path, const char* const* keys, const char* const* values,
                                    size_t count, uint32_t seed, char* error, size_t error_capacity) {
  try {
    std::unordered_map<std::string, std::string> flags;
    for (size_t i = 0; i < count; ++i) flags[keys[i]] = values[i];
    sentencepiece::SetRandomGeneratorSeed(seed);
    FileSentenceIterator sentences(input_path);
    auto result = std::make_unique<CanSpmTrainingResult>();
    auto status = sentencepiece::SentencePieceTrainer::Train(flags, &sentences, &result->model);
    if (status.ok()) status = sentences.status();
    sentencepiece::SentencePieceProcessor processor;
    if (status.ok()) status = processor.LoadFromSerializedProto(result->model);
    if (!status.ok()) {
      copy_error(status.ToString(), error, error_capacity);
      return nullptr;
    }
    result->vocab = vocab_listing(processor);
    return result.release();
  } catch (const std::exception& exception) {
    copy_error(exception.what(), error, error_capacity);
  } catch (...) {
    copy_error("unknown exception in sentencepiece", error, error_capacity);
  }
  return nullptr;
}

const char* can_spm_training_model(const CanSpmTrainingResult* result, size_t* size) {
  *size = result->model.size();
  return result->model.data();
}

const char* can_spm_training_vocab(const CanSpmTrainingResult* result, size_t* size) {
  *size = result->vocab.size();
  return result->vocab.data();
}

void can_spm_free_training_result(CanSpmTrainingResult* result) { delete result; }

}  // extern "C"
