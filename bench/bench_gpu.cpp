// GPU benchmarks (issue 6, item 6): CAN's DPO step, batched sampling and a LoRA
// DPO step on a 7B shape. scripts/bench-gpu.sh runs each case next to
// bench/gpu/*.py (PyTorch + transformers doing the same math) and merges the
// results; bench/gpu/README.md states what is measured. Prints one JSON object.
//   build/bench_gpu dpo      [--shape 1b] [--batch 8] [--seq 512] [--steps 20] [--warmup 5] [--dtype bf16]
//   build/bench_gpu sampling [--shape 1b] [--batch 64] [--prompt-length 64] [--new-tokens 256] [--steps 2]
//   build/bench_gpu lora     [--shape 7b] [--batch 4] [--seq 512] [--steps 10] [--warmup 3]
// Every case takes --device (auto, cpu, cuda, cuda:N) and --dtype (bf16 or float32); --shape tiny runs on a CPU.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "../tests/tiny_model.h"
#include "can/batch_inference.h"
#include "can/batching.h"
#include "can/dpo_trainer.h"
#include "can/error.h"
#include "can/linear.h"
#include "can/llama.h"
#include "can/lora.h"
#include "can/optimizer.h"
#include "can/reference_logprobs.h"
#include "can/runtime.h"
#include "can/sampling.h"

// The caching allocator's statistics are reachable without linking c10_cuda
// (absent from CPU builds) through at::accelerator (LibTorch >= 2.9).
#include <ATen/DeviceAccelerator.h>

namespace {

struct Settings {
  std::string shape;
  std::string dtype = "bf16";
  std::string device = "auto";
  int64_t batch = 0;  // DPO: pairs per step; sampling: prompts decoded together
  int64_t seq = 512;  // DPO: tokens per sequence, half prompt and half response
  int64_t steps = 0;
  int64_t warmup = 0;
  int64_t prompt_length = 64;
  int64_t new_tokens = 256;
  uint64_t seed = 0;
};

can::LlamaConfig shape_config(const std::string& shape) {
  can::LlamaConfig config;  // vocab 32000, rope_theta 1e4, rms_norm_eps 1e-6, untied lm_head
  if (shape == "tiny") {
    config = can::testing::tiny_llama_config(/*vocab_size=*/512);
    config.hidden_size = 64;
    config.intermediate_size = 172;
  } else if (shape == "1b") {  // 1.10B parameters: Llama-3.2-1B's body with Llama-2's vocabulary
    config.hidden_size = 2048;
    config.intermediate_size = 8192;
    config.num_hidden_layers = 16;
    config.num_attention_heads = 32;
    config.num_key_value_heads = 8;
  } else {  // "7b": Llama-2-7B, 6.74B parameters
    config.hidden_size = 4096;
    config.intermediate_size = 11008;
    config.num_hidden_layers = 32;
    config.num_attention_heads = 32;
    config.num_key_value_heads = 32;
  }
  return config;
}

int64_t count_parameters(torch::nn::Module& model) {
  int64_t total = 0;
  for (const auto& parameter : model.parameters()) total += parameter.numel();
  return total;
}

nlohmann::json shape_json(const std::string& name, const can::LlamaConfig& config, int64_t parameters) {
  return {{"name", name},
          {"hidden_size", config.hidden_size},
          {"intermediate_size", config.intermediate_size},
          {"num_hidden_layers", config.num_hidden_layers},
          {"num_attention_heads", config.num_attention_heads},
          {"num_key_value_heads", config.num_key_value_heads},
          {"vocab_size", config.vocab_size},
          {"parameters", parameters}};
}

// Model FLOPs per trained token, forward and backward (PaLM's appendix B
// convention): 6·N for the matmuls against the weights, N counting every
// parameter but the input embedding table (a lookup, no FLOPs; lm_head counts),
// plus 12·layers·hidden·seq for attention's scores and weighted values (causal
// masking not discounted).
double model_flops_per_token(const can::LlamaConfig& config, int64_t parameters, int64_t seq) {
  const double matmul_parameters = static_cast<double>(parameters - config.vocab_size * config.hidden_size);
  return 6.0 * matmul_parameters + 12.0 * static_cast<double>(config.num_hidden_layers * config.hidden_size * seq);
}

c10::ScalarType parse_dtype(const std::string& name) { return name == "bf16" ? torch::kBFloat16 : torch::kFloat32; }

void synchronize(c10::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Peak bytes held by LibTorch's CUDA caching allocator since the process started
// (what torch.cuda.max_memory_allocated reports), in GB (1e9 bytes); null on a CPU.
nlohmann::json peak_allocated_gb(c10::Device device) {
  if (!device.is_cuda()) return nullptr;
  const auto stats = at::accelerator::getDeviceStats(device.has_index() ? device.index() : c10::DeviceIndex{0});
  return static_cast<double>(stats.allocated_bytes[0].peak) / 1e9;  // [0]: all pools together
}

// `count` pair batches of `pairs` pairs on `device`: 2·pairs rows (chosen, then
// rejected) of `seq` random token ids, BOS first, no padding; the first seq/2
// positions are the prompt and the rest the response, whose log-probs enter the loss.
std::vector<can::SequenceBatch> random_pair_batches(int64_t count, int64_t pairs, int64_t seq, int64_t vocab,
                                                    c10::Device device) {
  const auto ids = torch::TensorOptions(device).dtype(torch::kInt64);
  std::vector<can::SequenceBatch> batches;
  for (int64_t i = 0; i < count; ++i) {
    can::SequenceBatch batch;
    batch.input_ids = torch::randint(3, vocab, {2 * pairs, seq}, ids);  // [2B, T]
    batch.input_ids.select(1, 0).fill_(1);
    batch.attention_mask = torch::ones({2 * pairs, seq}, ids);
    batch.response_mask = (torch::arange(seq, ids) >= seq / 2).to(torch::kInt64).expand({2 * pairs, seq}).contiguous();
    batches.push_back(batch);
  }
  return batches;
}

// Times DPO updates of `model`'s parameters with requires_grad: forward and
// backward on chosen and rejected rows together, sigmoid loss with β = 0.1 against
// cached reference log-probs, global-norm clipping at 1 and AdamW (lr 1e-5, betas
// 0.9/0.999, eps 1e-8, no weight decay). The reference log-probs are computed
// once, before the timed loop, by `reference_logprobs`.
nlohmann::json time_dpo_steps(can::LlamaForCausalLM& model, const Settings& settings, c10::Device device,
                              const std::function<at::Tensor(const can::SequenceBatch&)>& reference_logprobs) {
  const auto batches = random_pair_batches(2, settings.batch, settings.seq, model->config.vocab_size, device);
  std::vector<at::Tensor> cached;
  for (const auto& batch : batches) cached.push_back(reference_logprobs(batch));
  model->train();
  auto optimizer = can::make_adamw(model->named_parameters(), {});
  can::set_learning_rate(*optimizer, 1e-5);
  const auto trained = can::optimizer_parameters(*optimizer);
  int64_t trained_parameters = 0;
  for (const auto& parameter : trained) trained_parameters += parameter.numel();
  const can::DpoOptions dpo;  // sigmoid, β = 0.1
  const auto step = [&](int64_t index) {
    const size_t which = static_cast<size_t>(index) % batches.size();
    optimizer->zero_grad();
    const at::Tensor loss = can::dpo_pair_batch_loss(model, batches[which], cached[which], dpo).loss;
    loss.backward();
    can::clip_gradient_norm(trained, 1.0);
    can::adamw_step(*optimizer);
    return loss.detach();
  };
  for (int64_t i = 0; i < settings.warmup; ++i) step(i);
  synchronize(device);
  const auto start = std::chrono::steady_clock::now();
  at::Tensor last_loss;
  for (int64_t i = 0; i < settings.steps; ++i) last_loss = step(i);
  synchronize(device);
  const double seconds = seconds_since(start);
  const int64_t tokens_per_step = 2 * settings.batch * settings.seq;
  return {{"batch", settings.batch},
          {"rows", 2 * settings.batch},
          {"seq", settings.seq},
          {"tokens_per_step", tokens_per_step},
          {"steps", settings.steps},
          {"warmup_steps", settings.warmup},
          {"seconds", seconds},
          {"tokens_per_second", static_cast<double>(settings.steps * tokens_per_step) / seconds},
          {"trained_parameters", trained_parameters},
          {"final_loss", last_loss.defined() ? nlohmann::json(last_loss.item<double>()) : nlohmann::json(nullptr)}};
}

// Case (a): full fine-tuning, float32 master weights, products in --dtype.
nlohmann::json run_dpo(const Settings& settings, c10::Device device) {
  const can::LlamaConfig config = shape_config(settings.shape);
  torch::manual_seed(settings.seed);
  can::LlamaForCausalLM model(config);
  model->to(device);
  if (settings.dtype == "bf16") can::set_compute_dtype(*model, torch::kBFloat16);
  const int64_t parameters = count_parameters(*model);
  nlohmann::json result = time_dpo_steps(model, settings, device, [&](const can::SequenceBatch& batch) {
    return can::frozen_sequence_logprobs(model, batch);
  });
  result["case"] = "dpo_step";
  result["shape"] = shape_json(settings.shape, config, parameters);
  result["dtype"] = settings.dtype;
  result["precision"] = settings.dtype == "bf16" ? "float32 master weights, bf16 products (can::set_compute_dtype)"
                                                 : "float32 (TF32 matmuls on CUDA)";
  result["model_flops_per_token"] = model_flops_per_token(config, parameters, settings.seq);
  result["peak_allocated_gb"] = peak_allocated_gb(device);
  return result;
}

// Case (c): LoRA on q_proj and v_proj (rank 8, alpha 16); the frozen base weights
// are stored in --dtype, the adapters in float32, products in --dtype.
nlohmann::json run_lora(const Settings& settings, c10::Device device) {
  const can::LlamaConfig config = shape_config(settings.shape);
  const c10::ScalarType dtype = parse_dtype(settings.dtype);
  torch::manual_seed(settings.seed);
  auto start = std::chrono::steady_clock::now();
  can::LlamaForCausalLM model(config);  // built in float32 on the CPU, then moved
  model->to(device, dtype);
  const double build_seconds = seconds_since(start);
  const int64_t base_parameters = count_parameters(*model);
  can::LoraOptions lora;  // rank 8, alpha 16, dropout 0, q_proj and v_proj
  can::attach_lora(*model, lora);
  for (const auto& module : model->modules()) {
    auto* linear = dynamic_cast<can::LinearImpl*>(module.get());
    if (linear == nullptr || !linear->has_adapter()) continue;
    linear->lora_A->to(torch::kFloat32);
    linear->lora_B->to(torch::kFloat32);
  }
  can::set_compute_dtype(*model, dtype);
  can::freeze_all_but_lora(*model);
  nlohmann::json result = time_dpo_steps(model, settings, device, [&](const can::SequenceBatch& batch) {
    const can::LoraDisabled base(*model);  // the reference is the base model
    return can::frozen_sequence_logprobs(model, batch);
  });
  result["case"] = "lora_dpo_step";
  result["shape"] = shape_json(settings.shape, config, base_parameters);
  result["dtype"] = settings.dtype;
  result["precision"] = settings.dtype + " frozen base weights, float32 adapters, " + settings.dtype + " products";
  result["lora"] = {{"rank", lora.rank}, {"alpha", lora.alpha}, {"target_modules", lora.target_modules}};
  std::set<std::string> base_dtypes, adapter_dtypes;  // as stored, to show what "precision" says
  for (const auto& parameter : model->named_parameters()) {
    (can::is_lora_parameter(parameter.key()) ? adapter_dtypes : base_dtypes)
        .insert(c10::toString(parameter.value().scalar_type()));
  }
  result["parameter_dtypes"] = {{"base", base_dtypes}, {"adapters", adapter_dtypes}};
  result["model_build_seconds"] = build_seconds;
  result["peak_allocated_gb"] = peak_allocated_gb(device);
  return result;
}

// Case (b): weights in --dtype; temperature 1, top-p 0.9, no top-k, and an EOS id
// outside the vocabulary, so every row decodes exactly new_tokens tokens.
nlohmann::json run_sampling(const Settings& settings, c10::Device device) {
  const can::LlamaConfig config = shape_config(settings.shape);
  torch::manual_seed(settings.seed);
  can::LlamaForCausalLM model(config);
  model->to(device, parse_dtype(settings.dtype));
  model->eval();
  const int64_t parameters = count_parameters(*model);
  const at::Tensor random_ids = torch::randint(3, config.vocab_size, {settings.batch, settings.prompt_length},
                                               torch::TensorOptions().dtype(torch::kInt64));
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t row = 0; row < settings.batch; ++row) {
    const at::Tensor ids = random_ids[row].contiguous();
    prompts.emplace_back(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + settings.prompt_length);
    prompts.back().front() = 1;  // BOS
  }
  can::SamplingOptions options;
  options.temperature = 1.0;
  options.top_p = 0.9;
  options.top_k = 0;
  options.seed = settings.seed;
  options.eos_id = config.vocab_size;
  options.batch_size = settings.batch;
  options.max_new_tokens = std::min<int64_t>(16, settings.new_tokens);
  can::sample(model, prompts, options);  // warm-up: kernels, allocator, cuBLAS handles
  options.max_new_tokens = settings.new_tokens;
  synchronize(device);
  const auto start = std::chrono::steady_clock::now();
  int64_t generated = 0;
  for (int64_t i = 0; i < settings.steps; ++i) {
    for (const auto& generation : can::sample(model, prompts, options)) {
      generated += static_cast<int64_t>(generation.tokens.size());
    }
  }
  synchronize(device);
  const double seconds = seconds_since(start);
  can::check(generated == settings.steps * settings.batch * settings.new_tokens,
             "bench_gpu sampling: {} tokens generated, expected {} (a row stopped early)", generated,
             settings.steps * settings.batch * settings.new_tokens);
  return {{"case", "sampling"},
          {"shape", shape_json(settings.shape, config, parameters)},
          {"dtype", settings.dtype},
          {"batch", settings.batch},
          {"prompt_length", settings.prompt_length},
          {"new_tokens", settings.new_tokens},
          {"temperature", options.temperature},
          {"top_p", options.top_p},
          {"top_k", options.top_k},
          {"runs", settings.steps},
          {"seconds", seconds},
          {"tokens_per_second", static_cast<double>(generated) / seconds},
          {"peak_allocated_gb", peak_allocated_gb(device)}};
}

Settings case_defaults(const std::string& shape, int64_t batch, int64_t steps, int64_t warmup) {
  Settings settings;
  settings.shape = shape;
  settings.batch = batch;
  settings.steps = steps;
  settings.warmup = warmup;
  return settings;
}

// The options every case takes, with the case's defaults (case_defaults).
void add_common_options(CLI::App& command, Settings& settings) {
  command.add_option("--shape", settings.shape, "model preset: tiny (CPU smoke runs), 1b or 7b")
      ->check(CLI::IsMember({"tiny", "1b", "7b"}))
      ->capture_default_str();
  command.add_option("--batch", settings.batch, "pairs per step (dpo, lora) or prompts decoded together (sampling)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command.add_option("--steps", settings.steps, "timed steps (sampling: timed runs)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command.add_option("--dtype", settings.dtype, "bf16 or float32")
      ->check(CLI::IsMember({"bf16", "float32"}))
      ->capture_default_str();
  command.add_option("--device", settings.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  command.add_option("--seed", settings.seed)->capture_default_str();
}

void add_training_options(CLI::App& command, Settings& settings) {
  command.add_option("--seq", settings.seq, "tokens per sequence")->check(CLI::Range(4, 2048))->capture_default_str();
  command.add_option("--warmup", settings.warmup, "untimed steps first")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CAN on a GPU: DPO step, batched sampling, LoRA DPO step; one JSON object on stdout"};
  app.require_subcommand(1);
  Settings dpo = case_defaults("1b", 8, 20, 5);
  Settings sampling = case_defaults("1b", 64, 2, 0);
  Settings lora = case_defaults("7b", 4, 10, 3);
  CLI::App* dpo_command = app.add_subcommand("dpo", "DPO training step, full fine-tuning (case a)");
  add_common_options(*dpo_command, dpo);
  add_training_options(*dpo_command, dpo);
  CLI::App* sampling_command = app.add_subcommand("sampling", "batched sampling with the KV cache (case b)");
  add_common_options(*sampling_command, sampling);
  sampling_command->add_option("--prompt-length", sampling.prompt_length)
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sampling_command->add_option("--new-tokens", sampling.new_tokens)->check(CLI::PositiveNumber)->capture_default_str();
  CLI::App* lora_command = app.add_subcommand("lora", "DPO training step with LoRA on q_proj, v_proj (case c)");
  add_common_options(*lora_command, lora);
  add_training_options(*lora_command, lora);
  CLI11_PARSE(app, argc, argv);

  try {
    can::configure_threads(0);
    const Settings& settings = dpo_command->parsed() ? dpo : sampling_command->parsed() ? sampling : lora;
    const c10::Device device = can::select_device(settings.device);
    nlohmann::json result = dpo_command->parsed()        ? run_dpo(settings, device)
                            : sampling_command->parsed() ? run_sampling(settings, device)
                                                         : run_lora(settings, device);
    result["device"] = device.str();
    result["libtorch"] = TORCH_VERSION;
    std::cout << result.dump() << std::endl;
  } catch (const std::exception& error) {
    std::cerr << "bench_gpu: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
