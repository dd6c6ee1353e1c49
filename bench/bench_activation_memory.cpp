// Activation memory per token, measured against the formulas of can-train --dry-run's
// estimate (run_plan.h: training_activation_bytes_per_token,
// inference_activation_bytes_per_token). For each shape: the peak resident memory of
// one training step (forward, log-softmax loss, backward, AdamW; AdamW's state made by
// an earlier step) above the memory at its start, less the gradients (4 bytes per
// parameter, allocated by backward), and of one forward without gradients, over the
// batch's tokens (freed heap returned first with malloc_trim); the largest of three
// steps, as where the allocator places blocks varies from step to step.
// Prints a Markdown table (bench/results/dry-run-memory.md records one).
//   build/bench_activation_memory [BATCH]     BATCH: sequences per step (default 8)
#include <malloc.h>
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <iostream>

#include "../tests/tiny_model.h"
#include "can/llama.h"
#include "can/run_plan.h"
#include "can/runtime.h"
#include "can/score_model.h"

namespace {

// Peak resident bytes above the start while `step` runs.
template <typename Step>
int64_t peak_above_start(Step&& step) {
  malloc_trim(0);
  can::reset_peak_resident_memory();
  const int64_t start = can::resident_bytes();
  step();
  return can::peak_resident_bytes() - start;
}

// Bytes per token of a training step of `model` (`loss` of its forward on `input`),
// beyond its gradients: AdamW's state is made by a first, unmeasured step.
int64_t training_bytes_per_token(torch::nn::Module& model, const torch::Tensor& input,
                                 const std::function<torch::Tensor()>& loss) {
  torch::optim::AdamW optimizer(model.parameters());
  int64_t parameters = 0;
  for (const auto& parameter : model.parameters()) parameters += parameter.numel();
  const auto step = [&] {
    return peak_above_start([&] {
      loss().backward();
      optimizer.step();
      optimizer.zero_grad();
    });
  };
  step();
  const int64_t peak = std::max({step(), step(), step()});  // the allocator's placement varies from step to step
  return (peak - 4 * parameters) / input.numel();
}

struct Shape {
  const char* name;
  can::LlamaConfig config;
};

}  // namespace

int main(int argc, char** argv) {
  can::configure_threads();
  const int64_t batch = argc > 1 ? std::atoll(argv[1]) : 8;
  std::vector<Shape> shapes;
  shapes.push_back({"tiny (V 400, H 64, I 128, L 2)", can::testing::tiny_llama_config(400)});
  shapes.back().config.hidden_size = 64;
  shapes.back().config.intermediate_size = 128;
  shapes.push_back({"tiny, V 8000", shapes.back().config});
  shapes.back().config.vocab_size = 8000;
  shapes.push_back({"small (V 8000, H 512, I 1376, L 6)", can::testing::small_llama_config()});
  shapes.push_back({"small, V 400, L 1", can::testing::small_llama_config()});
  shapes.back().config.vocab_size = 400;
  shapes.back().config.num_hidden_layers = 1;
  const int64_t length = 256;
  std::cout << "| shape | training, measured | training, formula | formula / measured | forward, measured | "
               "forward, formula | formula / measured |\n|---|---:|---:|---:|---:|---:|---:|\n";
  for (const Shape& shape : shapes) {
    can::LlamaForCausalLM model(shape.config);
    const torch::Tensor input = torch::randint(0, shape.config.vocab_size, {batch, length});  // [B, T]
    const double tokens = static_cast<double>(batch * length);
    const auto training = static_cast<double>(training_bytes_per_token(*model, input, [&] {
      const torch::Tensor logits = model(input, torch::ones_like(input));  // [B, T, V]
      return logits.log_softmax(-1).gather(-1, input.unsqueeze(-1)).mean();
    }));
    const auto forward = [&] {
      return peak_above_start([&] {
        torch::NoGradGuard no_grad;
        model(input, torch::ones_like(input)).log_softmax(-1).sum().item<float>();
      });
    };
    const double inference = static_cast<double>(std::max({forward(), forward(), forward()})) / tokens;
    const auto training_formula =
        static_cast<double>(can::training_activation_bytes_per_token(shape.config, true, false, false));
    const auto inference_formula = static_cast<double>(can::inference_activation_bytes_per_token(shape.config, true));
    std::cout << fmt::format("| {} | {:.0f} B | {:.0f} B | {:.2f} | {:.0f} B | {:.0f} B | {:.2f} |\n", shape.name,
                             training, training_formula, training_formula / training, inference, inference_formula,
                             inference_formula / inference);
  }
  // A score model's training step: the backbone and a head read at the last token.
  for (const Shape& shape : shapes) {
    if (shape.config.vocab_size != 400) continue;
    can::LlamaForScore model(shape.config);
    const torch::Tensor input = torch::randint(0, shape.config.vocab_size, {batch, length});  // [B, T]
    const auto training = static_cast<double>(
        training_bytes_per_token(*model, input, [&] { return model(input, torch::ones_like(input)).mean(); }));
    const auto formula = static_cast<double>(can::training_activation_bytes_per_token(shape.config, false, false, false));
    std::cout << fmt::format("| score model, {} | {:.0f} B | {:.0f} B | {:.2f} | | | |\n", shape.name, training, formula,
                             formula / training);
  }
}
