#include "can/model_weights.h"

#include <torch/torch.h>

#include "can/error.h"

namespace can {

namespace {

std::string join_limited(const std::vector<std::string>& items, size_t limit = 20) {
  std::string joined;
  for (size_t i = 0; i < items.size() && i < limit; ++i) joined += (i ? ", " : "") + items[i];
  if (items.size() > limit) joined += fmt::format(" and {} more", items.size() - limit);
  return joined;
}

}  // namespace

void load_named_tensors(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& tensors,
                        const std::string& source, const std::set<std::string>& ignored) {
  auto parameters = module.named_parameters(/*recurse=*/true);
  std::vector<std::string> missing, unexpected, misshaped, mistyped;
  for (const auto& parameter : parameters) {
    const auto found = tensors.find(parameter.key());
    if (found == tensors.end()) {
      missing.push_back(parameter.key());
    } else if (found->second.sizes() != parameter.value().sizes()) {
      misshaped.push_back(fmt::format("{} (checkpoint {}, model {})", parameter.key(), c10::str(found->second.sizes()),
                                      c10::str(parameter.value().sizes())));
    } else if (found->second.is_floating_point() != parameter.value().is_floating_point()) {
      // Integer weights cast to float would load as whatever the bits were meant to be.
      mistyped.push_back(fmt::format("{} (checkpoint {}, model {})", parameter.key(), found->second.dtype().name(),
                                     parameter.value().dtype().name()));
    }
  }
  for (const auto& [name, tensor] : tensors) {
    if (parameters.find(name) == nullptr && ignored.count(name) == 0) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty() || !misshaped.empty() || !mistyped.empty()) {
    std::string message = fmt::format("{}: the checkpoint does not match the model:", source);
    if (!missing.empty()) message += fmt::format("\n  missing tensors: {}", join_limited(missing));
    if (!unexpected.empty()) message += fmt::format("\n  unexpected tensors: {}", join_limited(unexpected));
    if (!misshaped.empty()) message += fmt::format("\n  mis-shaped tensors: {}", join_limited(misshaped));
    if (!mistyped.empty()) message += fmt::format("\n  integer tensors for floating-point weights: {}", join_limited(mistyped));
    throw Error(message);
  }
  std::vector<std::string> non_finite;
  for (const auto& parameter : parameters) {
    const torch::Tensor& tensor = tensors.at(parameter.key());
    if (tensor.is_floating_point() && !torch::isfinite(tensor).all().item<bool>()) non_finite.push_back(parameter.key());
  }
  check(non_finite.empty(), "{}: tensors holding NaN or Inf values: {} (a diverged or damaged checkpoint)", source,
        join_limited(non_finite));
  torch::NoGradGuard no_grad;
  for (auto& parameter : parameters) parameter.value().copy_(tensors.at(parameter.key()));
}

std::vector<std::pair<std::string, torch::Tensor>> named_tensors(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> result;
  for (const auto& parameter : module.named_parameters(/*recurse=*/true)) {
    result.emplace_back(parameter.key(), parameter.value().detach());
  }
  return result;
}

c10::Device module_device(const torch::nn::Module& module) {
  const auto parameters = module.parameters();
  check(!parameters.empty(), "the model has no parameters");
  return parameters.front().device();
}

}  // namespace can
