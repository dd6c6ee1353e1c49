#include "model/activation_checkpointing.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/torch.h>

#include <cstdint>
#include <mutex>
#include <optional>

#include "can/error.h"

namespace can {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The default generator of `device` (dropout on CPU tensors draws from the CPU
// one, on CUDA tensors from that device's).
at::Generator generator_of(const c10::Device& device) {
  return device.is_cpu() ? at::detail::getDefaultCPUGenerator() : at::globalContext().defaultGenerator(device);
}

at::Tensor generator_state(const c10::Device& device) {
  at::Generator generator = generator_of(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void set_generator_state(const c10::Device& device, const at::Tensor& state) {
  at::Generator generator = generator_of(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

// Inputs: x, cos, sin, allowed, then the layer's parameters (so that gradients
// reach them even when x needs none, e.g. frozen embeddings under LoRA). `allowed`
// is an optional: absent for plain causal attention (an undefined tensor is no
// valid input of an autograd function).
class CheckpointedDecoderLayer : public torch::autograd::Function<CheckpointedDecoderLayer> {
 public:
  static at::Tensor forward(AutogradContext* context, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                            const std::optional<at::Tensor>& allowed, at::TensorList parameters,
                            LlamaDecoderLayerImpl* layer) {
    // The layer outlives the graph (it belongs to the model being trained); the
    // context holds only IValues, hence the pointer as an integer.
    context->saved_data["layer"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(layer));
    context->saved_data["num_parameters"] = static_cast<int64_t>(parameters.size());
    context->saved_data["cos"] = cos;
    context->saved_data["sin"] = sin;
    if (allowed) context->saved_data["allowed"] = *allowed;
    if (layer->is_training()) context->saved_data["rng_state"] = generator_state(x.device());
    context->save_for_backward({x});
    return layer->forward(x, cos, sin, allowed.value_or(at::Tensor()), /*cache=*/nullptr, /*layer=*/0);  // no autograd here
  }

  static variable_list backward(AutogradContext* context, variable_list output_gradients) {
    auto* layer = reinterpret_cast<LlamaDecoderLayerImpl*>(static_cast<intptr_t>(context->saved_data["layer"].toInt()));
    const at::Tensor saved_x = context->get_saved_variables()[0];
    const at::Tensor x = saved_x.detach().requires_grad_(saved_x.requires_grad());
    const c10::Device device = x.device();

    // Recompute with the forward's random state, then put the current one back.
    std::optional<at::Tensor> state_now;
    if (context->saved_data.count("rng_state") != 0) {
      state_now = generator_state(device);
      set_generator_state(device, context->saved_data["rng_state"].toTensor());
    }
    at::Tensor output;
    {
      torch::AutoGradMode enable_grad(true);
      const auto allowed = context->saved_data.find("allowed");
      output = layer->forward(x, context->saved_data["cos"].toTensor(), context->saved_data["sin"].toTensor(),
                              allowed != context->saved_data.end() ? allowed->second.toTensor() : at::Tensor(),
                              /*cache=*/nullptr, /*layer=*/0);
    }
    if (state_now) set_generator_state(device, *state_now);

    // Gradients of x and of the parameters that train, in the inputs' order.
    const auto parameters = layer->parameters();
    const auto num_parameters = static_cast<size_t>(context->saved_data["num_parameters"].toInt());
    check(parameters.size() == num_parameters,
          "a checkpointed decoder layer has {} parameters in backward but had {} in forward", parameters.size(),
          num_parameters);
    variable_list wanted;
    if (x.requires_grad()) wanted.push_back(x);
    for (const auto& parameter : parameters) {
      if (parameter.requires_grad()) wanted.push_back(parameter);
    }
    variable_list found;
    if (!wanted.empty() && output.requires_grad()) {
      found = torch::autograd::grad({output}, wanted, {output_gradients[0]}, /*retain_graph=*/false,
                                    /*create_graph=*/false, /*allow_unused=*/true);
    } else {
      found.resize(wanted.size());
    }

    variable_list gradients;  // x, cos, sin, allowed, parameters..., layer (none)
    size_t next = 0;
    gradients.push_back(x.requires_grad() ? found[next++] : at::Tensor());
    gradients.resize(4);
    for (const auto& parameter : parameters) {
      gradients.push_back(parameter.requires_grad() ? found[next++] : at::Tensor());
    }
    gradients.emplace_back();
    return gradients;
  }
};

}  // namespace

at::Tensor checkpointed_decoder_layer(LlamaDecoderLayerImpl& layer, const at::Tensor& x, const at::Tensor& cos,
                                      const at::Tensor& sin, const at::Tensor& allowed) {
  const std::vector<at::Tensor> parameters = layer.parameters();
  const std::optional<at::Tensor> mask = allowed.defined() ? std::optional<at::Tensor>(allowed) : std::nullopt;
  return CheckpointedDecoderLayer::apply(x, cos, sin, mask, at::TensorList(parameters), &layer);
}

}  // namespace can
