// Test support: the tiny Llama shape the model, LoRA and trainer tests share, and
// the benchmarks' ~25M "small" shape. A test or benchmark whose shape differs on
// purpose starts from one of these and assigns the few fields that differ after the
// call, so each shape is written once.
#pragma once

#include <cstdint>
#include <string>

#include "can/llama.h"

namespace can::testing {

// Hidden 32, grouped-query attention (4 query heads, 2 key/value heads): milliseconds per forward.
inline LlamaConfig tiny_llama_config(int64_t vocab_size, int64_t num_hidden_layers = 2) {
  LlamaConfig config;
  config.vocab_size = vocab_size;
  config.hidden_size = 32;
  config.intermediate_size = 64;
  config.num_hidden_layers = num_hidden_layers;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  return config;
}

// The benchmarks' "small" shape, ~25M parameters (vocabulary 8000, hidden 512, 6 layers,
// 8 query heads over 4 key/value heads), for timings at a size where the work is in the matmuls.
inline LlamaConfig small_llama_config() {
  LlamaConfig config;
  config.vocab_size = 8000;
  config.hidden_size = 512;
  config.intermediate_size = 1376;
  config.num_hidden_layers = 6;
  config.num_attention_heads = 8;
  config.num_key_value_heads = 4;
  return config;
}

// The DPO benchmarks' two shapes by name: "tiny" (hidden 64, vocabulary 512) or "small".
inline LlamaConfig dpo_bench_llama_config(const std::string& name) {
  if (name != "tiny") return small_llama_config();
  LlamaConfig config = tiny_llama_config(/*vocab_size=*/512);
  config.hidden_size = 64;
  config.intermediate_size = 172;
  return config;
}

}  // namespace can::testing
