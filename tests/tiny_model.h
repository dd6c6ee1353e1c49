// Test support: the tiny Llama shape the model, LoRA and trainer tests share.
#pragma once

#include <cstdint>

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

}  // namespace can::testing
