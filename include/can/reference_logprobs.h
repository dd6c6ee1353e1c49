// DPO's reference log-probabilities, computed once before training and cached in
// a safetensors side file, so that the reference model is not held (or run) during
// training. The file holds "chosen" and "rejected" [pairs] float32 tensors and the
// metadata {"weights_hash", "data_hash", "num_pairs"}; it is reused only when both
// hashes match. Hashes are 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime
// 0x100000001b3) applied to little-endian 64-bit words, the tail bytes one by one:
//  - weights: for each named parameter in module order, its name, dtype, shape and data bytes;
//  - data: the pair count, then for every chosen and every rejected sequence, after
//    truncation to max_length, its prompt length and ids and response length and ids.
// The device and dtype of the forward pass are not part of the key. The
// reference is the base model: LoRA adapters (lora.h) are disabled for the
// forward pass and their parameters are left out of the weights hash, so the key
// is the same before and after adapters are attached or trained.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <vector>

#include "can/batching.h"
#include "can/llama.h"

namespace can {

class ProcessGroup;

struct ReferenceLogprobs {
  at::Tensor chosen;    // [pairs] float32 CPU, nats
  at::Tensor rejected;  // [pairs]
  bool reused = false;  // read from the cache file rather than computed
};

// The log-probs of chosen[i] and rejected[i] under `reference`, read from
// `cache_file` when its hashes match the reference's weights and these sequences,
// otherwise computed in batches of batch_size pairs and written there (atomically).
// An unreadable cache file is recomputed with a warning, not an error. In a job
// (`group`), the batches are shared among the ranks (run_sharded), every rank gets
// every log-prob, rank 0 alone writes the file, and the file is reused only when
// every rank could read it.
ReferenceLogprobs cached_reference_logprobs(LlamaForCausalLM& reference, const std::vector<TokenizedSequence>& chosen,
                                      const std::vector<TokenizedSequence>& rejected, const BatchingOptions& batching,
                                      int64_t batch_size, const std::filesystem::path& cache_file,
                                      const ProcessGroup* group = nullptr);

}  // namespace can
