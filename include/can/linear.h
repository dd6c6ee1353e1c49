// The linear layer of the Llama-family projections and lm_head: y = x Wᵀ (+ b where
// the family has biases: Qwen2's q, k and v projections), with the two things
// large-model training needs on top of torch::nn::Linear:
//  - a compute dtype: float32 master weights, products in bf16. The input and
//    the weight are cast for the product; autograd carries the gradient back to
//    the float32 weight. Undefined (the default) means the weight's own dtype and
//    no cast at all, so results are bit-identical to torch::nn::Linear's.
//  - an optional LoRA adapter (lora.h): y += (alpha / rank) · B A dropout(x),
//    with A and B registered as submodules lora_A and lora_B, so that parameter
//    names are PEFT's (`q_proj.lora_A.weight` [rank, in], `q_proj.lora_B.weight`
//    [out, rank]). Dropout acts on the adapter's input only, in training mode.
// The parameters of a layer without adapter are "weight" [out, in] and, with a bias,
// "bias" [out]; they are initialised as torch::nn::Linear initialises them
// (Kaiming-uniform, a = √5; the bias uniform in ±1/√in), drawing the same random numbers.
#pragma once

#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>

namespace can {

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool with_bias = false);
  // [..., in] -> [..., out], in compute_dtype when it is set, else in the weight's dtype.
  torch::Tensor forward(const torch::Tensor& x);

  // Registers a fresh adapter as PEFT initialises one: A Kaiming-uniform (a = √5),
  // B zeros, so the layer's output is unchanged. An error when rank <= 0, alpha <= 0,
  // dropout outside [0, 1) or when the layer has an adapter already.
  void add_adapter(int64_t rank, double alpha, double dropout);
  bool has_adapter() const { return lora_A != nullptr; }
  // W += (alpha / rank) · B A, then the adapter is removed: the layer computes the
  // same function (up to rounding) with no adapter. Nothing happens without one.
  void merge_adapter();
  // The weight the layer computes with when its adapter is merged ([out, in], no gradient).
  torch::Tensor merged_weight() const;

  int64_t in_features, out_features;
  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out]; undefined without one
  c10::ScalarType compute_dtype = c10::ScalarType::Undefined;

  std::shared_ptr<LinearImpl> lora_A;  // [rank, in]; null without adapter
  std::shared_ptr<LinearImpl> lora_B;  // [out, rank]
  double lora_scaling = 0.0;           // alpha / rank
  double lora_dropout = 0.0;           // probability
  bool adapter_enabled = true;         // false: the layer computes x Wᵀ alone, exactly
};
TORCH_MODULE(Linear);

}  // namespace can
