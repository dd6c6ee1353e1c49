#include "can/sampling.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "can/compute_counts.h"
#include "can/distributed.h"
#include "can/error.h"
#include "can/model_weights.h"

namespace can {

namespace {

void validate(const LlamaForCausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
              const SamplingOptions& options) {
  check(options.max_new_tokens > 0, "sampling: max_new_tokens must be positive, got {}", options.max_new_tokens);
  check(std::isfinite(options.temperature) && options.temperature >= 0,
        "sampling: temperature must be a finite number >= 0, got {}", options.temperature);
  check(options.top_p > 0 && options.top_p <= 1, "sampling: top_p must be in (0, 1], got {}", options.top_p);
  check(options.top_k >= 0, "sampling: top_k must be >= 0, got {}", options.top_k);
  check(options.batch_size > 0, "sampling: batch_size must be positive, got {}", options.batch_size);
  check(options.vocab_limit >= 0, "sampling: vocab_limit must be >= 0, got {}", options.vocab_limit);
  const int64_t limit = model->config.max_position_embeddings;
  for (size_t i = 0; i < prompts.size(); ++i) {
    check(!prompts[i].empty(), "sampling: prompt {} is empty (it needs at least a BOS token)", i);
    // Before any allocation: a KV cache for 10⁹ new tokens would fail deep in the allocator.
    const int64_t length = static_cast<int64_t>(prompts[i].size());
    check(length + options.max_new_tokens <= limit,
          "sampling: prompt {} has {} tokens and max_new_tokens is {}: {} positions exceed the model's "
          "max_position_embeddings {}; shorten the prompt or lower max_new_tokens",
          i, length, options.max_new_tokens, length + options.max_new_tokens, limit);
    for (int64_t token : prompts[i]) {
      check(token >= 0 && token < model->config.vocab_size, "sampling: prompt {} holds token {} outside [0, {})", i,
            token, model->config.vocab_size);
    }
  }
}

// Seeds LibTorch's generators for the batch (or, without the cache, the prompt)
// that starts at prompt `first`: a stream per batch, the golden-ratio multiple
// keeping the streams of neighbouring seeds and batches apart.
void seed_stream(uint64_t seed, size_t first) {
  constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ULL;
  torch::manual_seed(seed + static_cast<uint64_t>(first) * kGoldenGamma);
}

// [rows, V] float32 Exp(1) draws on `device`, one row per batch row, drawn for
// every row at every step whether or not it is still decoding.
torch::Tensor draw_noise(int64_t rows, int64_t vocab, torch::Device device) {
  // An exact 0 (u = 0 in -log(1 - u)) would turn p / noise into 0/0 = NaN for a token cut by top-p or top-k.
  return torch::empty({rows, vocab}, torch::TensorOptions(device).dtype(torch::kFloat32))
      .exponential_(1)
      .clamp_min_(std::numeric_limits<float>::min());
}

// Picks the next token of each row. logits [B, V] float32; noise [B, V] Exp(1)
// draws (unused when greedy) -> [B] int64. argmax(p / noise) is a draw from p
// (the exponential race, what torch::multinomial does for one sample) without
// multinomial's host-side validity check, and with noise the caller controls.
torch::Tensor choose_tokens(const torch::Tensor& logits, const torch::Tensor& noise, const SamplingOptions& options) {
  // The excluded ids are the vocabulary's tail: choosing among a view of the rest gives the same
  // ids, and the same probabilities as masking the tail, without a copy per step.
  const bool limited = options.vocab_limit > 0 && options.vocab_limit < logits.size(-1);
  const torch::Tensor allowed = limited ? logits.slice(-1, 0, options.vocab_limit) : logits;  // [B, V']
  if (options.temperature == 0) return allowed.argmax(-1);
  torch::Tensor scaled = allowed / options.temperature;
  if (options.top_k > 0 && options.top_k < scaled.size(-1)) {
    const torch::Tensor kth = std::get<0>(scaled.topk(options.top_k, -1)).select(-1, options.top_k - 1);  // [B]
    scaled = scaled.masked_fill(scaled < kth.unsqueeze(-1), -std::numeric_limits<float>::infinity());
  }
  if (options.top_p < 1) scaled = top_p_filter(scaled, options.top_p);
  return (scaled.softmax(-1) / (limited ? noise.slice(-1, 0, options.vocab_limit) : noise)).argmax(-1);
}

// The probability of the least probable token the nucleus keeps, for one row: `values`
// holds the row's probabilities and is reordered. Quickselect on the mass: split the
// candidates around a pivot into more probable, tied and less probable; the answer lies
// in the first part if it alone reaches top_p (with what is known to lie above), is the
// pivot if the ties reach it, and lies in the last part otherwise.
float nucleus_threshold(std::vector<float>& values, double top_p) {
  auto low = values.begin(), high = values.end();
  double above = 0;  // the mass of the tokens more probable than every candidate in [low, high); < top_p
  while (true) {
    const float a = *low, b = *(low + (high - low) / 2), c = *(high - 1);
    const float pivot = std::max(std::min(a, b), std::min(std::max(a, b), c));  // median of three
    const auto more_end = std::partition(low, high, [pivot](float v) { return v > pivot; });
    const auto tied_end = std::partition(more_end, high, [pivot](float v) { return v == pivot; });
    if (tied_end == more_end) return pivot;  // a NaN pivot: nothing compares equal (keeps every token)
    const double more = std::accumulate(low, more_end, 0.0);
    if (above + more >= top_p) {  // non-empty, since above < top_p
      high = more_end;
      continue;
    }
    const double tied = static_cast<double>(tied_end - more_end) * pivot;
    if (above + more + tied >= top_p || tied_end == high) return pivot;
    above += more + tied;
    low = tied_end;
  }
}

int64_t resolve_eos(const LlamaForCausalLM& model, const SamplingOptions& options) {
  return options.eos_id >= 0 ? options.eos_id : model->config.eos_token_id;
}

// Decodes one batch of prompts with the KV cache, on the model's device. Tokens
// and log-probs stay there until the batch is done; the host looks at the
// finished rows only every kSamplingSyncInterval steps.
void sample_batch(LlamaForCausalLM& model, const std::vector<std::vector<int64_t>>& prompts, size_t first, size_t count,
                  const SamplingOptions& options, std::vector<Generation>& out) {
  const auto device = module_device(*model);
  const int64_t eos = resolve_eos(model, options);
  const int64_t vocab = model->config.vocab_size;
  const int64_t steps = options.max_new_tokens;
  int64_t longest = 0;
  for (size_t i = 0; i < count; ++i) longest = std::max<int64_t>(longest, prompts[first + i].size());
  const int64_t batch = static_cast<int64_t>(count);

  // Left padding: every prompt ends at column `longest - 1`, so all rows step together.
  torch::Tensor input_ids = torch::zeros({batch, longest}, torch::kInt64);     // [B, P]
  torch::Tensor mask = torch::zeros({batch, longest + steps}, torch::kInt64);  // [B, P + N]
  for (int64_t row = 0; row < batch; ++row) {
    const auto& prompt = prompts[first + row];
    const int64_t offset = longest - static_cast<int64_t>(prompt.size());
    input_ids[row].slice(0, offset, longest).copy_(torch::tensor(prompt, torch::kInt64));
    mask[row].slice(0, offset, longest).fill_(1);
  }
  input_ids = input_ids.to(device);
  mask = mask.to(device);

  // Keys and values are kept in the dtype the projections compute in (set_compute_dtype).
  const c10::ScalarType compute_dtype = model->model->compute_dtype;
  const auto dtype = compute_dtype != c10::ScalarType::Undefined ? compute_dtype
                                                                   : model->parameters().front().scalar_type();
  KVCache cache(model->config, batch, longest + steps, torch::TensorOptions(device).dtype(dtype));
  const auto on_device = torch::TensorOptions(device);
  // Step-major results of every batch row; -1 marks "nothing generated" (after EOS).
  torch::Tensor tokens = torch::full({steps, batch}, -1, on_device.dtype(torch::kInt64));   // [N, B]
  torch::Tensor logprobs = torch::zeros({steps, batch}, on_device.dtype(torch::kFloat32));  // [N, B] nats
  // The live rows: their batch rows (host and device) and whether each has emitted EOS.
  std::vector<int64_t> live_rows(count);
  std::iota(live_rows.begin(), live_rows.end(), 0);
  torch::Tensor live_index;                                                       // [b] int64; undefined: all rows
  torch::Tensor finished = torch::zeros({batch}, on_device.dtype(torch::kBool));  // [b]

  seed_stream(options.seed, first);
  // The prefill needs the next-token logits of the last prompt column only: the LM head
  // runs on [B, H], not [B, P, H].
  const torch::Tensor prompt_hidden = model->model(input_ids, mask.slice(1, 0, longest), &cache);  // [B, P, H]
  torch::Tensor logits = model->logits(prompt_hidden.select(1, -1)).to(torch::kFloat32);           // [B, V]
  for (int64_t step = 0; step < steps; ++step) {
    torch::Tensor noise;  // [b, V]
    if (options.temperature > 0) {
      noise = draw_noise(batch, vocab, device);
      if (live_index.defined()) noise = noise.index_select(0, live_index);
    }
    torch::Tensor next = choose_tokens(logits, noise, options);                                       // [b]
    const torch::Tensor logprob = logits.log_softmax(-1).gather(-1, next.unsqueeze(-1)).squeeze(-1);  // [b]
    const torch::Tensor recorded = next.masked_fill(finished, -1);
    if (live_index.defined()) {
      tokens[step].index_copy_(0, live_index, recorded);
      logprobs[step].index_copy_(0, live_index, logprob);
    } else {
      tokens[step].copy_(recorded);
      logprobs[step].copy_(logprob);
    }
    finished.logical_or_(next == eos);
    if (step + 1 == steps) break;
    if ((step + 1) % kSamplingSyncInterval == 0) {  // the only host synchronisation in the loop
      const torch::Tensor finished_host = finished.cpu();
      std::vector<int64_t> keep;  // positions of the rows still decoding
      for (int64_t i = 0; i < finished_host.size(0); ++i) {
        if (!finished_host[i].item<bool>()) keep.push_back(i);
      }
      if (keep.empty()) break;
      if (keep.size() < live_rows.size()) {  // finished rows leave the batch
        const torch::Tensor keep_index = torch::tensor(keep, torch::kInt64).to(device);
        cache.select_rows(keep_index);
        mask = mask.index_select(0, keep_index);
        next = next.index_select(0, keep_index);
        std::vector<int64_t> kept_rows;
        for (int64_t i : keep) kept_rows.push_back(live_rows[i]);
        live_rows.swap(kept_rows);
        live_index = torch::tensor(live_rows, torch::kInt64).to(device);
        finished = torch::zeros({static_cast<int64_t>(live_rows.size())}, on_device.dtype(torch::kBool));
      }
    }
    mask.select(1, cache.length).fill_(1);
    logits = model(next.unsqueeze(-1), mask.slice(1, 0, cache.length + 1), &cache).select(1, -1).to(torch::kFloat32);
  }

  const torch::Tensor tokens_host = tokens.t().contiguous().cpu();                                 // [B, N]
  const torch::Tensor logprobs_host = logprobs.t().contiguous().to(torch::kCPU, torch::kFloat64);  // [B, N]
  const auto token_at = tokens_host.accessor<int64_t, 2>();
  const auto logprob_at = logprobs_host.accessor<double, 2>();
  for (int64_t row = 0; row < batch; ++row) {
    Generation& generation = out[first + row];
    for (int64_t step = 0; step < steps && token_at[row][step] >= 0; ++step) {
      generation.tokens.push_back(token_at[row][step]);
      generation.logprobs.push_back(logprob_at[row][step]);
      generation.stopped_at_eos = token_at[row][step] == eos;
    }
  }
}

}  // namespace

torch::Tensor top_p_filter(const torch::Tensor& logits, double top_p) {
  check(logits.dim() == 2 && logits.scalar_type() == torch::kFloat32, "top_p_filter: logits must be [B, V] float32");
  if (!logits.device().is_cpu()) return top_p_filter_by_sorting(logits, top_p);
  const torch::Tensor probabilities = logits.softmax(-1).contiguous();  // [B, V]
  const int64_t rows = probabilities.size(0), vocab = probabilities.size(1);
  torch::Tensor thresholds = torch::empty({rows, 1}, probabilities.options());  // [B, 1]
  const float* row_data = probabilities.data_ptr<float>();
  float* threshold_data = thresholds.data_ptr<float>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> values;
    for (int64_t row = begin; row < end; ++row) {
      values.assign(row_data + row * vocab, row_data + (row + 1) * vocab);
      threshold_data[row] = nucleus_threshold(values, top_p);
    }
  });
  return logits.masked_fill(probabilities < thresholds, -std::numeric_limits<float>::infinity());
}

torch::Tensor top_p_filter_by_sorting(const torch::Tensor& logits, double top_p) {
  check(logits.dim() == 2 && logits.scalar_type() == torch::kFloat32, "top_p_filter: logits must be [B, V] float32");
  const torch::Tensor probabilities = logits.softmax(-1);                                  // [B, V]
  const torch::Tensor sorted = std::get<0>(probabilities.to(torch::kFloat64).sort(-1, /*descending=*/true));
  const torch::Tensor mass_before = sorted.cumsum(-1) - sorted;                            // [B, V]
  const torch::Tensor kept = (mass_before < top_p).sum(-1, /*keepdim=*/true).clamp_min(1);  // [B, 1] (0: NaN)
  const torch::Tensor thresholds = sorted.gather(-1, kept - 1).to(torch::kFloat32);        // [B, 1]
  return logits.masked_fill(probabilities < thresholds, -std::numeric_limits<float>::infinity());
}

std::vector<Generation> sample(LlamaForCausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                               const SamplingOptions& options) {
  validate(model, prompts, options);
  torch::NoGradGuard no_grad;
  std::vector<Generation> out(prompts.size());
  const auto batch_size = static_cast<size_t>(options.batch_size);
  const auto batches = static_cast<int64_t>((prompts.size() + batch_size - 1) / batch_size);
  // A batch's rows, each as [n, stopped_at_eos, n tokens, n log-probs].
  const auto encoded = run_sharded(options.group, batches, [&](int64_t batch) {
    const size_t first = static_cast<size_t>(batch) * batch_size;
    const size_t count = std::min(batch_size, prompts.size() - first);
    sample_batch(model, prompts, first, count, options, out);
    std::vector<double> rows;
    for (size_t i = first; i < first + count; ++i) {
      const Generation& generation = out[i];
      count_sampled_tokens(static_cast<int64_t>(generation.tokens.size()));
      rows.push_back(static_cast<double>(generation.tokens.size()));
      rows.push_back(generation.stopped_at_eos ? 1 : 0);
      rows.insert(rows.end(), generation.tokens.begin(), generation.tokens.end());
      rows.insert(rows.end(), generation.logprobs.begin(), generation.logprobs.end());
    }
    return rows;
  });
  if (options.group == nullptr) return out;  // every batch was decoded here, into `out`
  for (int64_t batch = 0; batch < batches; ++batch) {  // the other ranks' batches, and this rank's again
    const std::vector<double>& rows = encoded[batch];
    size_t next = 0;
    for (size_t i = static_cast<size_t>(batch) * batch_size; next < rows.size(); ++i) {
      const auto length = static_cast<int64_t>(rows[next]);
      Generation& generation = out[i];
      generation.stopped_at_eos = rows[next + 1] != 0;
      const auto tokens = rows.begin() + static_cast<int64_t>(next) + 2;
      generation.tokens.assign(tokens, tokens + length);
      generation.logprobs.assign(tokens + length, tokens + 2 * length);
      next += 2 + 2 * static_cast<size_t>(length);
    }
  }
  return out;
}

std::vector<Generation> sample_without_cache(LlamaForCausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                             const SamplingOptions& options) {
  validate(model, prompts, options);
  torch::NoGradGuard no_grad;
  const auto device = module_device(*model);
  const int64_t eos = resolve_eos(model, options);
  std::vector<Generation> out(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    seed_stream(options.seed, i);
    std::vector<int64_t> sequence = prompts[i];
    for (int64_t step = 0; step < options.max_new_tokens; ++step) {
      const torch::Tensor ids = torch::tensor(sequence, torch::kInt64).unsqueeze(0).to(device);  // [1, T]
      const torch::Tensor logits = model(ids, torch::ones_like(ids), nullptr).select(1, -1).to(torch::kFloat32);
      torch::Tensor noise;
      if (options.temperature > 0) noise = draw_noise(1, model->config.vocab_size, device);
      const int64_t token = choose_tokens(logits, noise, options).item<int64_t>();
      out[i].tokens.push_back(token);
      out[i].logprobs.push_back(logits.log_softmax(-1)[0][token].item<double>());
      sequence.push_back(token);
      if (token == eos) {
        out[i].stopped_at_eos = true;
        break;
      }
    }
    count_sampled_tokens(static_cast<int64_t>(out[i].tokens.size()));
  }
  return out;
}

}  // namespace can
