// AdamW as the trainers use it: two parameter groups (weight decay on matrices,
// none on norms and biases), the learning rate set from outside each step (by
// the schedule, lr_schedule.h), global gradient-norm clipping, and the
// optimizer's state saved and loaded for resumption.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/optim/adamw.h>
#include <torch/ordered_dict.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace can {

struct AdamWConfig {
  double weight_decay = 0.0;  // decoupled (Loshchilov & Hutter), on the decayed group only
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

// No weight decay for a parameter that is 1-D (every norm weight and bias, and
// score heads' biases), or whose name ends in "bias" or whose last module name
// contains "norm" (Llama's input_layernorm, post_attention_layernorm, model.norm).
// Decay pulls toward 0, which is wrong for a norm's gain (its neutral value is 1)
// and pointless for a bias; embeddings and every matrix are decayed.
bool exempt_from_weight_decay(const std::string& name, const at::Tensor& parameter);

// AdamW over the parameters with requires_grad (frozen ones, e.g. the base
// weights under LoRA, are left out): param_groups()[0] holds the decayed ones,
// param_groups()[1] the exempt ones (weight_decay 0), each in the order of
// `named_parameters`. Either group may be empty; both are always there, so a
// checkpoint's groups line up. The learning rate starts at 0: set it with
// set_learning_rate before each step.
std::unique_ptr<torch::optim::AdamW> make_adamw(const torch::OrderedDict<std::string, at::Tensor>& named_parameters,
                                                const AdamWConfig& config);

// One AdamW update of every parameter with a gradient: what optimizer.step()
// computes (decoupled decay p ← p·(1 − lr·wd), bias-corrected moments), with the
// moments kept in the optimizer's own state (so save_optimizer_state and
// load_optimizer_state work unchanged), but in one fused pass per parameter
// group (at::_fused_adamw_, PyTorch's fused=True kernel) instead of eight tensor
// operations per parameter. What the trainers call; optimizer.step() is its slow,
// obviously correct reference. Equal to it up to float rounding (not bitwise).
void adamw_step(torch::optim::AdamW& optimizer);

// Sets the learning rate of every parameter group.
void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate);

// All parameters of all groups, in group order.
std::vector<at::Tensor> optimizer_parameters(const torch::optim::Optimizer& optimizer);

// Scales the gradients so that their global L2 norm (over all parameters with a
// gradient, computed in float32) is at most max_norm (> 0), and returns the norm
// before clipping, for logging as grad_norm. A non-finite norm is returned with
// the gradients untouched: the caller should skip that step.
double clip_gradient_norm(const std::vector<at::Tensor>& parameters, double max_norm);

// The optimizer's state (AdamW: step count and both moments per parameter),
// written atomically. Loading matches parameters by position in their group, so
// it needs an optimizer built the same way (same groups, same parameter order);
// every moment's shape is checked against its parameter, and the state is moved
// to the parameter's device. Learning rates are not restored: the schedule sets them.
void save_optimizer_state(const torch::optim::AdamW& optimizer, const std::filesystem::path& path);
void load_optimizer_state(torch::optim::AdamW& optimizer, const std::filesystem::path& path);

}  // namespace can
