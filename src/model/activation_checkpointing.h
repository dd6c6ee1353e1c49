// Activation checkpointing of a decoder layer (LlamaModelImpl::activation_checkpointing):
// LibTorch's C++ API has none, so this is a custom autograd function.
#pragma once

#include <ATen/core/Tensor.h>

#include "can/llama.h"

namespace can {

// layer.forward(x, cos, sin, allowed) without a cache (allowed may be undefined: plain
// causal attention, LlamaAttention::forward), keeping none of the
// layer's activations: only the input is saved, and backward runs the layer
// again with gradients (under the forward's random generator state, so that
// adapter dropout draws the same mask) to get the gradients of x and of the
// layer's parameters. Shapes as LlamaDecoderLayer::forward; returns [B, T, H].
at::Tensor checkpointed_decoder_layer(LlamaDecoderLayerImpl& layer, const at::Tensor& x, const at::Tensor& cos,
                                      const at::Tensor& sin, const at::Tensor& allowed);

}  // namespace can
