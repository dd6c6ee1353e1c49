// Name-checked weight copies between modules and checkpoints. Module names are
// Hugging Face's, so the checkpoint's keys are exactly named_parameters().
#pragma once

#include <torch/nn/module.h>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace can {

// Copies `tensors` into `module`'s parameters (converting between floating-point
// dtypes). Every missing, unexpected and mis-shaped tensor, and every integer tensor
// for a floating-point weight, is named in one can::Error that also names `source`,
// and so is every floating-point tensor holding NaN or Inf. Keys in `ignored` may be
// present or absent (e.g. a tied lm_head equal to the embedding).
void load_named_tensors(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& tensors,
                        const std::string& source, const std::set<std::string>& ignored = {});

// The device of the module's first parameter; an error for a module without parameters.
c10::Device module_device(const torch::nn::Module& module);

// The module's parameters by name, ready for save_checkpoint.
std::vector<std::pair<std::string, torch::Tensor>> named_tensors(const torch::nn::Module& module);

}  // namespace can
