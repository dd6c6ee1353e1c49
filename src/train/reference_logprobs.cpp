#include "can/reference_logprobs.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "can/batch_inference.h"
#include "can/distributed.h"
#include "can/error.h"
#include "can/lora.h"
#include "can/model_weights.h"
#include "can/progress.h"
#include "can/safetensors.h"
#include "train/trainer_data.h"

namespace can {

namespace {

class Fnv1a64 {
 public:
  void add_bytes(const void* data, size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    size_t i = 0;
    for (; i + 8 <= size; i += 8) {
      uint64_t word;
      std::memcpy(&word, bytes + i, 8);
      mix(word);
    }
    for (; i < size; ++i) mix(bytes[i]);
  }
  void add(uint64_t value) { mix(value); }
  void add(const std::string& text) {
    add(text.size());
    add_bytes(text.data(), text.size());
  }
  std::string hex() const { return fmt::format("{:016x}", state_); }

 private:
  void mix(uint64_t value) {
    state_ ^= value;
    state_ *= 0x100000001b3ULL;
  }
  uint64_t state_ = 0xcbf29ce484222325ULL;
};

std::string hash_weights(const torch::nn::Module& model) {
  Fnv1a64 hash;
  for (const auto& parameter : model.named_parameters()) {
    if (is_lora_parameter(parameter.key())) continue;  // disabled while the reference runs
    const auto data = parameter.value().detach().cpu().contiguous();
    hash.add(parameter.key());
    hash.add(static_cast<uint64_t>(data.scalar_type()));
    hash.add(static_cast<uint64_t>(data.dim()));
    for (const int64_t size : data.sizes()) hash.add(static_cast<uint64_t>(size));
    hash.add_bytes(data.data_ptr(), data.nbytes());
  }
  return hash.hex();
}

std::string hash_sequences(const std::vector<TokenizedSequence>& chosen, const std::vector<TokenizedSequence>& rejected,
                           int64_t max_length) {
  Fnv1a64 hash;
  hash.add(chosen.size());
  for (const auto* sequences : {&chosen, &rejected}) {
    for (const auto& sequence : *sequences) {
      const TokenizedSequence truncated = truncate_sequence(sequence, max_length);
      hash.add(truncated.prompt_ids.size());
      hash.add_bytes(truncated.prompt_ids.data(), truncated.prompt_ids.size() * sizeof(int64_t));
      hash.add(truncated.response_ids.size());
      hash.add_bytes(truncated.response_ids.data(), truncated.response_ids.size() * sizeof(int64_t));
    }
  }
  return hash.hex();
}

// The cached tensors when `cache_file` exists, is readable and matches `metadata`; else nothing.
std::optional<ReferenceLogprobs> read_cache(const std::filesystem::path& cache_file,
                                         const std::map<std::string, std::string>& metadata, int64_t pairs) {
  if (!std::filesystem::exists(cache_file)) return std::nullopt;
  try {
    const auto file = SafetensorsFile::open(cache_file);
    if (file.metadata() != metadata) {
      spdlog::info("reference log-probs in '{}' are for other weights or data; recomputing", cache_file.string());
      return std::nullopt;
    }
    ReferenceLogprobs cached{file.tensor("chosen"), file.tensor("rejected"), /*reused=*/true};
    const std::vector<int64_t> expected = {pairs};
    check(cached.chosen.sizes() == expected && cached.rejected.sizes() == expected &&
              cached.chosen.scalar_type() == torch::kFloat && cached.rejected.scalar_type() == torch::kFloat,
          "'{}': chosen and rejected must be float32 [{}]", cache_file.string(), pairs);
    return cached;
  } catch (const Error& error) {
    spdlog::warn("cannot use the reference log-prob cache, recomputing: {}", error.what());
    return std::nullopt;
  }
}

}  // namespace

ReferenceLogprobs cached_reference_logprobs(LlamaForCausalLM& reference, const std::vector<TokenizedSequence>& chosen,
                                      const std::vector<TokenizedSequence>& rejected, const BatchingOptions& batching,
                                      int64_t batch_size, const std::filesystem::path& cache_file,
                                      const ProcessGroup* group) {
  check(chosen.size() == rejected.size() && !chosen.empty(),
        "reference log-probs need as many rejected as chosen sequences (at least one), got {} and {}", chosen.size(),
        rejected.size());
  check(batch_size > 0, "reference log-prob batch size must be positive, got {}", batch_size);
  const auto pairs = static_cast<int64_t>(chosen.size());
  const std::map<std::string, std::string> metadata = {
      {"weights_hash", hash_weights(*reference)},
      {"data_hash", hash_sequences(chosen, rejected, batching.max_length)},
      {"num_pairs", std::to_string(pairs)}};
  std::optional<ReferenceLogprobs> cached = read_cache(cache_file, metadata, pairs);
  if (group != nullptr) {  // every rank reuses the file, or every rank computes
    at::Tensor missing = torch::tensor({cached ? 0.0 : 1.0}, torch::kDouble);
    group->all_reduce_sum({missing});
    if (missing.item<double>() > 0) cached.reset();
  }
  if (cached) {
    spdlog::info("reusing reference log-probs of {} pairs from '{}' (weights {}, data {})", pairs, cache_file.string(),
                 metadata.at("weights_hash"), metadata.at("data_hash"));
    return *cached;
  }

  const c10::Device device = module_device(*reference);
  const LoraDisabled base_model(*reference);
  const int64_t batches = (pairs + batch_size - 1) / batch_size;
  ProgressBar progress("reference log-probs", batches, "batches");
  // Each batch's [count] chosen log-probs, then its [count] rejected ones.
  const auto results = run_sharded(group, batches, [&](int64_t index) {
    const int64_t begin = index * batch_size, end = std::min(pairs, begin + batch_size);
    const std::vector<TokenizedSequence> batch_chosen(chosen.begin() + begin, chosen.begin() + end);
    const std::vector<TokenizedSequence> batch_rejected(rejected.begin() + begin, rejected.begin() + end);
    const SequenceBatch batch = make_pair_batch(batch_chosen, batch_rejected, batching);
    const auto logprobs = frozen_sequence_logprobs(reference, batch_to_device(batch, device));
    const auto [chosen_logprobs, rejected_logprobs] = split_chosen_rejected(logprobs.cpu());
    const at::Tensor both = torch::cat({chosen_logprobs, rejected_logprobs}).to(torch::kDouble).contiguous();  // [2 count]
    progress.advance(1);
    return std::vector<double>(both.data_ptr<double>(), both.data_ptr<double>() + both.numel());
  });
  progress.finish();
  std::vector<at::Tensor> chosen_parts, rejected_parts;
  for (const std::vector<double>& both : results) {
    const at::Tensor values = torch::tensor(both, torch::kDouble).to(torch::kFloat);  // [2 count], float32 values
    chosen_parts.push_back(values.narrow(0, 0, values.size(0) / 2));
    rejected_parts.push_back(values.narrow(0, values.size(0) / 2, values.size(0) / 2));
  }
  ReferenceLogprobs computed{torch::cat(chosen_parts), torch::cat(rejected_parts), /*reused=*/false};
  if (group == nullptr || group->rank() == 0) {
    save_safetensors(cache_file, {{"chosen", computed.chosen}, {"rejected", computed.rejected}}, metadata);
    spdlog::info("reference log-probs of {} pairs computed and cached in '{}'", pairs, cache_file.string());
  }
  return computed;
}

}  // namespace can
