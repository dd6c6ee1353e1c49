#include "can/gradient_all_reduce.h"

#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include "can/error.h"

namespace can {

GradientAllReduce::GradientAllReduce(const ProcessGroup& group, std::vector<at::Tensor> parameters,
                                     int64_t bucket_bytes)
    : group_(group), parameters_(std::move(parameters)) {
  bucket_of_.resize(parameters_.size());
  final_.assign(parameters_.size(), false);
  std::vector<at::Tensor> reversed(parameters_.rbegin(), parameters_.rend());  // reverse registration order
  for (size_t k = 0; k < parameters_.size(); ++k) {
    check(parameters_[k].requires_grad(), "GradientAllReduce: parameter {} does not require a gradient", k);
  }
  for (const auto& [begin, end] : bucket_ranges(reversed, bucket_bytes)) {
    Bucket& bucket = buckets_.emplace_back();
    for (size_t i = begin; i < end; ++i) {
      const size_t k = parameters_.size() - 1 - i;
      bucket.members.push_back(k);
      bucket_of_[k] = buckets_.size() - 1;
    }
  }
  for (auto& bucket : buckets_) bucket.pending = bucket.members.size();
  for (size_t k = 0; k < parameters_.size(); ++k) {
    auto accumulator = torch::autograd::impl::grad_accumulator(parameters_[k]);
    const uintptr_t key = accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, k](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          on_final_gradient(k);
          return outputs;
        }));
    remove_hooks_.push_back([accumulator, key] { accumulator->del_post_hook(key); });
  }
}

GradientAllReduce::~GradientAllReduce() {
  for (auto& remove : remove_hooks_) remove();
}

void GradientAllReduce::arm() { armed_ = true; }

void GradientAllReduce::on_final_gradient(size_t parameter) {
  if (!armed_) return;
  check(!final_[parameter],
        "GradientAllReduce: parameter {}'s gradient was accumulated twice in one backward, after its bucket "
        "may have been sent",
        parameter);
  final_[parameter] = true;
  if (--buckets_[bucket_of_[parameter]].pending == 0) start_ready_buckets();
}

void GradientAllReduce::start_ready_buckets() {
  while (next_ < buckets_.size() && buckets_[next_].pending == 0) start(buckets_[next_++]);
}

void GradientAllReduce::start(Bucket& bucket) {
  std::vector<at::Tensor> flats;
  for (size_t k : bucket.members) {
    at::Tensor& parameter = parameters_[k];
    if (!parameter.grad().defined()) parameter.mutable_grad() = torch::zeros_like(parameter);
    flats.push_back(parameter.grad().reshape({-1}));
  }
  bucket.flat = torch::cat(flats);  // [Σ numel]
  for (size_t k : bucket.members) parameters_[k].mutable_grad() = at::Tensor();  // the bucket holds them now
  bucket.wait = group_.start_all_reduce_sum(bucket.flat);
}

void GradientAllReduce::finish() {
  armed_ = false;
  for (auto& bucket : buckets_) bucket.pending = 0;
  start_ready_buckets();
  for (auto& bucket : buckets_) {
    bucket.wait();
    int64_t offset = 0;
    for (size_t k : bucket.members) {
      // Each gradient a tensor on its bucket's memory, no copy back. Not an autograd view
      // (narrow/view): optimizers detach gradients in place, which views refuse.
      at::Tensor& parameter = parameters_[k];
      at::Tensor grad = at::empty({0}, bucket.flat.options());
      grad.set_(bucket.flat.storage(), bucket.flat.storage_offset() + offset, parameter.sizes());
      parameter.mutable_grad() = grad;
      offset += parameter.numel();
    }
    bucket.flat = at::Tensor();
    bucket.wait = nullptr;
    bucket.pending = bucket.members.size();
  }
  final_.assign(parameters_.size(), false);
  next_ = 0;
}

}  // namespace can
