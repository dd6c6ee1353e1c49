// The C API of libcan_spm_backend.so, the one library that links sentencepiece.
// It is loaded with dlmopen(LM_ID_NEWLM) into a link namespace of its own
// (docs/design.md §7), which has its own libstdc++, libc and malloc. So only C types
// cross: callers pass buffers and read back the size they need, the backend
// releases what it allocates, and no exception leaves a function.
//
// Every `error` argument is a caller buffer of `error_capacity` bytes that
// receives a NUL-terminated message when the function fails.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Bumped whenever a signature below changes, so a stale backend found on disk
// is refused instead of called with the wrong arguments.
#define CAN_SPM_BACKEND_ABI_VERSION 1

typedef struct CanSpmModel CanSpmModel;
typedef struct CanSpmTrainingResult CanSpmTrainingResult;

int can_spm_abi_version(void);

// Returns null on failure.
CanSpmModel* can_spm_load(const char* model_path, char* error, size_t error_capacity);
void can_spm_free(CanSpmModel* model);

int32_t can_spm_piece_count(const CanSpmModel* model);
int32_t can_spm_bos_id(const CanSpmModel* model);  // -1 when the model has none
int32_t can_spm_eos_id(const CanSpmModel* model);
int32_t can_spm_pad_id(const CanSpmModel* model);
int32_t can_spm_unk_id(const CanSpmModel* model);

// Encodes `text_size` bytes of UTF-8 into ids (no BOS/EOS). Returns the number
// of ids, or -1 on failure. When it exceeds `ids_capacity` nothing is written:
// call again with a buffer that large.
int64_t can_spm_encode(const CanSpmModel* model, const char* text, size_t text_size, int32_t* ids, size_t ids_capacity,
                       char* error, size_t error_capacity);

// Decodes ids into UTF-8 bytes (not NUL-terminated). Returns the byte count, or
// -1 on failure. When it exceeds `text_capacity` nothing is written: call again.
int64_t can_spm_decode(const CanSpmModel* model, const int32_t* ids, size_t ids_count, char* text, size_t text_capacity,
                       char* error, size_t error_capacity);

// Trains a model on `input_path` (one sentence per line) with sentencepiece
// trainer flags given as `count` key/value pairs (e.g. "vocab_size", "400"),
// seeding sentencepiece's random generator with `seed`. The files are not
// written here: the result holds the serialized model and the `.vocab`
// listing (piece TAB score per line) for the caller to write. Returns null on
// failure.
CanSpmTrainingResult* can_spm_train(const char* input_path, const char* const* keys, const char* const* values,
                                    size_t count, uint32_t seed, char* error, size_t error_capacity);
const char* can_spm_training_model(const CanSpmTrainingResult* result, size_t* size);
const char* can_spm_training_vocab(const CanSpmTrainingResult* result, size_t* size);
void can_spm_free_training_result(CanSpmTrainingResult* result);

#ifdef __cplusplus
}
#endif
