// LoRA (Hu et al. 2021) for the Llama models, in PEFT's layout: each target
// projection (a can::Linear, linear.h) gets an adapter y += (alpha / rank)·B A x
// with A [rank, in] Kaiming-uniform and B [out, rank] zeros, so a fresh adapter
// changes nothing. Parameter names are PEFT's (`model.layers.0.self_attn.q_proj.lora_A.weight`).
//
// Training: attach_lora, then freeze_all_but_lora (the optimizer takes only
// parameters with requires_grad). DPO's reference model is the same model with
// its adapters disabled (LoraDisabled), so no second copy is held.
//
// Saving: save_lora_adapters writes PEFT's adapter directory,
//   adapter_model.safetensors   base_model.model.<module>.lora_A.weight [r, in], ...lora_B.weight [out, r]
//   adapter_config.json         peft_type LORA, task_type CAUSAL_LM, r, lora_alpha, lora_dropout,
//                               target_modules, bias "none", base_model_name_or_path
// which PEFT's PeftModel.from_pretrained reads. save_causal_lm (llama.h) never
// writes adapter tensors into a Hugging Face checkpoint: it writes the merged weights.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}

namespace can {

struct LoraOptions {
  int64_t rank = 8;                                                // r
  double alpha = 16.0;                                             // updates are scaled by alpha / r
  double dropout = 0.0;                                            // on the adapters' input, in training mode
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};  // Hugging Face names
};

// The projections that can carry adapters: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
const std::vector<std::string>& lora_target_names();

// Adds fresh adapters to every target projection of every decoder layer of
// `model` (a LlamaForCausalLM or its backbone), on the weights' device and dtype.
// Draws A's initialisation from torch's generator. Errors: an unknown target name
// (the message lists the valid ones), no targets, rank <= 0, alpha <= 0, dropout
// outside [0, 1), a model that has adapters already or has no such projection.
void attach_lora(torch::nn::Module& model, const LoraOptions& options);

// Whether any layer of `model` carries an adapter.
bool has_lora(const torch::nn::Module& model);

// Whether a parameter name is an adapter's (`...lora_A.weight`, `...lora_B.weight`).
bool is_lora_parameter(const std::string& name);

// The options of the attached adapters (target_modules in lora_target_names()
// order); an error without adapters.
LoraOptions lora_options(const torch::nn::Module& model);

// requires_grad on every adapter parameter, off on every other one.
void freeze_all_but_lora(torch::nn::Module& model);

// Disabled adapters leave every layer computing exactly x Wᵀ, the base model.
void set_lora_enabled(torch::nn::Module& model, bool enabled);

// Disables the adapters of a model for its lifetime, then enables them again.
class LoraDisabled {
 public:
  explicit LoraDisabled(torch::nn::Module& model);
  ~LoraDisabled();
  LoraDisabled(const LoraDisabled&) = delete;
  LoraDisabled& operator=(const LoraDisabled&) = delete;

 private:
  torch::nn::Module& model_;
};

// W += (alpha / r)·B A in every layer with an adapter, then removes the
// adapters: the model computes the same function with plain weights.
void merge_lora(torch::nn::Module& model);

// The model's parameters as a Hugging Face checkpoint holds them: adapter
// tensors left out, each weight with an enabled adapter merged (the model is not
// changed). Without adapters, exactly named_tensors (model_weights.h).
std::vector<std::pair<std::string, at::Tensor>> merged_named_tensors(const torch::nn::Module& model);

// Writes adapter_model.safetensors and adapter_config.json (PEFT's names, above)
// into `directory`, each file atomically. An error without adapters.
void save_lora_adapters(const torch::nn::Module& model, const std::filesystem::path& directory,
                        const std::string& base_model_name_or_path);

// Reads a PEFT LoRA directory into `model`: attaches adapters as its
// adapter_config.json says when the model has none, else checks that the
// attached ones have the same rank, alpha and targets; then copies every
// adapter tensor by name, checking the key set and every shape (errors name the
// file and the tensor). Only peft_type LORA with bias "none" is accepted.
void load_lora_adapters(torch::nn::Module& model, const std::filesystem::path& directory);

}  // namespace can
