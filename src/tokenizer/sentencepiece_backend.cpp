// libcan_spm_backend.so: sentencepiece behind the C API of sentencepiece_backend.h.
// Links sentencepiece only, never LibTorch or the `can` library (docs/design.md §7).
#include "sentencepiece_backend.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <memory>
#include <string>
#include <unordered_map>
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
