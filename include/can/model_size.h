// The tensors of CAN's Llama modules computed from a config, without building the
// module: what a checkpoint must hold (its names and shapes, checked by
// can-train --dry-run against the files' headers), and the parameter counts that
// memory estimates start from (run_plan.h). tests/model_size_test.cpp checks both
// against the modules themselves.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "can/llama.h"
#include "can/lora.h"

namespace can {

enum class ModelKind {
  kCausalLm,  // LlamaForCausalLM: model.*, lm_head.weight unless tied
  kScore,     // LlamaForScore: model.*, score_head.weight [score_dim, H] (+ bias), or score.weight
};

// Parameter name -> shape, in Hugging Face's names ("model.layers.0.self_attn.q_proj.weight").
std::map<std::string, std::vector<int64_t>> llama_tensor_shapes(const LlamaConfig& config, ModelKind kind);

// The number of elements of all the tensors.
int64_t parameter_count(const std::map<std::string, std::vector<int64_t>>& shapes);

// Parameters of the LoRA adapters attach_lora adds: per decoder layer and target
// projection [in, out], rank · (in + out).
int64_t lora_parameter_count(const LlamaConfig& config, const LoraOptions& lora);

}  // namespace can
