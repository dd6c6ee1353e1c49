#include "can/linear.h"

#include <torch/torch.h>

#include <cmath>

#include "can/error.h"

namespace can {

namespace {

torch::Tensor in_dtype(const torch::Tensor& tensor, c10::ScalarType dtype) {
  return dtype == c10::ScalarType::Undefined ? tensor : tensor.to(dtype);
}

}  // namespace

LinearImpl::LinearImpl(int64_t in_features_, int64_t out_features_, bool with_bias)
    : in_features(in_features_), out_features(out_features_) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", torch::empty({out_features}));
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (with_bias) {
    const double bound = in_features > 0 ? 1.0 / std::sqrt(static_cast<double>(in_features)) : 0.0;
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  const torch::Tensor input = in_dtype(x, compute_dtype);
  torch::Tensor output =
      at::linear(input, in_dtype(weight, compute_dtype), bias.defined() ? in_dtype(bias, compute_dtype) : bias);
  if (has_adapter() && adapter_enabled) {
    const torch::Tensor adapter_input =
        lora_dropout > 0 && is_training() ? torch::dropout(input, lora_dropout, /*train=*/true) : input;
    output = output + lora_B->forward(lora_A->forward(adapter_input)) * lora_scaling;
  }
  return output;
}

void LinearImpl::add_adapter(int64_t rank, double alpha, double dropout) {
  check(!has_adapter(), "this linear layer [{}, {}] has a LoRA adapter already", out_features, in_features);
  check(rank > 0, "LoRA rank must be positive, got {}", rank);
  check(alpha > 0, "LoRA alpha must be positive, got {}", alpha);
  check(dropout >= 0 && dropout < 1, "LoRA dropout must be in [0, 1), got {}", dropout);
  auto a = std::make_shared<LinearImpl>(in_features, rank);  // Kaiming-uniform, as PEFT's default
  auto b = std::make_shared<LinearImpl>(rank, out_features);
  {
    torch::NoGradGuard no_grad;
    b->weight.zero_();
  }
  for (auto& matrix : {a, b}) {
    matrix->to(weight.device(), weight.scalar_type());
    matrix->compute_dtype = compute_dtype;
    matrix->train(is_training());
  }
  lora_A = register_module("lora_A", a);
  lora_B = register_module("lora_B", b);
  lora_scaling = alpha / static_cast<double>(rank);
  lora_dropout = dropout;
  adapter_enabled = true;
}

torch::Tensor LinearImpl::merged_weight() const {
  torch::NoGradGuard no_grad;
  if (!has_adapter()) return weight.detach();
  // [out, rank] x [rank, in], in float32 at least so the sum rounds once, to the weight's dtype.
  const auto accumulate = weight.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  const torch::Tensor delta = torch::matmul(lora_B->weight.to(accumulate), lora_A->weight.to(accumulate));
  return (weight.to(accumulate) + delta * lora_scaling).to(weight.scalar_type());
}

void LinearImpl::merge_adapter() {
  if (!has_adapter()) return;
  const torch::Tensor merged = merged_weight();
  {
    torch::NoGradGuard no_grad;
    weight.copy_(merged);
  }
  unregister_module("lora_A");
  unregister_module("lora_B");
  lora_A = nullptr;
  lora_B = nullptr;
  lora_scaling = 0.0;
  lora_dropout = 0.0;
  adapter_enabled = true;
}

}  // namespace can
