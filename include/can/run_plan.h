// can-train --dry-run: what a run will do and need, found out in seconds and before
// any work. Every input is opened: each given model's config.json and the headers of
// its weight files against the tensors the config implies (model_size.h), the
// tokenizer against each model's vocabulary, the data files parsed, the run
// directory writable. Then per stage: the work (examples, optimizer updates,
// responses and tokens to sample) and an estimate of its peak memory.
//
// The memory estimate (docs/design.md §6, can-train --dry-run, gives the formulas and what they were
// checked against): the process's own resident memory before any model, weights in
// their stored dtype, gradients and AdamW's two moments of what trains (the adapters
// only with LoRA), the activations a training step saves for backward at the
// configured micro-batch and max_length (every sequence padded to max_length: an
// upper bound), one forward's temporaries for inference, the KV cache sampling
// allocates, and the sampled tokens held.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "can/config.h"
#include "can/stage_runner.h"

namespace can {

struct MemoryEstimate {  // bytes
  int64_t runtime = 0;      // the process before any model: LibTorch's libraries, the data read
  int64_t weights = 0;      // every model the stage holds, in its stored dtype
  int64_t gradients = 0;    // of the trained parameters
  int64_t optimizer = 0;    // AdamW's first and second moments
  int64_t activations = 0;  // saved for backward when training; one forward's temporaries otherwise
  int64_t kv_cache = 0;     // sampling's keys and values
  int64_t samples = 0;      // sampled tokens and their log-probs, held until scored
  int64_t total() const;
};

struct StagePlan {
  std::string name;
  std::string work;  // one line: what the stage computes, with its counts
  MemoryEstimate memory;
};

struct InputReport {
  std::string key;    // "models.policy", "data.pairs_train", "tokenizer.model", "run.dir"
  std::string path;
  std::string summary;  // what was found, when it is usable
};

struct RunPlan {
  std::string device;  // run.device as the run would resolve it here ("auto": cuda or cpu)
  std::vector<InputReport> inputs;
  std::vector<StagePlan> stages;
  // Everything that would stop the run, each naming the key and the file or tensor.
  std::vector<std::string> problems;
};

// Opens every input of `config` and plans the selected stages (all when
// selection.stages is empty), checking that the run may start as selected
// (check_run_can_start). Writes nothing of the run: only a probe file in run.dir (or its
// nearest existing parent), removed at once, and on the world the tokenizer it trains in
// a temporary folder, removed after. Problems are collected, not thrown: every one is
// found in one pass.
RunPlan plan_run(const Config& config, const StageSelection& selection);

// The activation memory formulas of the estimate, in bytes per token of one sequence.
// Their coefficients are measured, not derived: bench/bench_activation_memory.cpp
// measures a training step's and a forward's peak on LibTorch's CPU allocator for
// shapes from hidden 64 to 512 and vocabularies of 400 and 8,000, and these formulas
// stay within 15% of every one (bench/results/dry-run-memory.md). A training step
// (forward, backward; float32): per decoder layer 10H + 4.5I float32 elements (what
// the layer saves for backward and what its backward allocates beside; the fused
// attention keeps no T×T weights), then 22H + 3V for the embedding's output, the final
// norm and the causal LM's logits, log-softmax and their gradients (a score model:
// 22H). bfloat16 compute keeps a bfloat16 copy of each matmul input beside: ×1.5 (not
// measured: no GPU yet).
// Activation checkpointing keeps H per layer and recomputes one layer at a time.
int64_t training_activation_bytes_per_token(const LlamaConfig& architecture, bool causal_lm, bool checkpointing,
                                            bool bfloat16_compute);
// One forward without gradients: one layer's temporaries at a time (8H + 5I float32
// elements, measured likewise) and, when log-probs are taken, the logits and their
// log-softmax (2V).
int64_t inference_activation_bytes_per_token(const LlamaConfig& architecture, bool logits);

// The plan as printed by can-train --dry-run: inputs, a table of stages (work, peak
// memory and its largest parts), the largest peak against the memory of the machine
// (CPU) or of common GPU sizes (CUDA), and the problems.
std::string format_run_plan(const RunPlan& plan);

}  // namespace can
