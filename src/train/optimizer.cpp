#include "can/optimizer.h"

#include <torch/torch.h>

#include <array>
#include <map>

#include "can/atomic_file.h"
#include "can/error.h"

namespace can {

namespace {

// The optimizer's state of one parameter (LibTorch keys it by the TensorImpl's address), or null.
const torch::optim::AdamWParamState* find_adamw_state(const torch::optim::AdamW& optimizer,
                                                     const at::Tensor& parameter) {
  const auto it = optimizer.state().find(parameter.unsafeGetTensorImpl());
  if (it == optimizer.state().end()) return nullptr;
  return dynamic_cast<const torch::optim::AdamWParamState*>(it->second.get());
}

// "model.layers.0.input_layernorm.weight" -> "input_layernorm"; "" for a top-level name.
std::string owning_module_name(const std::string& name) {
  const auto last_dot = name.rfind('.');
  if (last_dot == std::string::npos || last_dot == 0) return "";
  const auto previous_dot = name.rfind('.', last_dot - 1);
  const auto begin = previous_dot == std::string::npos ? 0 : previous_dot + 1;
  return name.substr(begin, last_dot - begin);
}

}  // namespace

bool exempt_from_weight_decay(const std::string& name, const at::Tensor& parameter) {
  const bool ends_in_bias = name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0;
  return parameter.dim() < 2 || ends_in_bias || owning_module_name(name).find("norm") != std::string::npos;
}

std::unique_ptr<torch::optim::AdamW> make_adamw(const torch::OrderedDict<std::string, at::Tensor>& named_parameters,
                                                const AdamWConfig& config) {
  check(config.weight_decay >= 0, "weight_decay must be >= 0, got {}", config.weight_decay);
  std::vector<at::Tensor> decayed;
  std::vector<at::Tensor> exempt;
  for (const auto& item : named_parameters) {
    if (!item.value().requires_grad()) continue;
    (exempt_from_weight_decay(item.key(), item.value()) ? exempt : decayed).push_back(item.value());
  }
  check(!decayed.empty() || !exempt.empty(), "no trainable parameters (none of {} requires grad)",
        named_parameters.size());
  const auto options = [&](double weight_decay) {
    return torch::optim::AdamWOptions(/*lr=*/0.0)
        .betas({config.beta1, config.beta2})
        .eps(config.eps)
        .weight_decay(weight_decay);
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, std::make_unique<torch::optim::AdamWOptions>(options(config.weight_decay)));
  groups.emplace_back(exempt, std::make_unique<torch::optim::AdamWOptions>(options(0.0)));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), options(config.weight_decay));
}

void adamw_step(torch::optim::AdamW& optimizer) {
  torch::NoGradGuard no_grad;
  for (auto& group : optimizer.param_groups()) {
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    check(!options.amsgrad(), "adamw_step: amsgrad is not supported");
    // The fused kernel takes tensors of one device and dtype per call.
    std::map<std::pair<std::string, c10::ScalarType>, std::array<std::vector<at::Tensor>, 5>> calls;
    // The kernel only reads the step counts, so parameters at the same count share
    // one step tensor (normally one per group) instead of one allocation each.
    std::map<std::pair<std::string, int64_t>, at::Tensor> step_tensors;
    for (const auto& parameter : group.params()) {
      if (!parameter.grad().defined()) continue;
      auto& slot = optimizer.state()[parameter.unsafeGetTensorImpl()];
      if (!slot) {  // as torch::optim::AdamW::step creates it
        auto state = std::make_unique<torch::optim::AdamWParamState>();
        state->step(0);
        state->exp_avg(torch::zeros_like(parameter, at::MemoryFormat::Preserve));
        state->exp_avg_sq(torch::zeros_like(parameter, at::MemoryFormat::Preserve));
        slot = std::move(state);
      }
      auto& state = static_cast<torch::optim::AdamWParamState&>(*slot);
      state.step(state.step() + 1);  // the kernel reads the step count, already advanced (as torch.optim passes it)
      auto& step = step_tensors[{parameter.device().str(), state.step()}];
      if (!step.defined()) {
        step = torch::full({}, static_cast<double>(state.step()), parameter.options().dtype(torch::kFloat));
      }
      auto& call = calls[{parameter.device().str(), parameter.scalar_type()}];
      call[0].push_back(parameter);
      call[1].push_back(parameter.grad());
      call[2].push_back(state.exp_avg());
      call[3].push_back(state.exp_avg_sq());
      call[4].push_back(step);
    }
    const auto [beta1, beta2] = options.betas();
    for (auto& [key, call] : calls) {
      at::_fused_adamw_(call[0], call[1], call[2], call[3], /*max_exp_avg_sqs=*/{}, call[4], options.lr(), beta1, beta2,
                        options.weight_decay(), options.eps(), /*amsgrad=*/false, /*maximize=*/false);
    }
  }
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate) {
  check(learning_rate >= 0, "learning rate must be >= 0, got {}", learning_rate);
  for (auto& group : optimizer.param_groups()) group.options().set_lr(learning_rate);
}

std::vector<at::Tensor> optimizer_parameters(const torch::optim::Optimizer& optimizer) {
  std::vector<at::Tensor> parameters;
  for (const auto& group : optimizer.param_groups()) {
    parameters.insert(parameters.end(), group.params().begin(), group.params().end());
  }
  return parameters;
}

double clip_gradient_norm(const std::vector<at::Tensor>& parameters, double max_norm) {
  check(max_norm > 0, "max_grad_norm must be positive, got {}", max_norm);
  std::vector<at::Tensor> gradients;
  std::vector<at::Tensor> norms;
  for (const auto& parameter : parameters) {
    const auto& gradient = parameter.grad();
    if (!gradient.defined()) continue;
    gradients.push_back(gradient);
    norms.push_back(gradient.detach().to(torch::kFloat).norm());
  }
  if (gradients.empty()) return 0.0;
  const double total_norm = torch::stack(norms).norm().item<double>();
  if (!std::isfinite(total_norm)) return total_norm;
  if (total_norm > max_norm) {
    const double scale = max_norm / (total_norm + 1e-6);
    torch::NoGradGuard no_grad;
    for (auto& gradient : gradients) gradient.mul_(scale);
  }
  return total_norm;
}

void save_optimizer_state(const torch::optim::AdamW& optimizer, const std::filesystem::path& path) {
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  // Serialised in memory first: LibTorch's zip writer, streaming onto a file whose
  // disk fills, throws again from its destructor and terminates the program.
  std::string bytes;
  archive.save_to([&bytes](const void* data, size_t size) {
    bytes.append(static_cast<const char*>(data), size);
    return size;
  });
  write_file_atomically(path, [&](std::ostream& out) { out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); });
}

void load_optimizer_state(torch::optim::AdamW& optimizer, const std::filesystem::path& path) {
  const auto parameters = optimizer_parameters(optimizer);
  check(!parameters.empty(), "cannot load '{}' into an optimizer without parameters", path.string());
  check(std::filesystem::exists(path), "optimizer state '{}' does not exist", path.string());
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path.string(), parameters.front().device());
    optimizer.load(archive);
  } catch (const c10::Error& error) {
    fail("cannot load optimizer state '{}' (was it saved for this model and these trainable parameters?): {}",
         path.string(), error.what_without_backtrace());
  }
  const auto& groups = optimizer.param_groups();
  for (size_t group = 0; group < groups.size(); ++group) {
    for (size_t index = 0; index < groups[group].params().size(); ++index) {
      const auto& parameter = groups[group].params()[index];
      const auto* state = find_adamw_state(optimizer, parameter);
      if (state == nullptr) continue;  // never stepped: no state saved, none needed
      check(state->exp_avg().sizes() == parameter.sizes() && state->exp_avg_sq().sizes() == parameter.sizes(),
            "optimizer state '{}' does not fit this model: group {} parameter {} has shape {} but its saved moments "
            "have shape {}",
            path.string(), group, index, fmt::join(parameter.sizes(), "x"), fmt::join(state->exp_avg().sizes(), "x"));
    }
  }
}

}  // namespace can
