#include "can/sharded_optimizer.h"

#include <torch/torch.h>

#include <cmath>

#include "can/distributed.h"
#include "can/error.h"

namespace can {

ShardedOptimizer::ShardedOptimizer(const ProcessGroup& group, std::vector<at::Tensor> parameters)
    : group_(group), parameters_(std::move(parameters)) {
  std::vector<int64_t> load(static_cast<size_t>(group.world_size()), 0);
  for (const at::Tensor& parameter : parameters_) {
    const int rank = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owners_.push_back(rank);
    load[rank] += parameter.numel();
  }
}

int64_t ShardedOptimizer::owned_elements() const {
  int64_t elements = 0;
  for (const at::Tensor& parameter : owned_by(group_.rank())) elements += parameter.numel();
  return elements;
}

std::vector<at::Tensor> ShardedOptimizer::owned_by(int rank) const {
  std::vector<at::Tensor> owned;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    if (owners_[i] == rank) owned.push_back(parameters_[i]);
  }
  return owned;
}

void ShardedOptimizer::reduce_gradients() const {
  for (int rank = 0; rank < group_.world_size(); ++rank) {
    std::vector<at::Tensor> gradients;
    for (const at::Tensor& parameter : owned_by(rank)) {
      check(parameter.grad().defined(), "sharded optimizer: a parameter has no gradient to reduce");
      gradients.push_back(parameter.grad());
    }
    if (!gradients.empty()) group_.reduce_sum(gradients, rank);
  }
  for (size_t i = 0; i < parameters_.size(); ++i) {
    if (owners_[i] != group_.rank()) parameters_[i].mutable_grad() = at::Tensor();  // not this rank's to update
  }
}

double ShardedOptimizer::clip_gradients(double max_norm) const {
  check(max_norm > 0, "max_grad_norm must be positive, got {}", max_norm);
  const std::vector<at::Tensor> owned = owned_by(group_.rank());
  at::Tensor squares = torch::zeros({1}, torch::kDouble);  // [1] Σ of this rank's squared gradient entries
  for (const at::Tensor& parameter : owned) {
    squares += parameter.grad().detach().to(torch::kFloat).norm().pow(2).to(torch::kCPU, torch::kDouble);
  }
  group_.all_reduce_sum({squares});
  const double total_norm = std::sqrt(squares.item<double>());
  if (std::isfinite(total_norm) && total_norm > max_norm) {  // the scale clip_gradient_norm applies
    const double scale = max_norm / (total_norm + 1e-6);
    torch::NoGradGuard no_grad;
    for (const at::Tensor& parameter : owned) parameter.grad().mul_(scale);
  }
  return total_norm;
}

void ShardedOptimizer::share_parameters() const {
  torch::NoGradGuard no_grad;
  for (int rank = 0; rank < group_.world_size(); ++rank) {
    const std::vector<at::Tensor> owned = owned_by(rank);
    if (owned.empty()) continue;
    std::vector<at::Tensor> flats;
    for (const at::Tensor& parameter : owned) flats.push_back(parameter.detach().reshape({-1}));
    const at::Tensor flat = at::cat(flats);  // [Σ numel] of `rank`'s parameters
    group_.broadcast({flat}, rank);
    int64_t offset = 0;
    for (const at::Tensor& parameter : owned) {
      parameter.detach().copy_(flat.narrow(0, offset, parameter.numel()).view(parameter.sizes()));
      offset += parameter.numel();
    }
  }
}

void ShardedOptimizer::gather_moments(torch::optim::AdamW& optimizer) const {
  auto& states = optimizer.state();
  // One parameter at a time, so that no rank holds more than one parameter's moments
  // beyond its own share (rank 0 ends with all of them, as the checkpoint needs).
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const int owner = owners_[i];
    if (owner == 0) continue;
    const at::Tensor& parameter = parameters_[i];
    at::Tensor step = torch::zeros({1}, torch::kDouble);  // [1] the owner's step count
    at::Tensor moments;                                   // [2, numel] exp_avg, exp_avg_sq
    if (group_.rank() == owner) {
      const auto found = states.find(parameter.unsafeGetTensorImpl());
      check(found != states.end(), "sharded optimizer: rank {} has no moments for parameter {}, which it owns", owner,
            i);
      const auto& state = static_cast<const torch::optim::AdamWParamState&>(*found->second);
      moments = torch::stack({state.exp_avg().reshape({-1}), state.exp_avg_sq().reshape({-1})});
      step[0] = static_cast<double>(state.step());
    } else {
      moments = torch::zeros({2, parameter.numel()}, parameter.options());
    }
    group_.broadcast({moments, step}, owner);
    if (group_.rank() != 0) continue;
    auto state = std::make_unique<torch::optim::AdamWParamState>();
    state->step(static_cast<int64_t>(step[0].item<double>()));
    state->exp_avg(moments[0].view(parameter.sizes()).clone());
    state->exp_avg_sq(moments[1].view(parameter.sizes()).clone());
    states[parameter.unsafeGetTensorImpl()] = std::move(state);
  }
}

void ShardedOptimizer::drop_moments_of_others(torch::optim::AdamW& optimizer) const {
  for (size_t i = 0; i < parameters_.size(); ++i) {
    if (owners_[i] != group_.rank()) optimizer.state().erase(parameters_[i].unsafeGetTensorImpl());
  }
}

}  // namespace can
