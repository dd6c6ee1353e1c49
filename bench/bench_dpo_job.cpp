// DPO training throughput of a job (the distributed issue's benchmark): the real
// training loop (run_training: forward and backward of each rank's part of the job's
// micro-batch, the bucketed gradient all-reduce, clipping, AdamW) on synthetic pairs
// with cached reference log-probs, as one process or as one rank of a job started by a
// launcher (torchrun --no-python --nproc-per-node N build/bench_dpo_job ...). The
// job's batch is --global-batch pairs whatever the number of processes. Rank 0 prints
// one JSON object: the job's tokens/s over the timed updates (the loop's own
// tokens_per_second of each metrics window after the first, which holds the warm-up)
// and each rank's peak resident memory (VmHWM; rank 0's includes the final checkpoint,
// for which a sharded run gathers every moment onto it).
//   build/bench_dpo_job [--config tiny|small] [--global-batch 8] [--length 128] [--updates 25] [--threads 1]
//                       [--shard-optimizer]
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "../tests/json_files.h"
#include "../tests/temporary_directory.h"
#include "../tests/tiny_model.h"
#include "can/batch_inference.h"
#include "can/batching.h"
#include "can/distributed.h"
#include "can/dpo_trainer.h"
#include "can/error.h"
#include "can/json_lines.h"
#include "can/llama.h"
#include "can/losses.h"
#include "can/runtime.h"
#include "can/training_loop.h"

namespace {

// `count` pairs, every sequence `length` tokens: half prompt (BOS first), half response
// (EOS last); chosen and rejected responses differ. The same on every rank.
std::vector<std::pair<can::TokenizedSequence, can::TokenizedSequence>> pairs(int64_t count, int64_t length,
                                                                             int64_t vocab) {
  std::vector<std::pair<can::TokenizedSequence, can::TokenizedSequence>> out;
  uint64_t state = 1;
  const auto next_id = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int64_t>(3 + (state >> 33) % static_cast<uint64_t>(vocab - 3));
  };
  for (int64_t i = 0; i < count; ++i) {
    can::TokenizedSequence chosen;
    chosen.prompt_ids.push_back(1);
    while (static_cast<int64_t>(chosen.prompt_ids.size()) < length / 2) chosen.prompt_ids.push_back(next_id());
    can::TokenizedSequence rejected = chosen;
    for (auto* side : {&chosen, &rejected}) {
      while (static_cast<int64_t>(side->response_ids.size()) < length - length / 2 - 1) {
        side->response_ids.push_back(next_id());
      }
      side->response_ids.push_back(2);
    }
    out.emplace_back(std::move(chosen), std::move(rejected));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"DPO training tokens/s of one process or of a job of several (launched by torchrun)"};
  std::string config_name = "small";
  int64_t global_batch = 8, length = 128, updates = 25;
  int threads = 1;
  bool shard_optimizer = false;
  app.add_option("--config", config_name, "tiny or small (~25M parameters)")
      ->check(CLI::IsMember({"tiny", "small"}))
      ->capture_default_str();
  app.add_option("--global-batch", global_batch, "pairs per update of the job")->capture_default_str();
  app.add_option("--length", length, "tokens per sequence")->capture_default_str();
  app.add_option("--updates", updates, "updates; the first 5 are warm-up")->capture_default_str();
  app.add_option("--threads", threads, "threads per process")->capture_default_str();
  app.add_flag("--shard-optimizer", shard_optimizer, "ZeRO stage 1: each rank keeps 1/N of AdamW's moments");
  CLI11_PARSE(app, argc, argv);
  try {
    can::configure_threads(threads);
    spdlog::set_level(spdlog::level::warn);  // the JSON line is the output
    const can::LaunchEnvironment launch = can::read_launch_environment(std::getenv);
    std::optional<can::ProcessGroup> group;
    if (launch.world_size > 1) group.emplace(can::ProcessGroup::join(launch, std::chrono::minutes(5)));
    const int64_t world = launch.world_size;
    can::check(global_batch % world == 0 && updates > 5, "--global-batch {} must divide among {} processes, and "
               "--updates must exceed the 5 of warm-up", global_batch, world);

    const can::LlamaConfig config = can::testing::dpo_bench_llama_config(config_name);
    torch::manual_seed(0);
    can::LlamaForCausalLM policy(config);
    const auto data = pairs(global_batch * updates, length, config.vocab_size);
    // The reference log-probs: the initial policy's, as the cache holds them (not timed).
    std::vector<at::Tensor> reference(data.size());  // [2] chosen, rejected
    for (size_t i = 0; i < data.size(); ++i) {
      reference[i] = can::frozen_sequence_logprobs(
          policy, can::make_pair_batch({data[i].first}, {data[i].second}, {length, 0}));
    }

    const can::testing::TemporaryDirectory output;
    can::TrainingTask task;
    task.stage = "dpo";
    task.model = policy.ptr();
    task.num_examples = static_cast<int64_t>(data.size());
    const can::DpoOptions dpo;
    task.compute_loss = [&](const std::vector<int64_t>& indices) {
      std::vector<can::TokenizedSequence> chosen, rejected;
      std::vector<at::Tensor> chosen_reference, rejected_reference;
      for (const int64_t i : indices) {
        chosen.push_back(data[i].first);
        rejected.push_back(data[i].second);
        chosen_reference.push_back(reference[i][0]);
        rejected_reference.push_back(reference[i][1]);
      }
      const can::SequenceBatch batch = can::make_pair_batch(chosen, rejected, {length, 0});
      can::MicroBatchLoss result;
      result.output = can::dpo_pair_batch_loss(
          policy, batch, torch::cat({torch::stack(chosen_reference), torch::stack(rejected_reference)}), dpo);
      result.tokens = batch.attention_mask.sum().item<int64_t>();
      return result;
    };
    task.save_model = [](const std::filesystem::path&) {};
    can::TrainingOptions options;
    options.epochs = 1;
    options.micro_batch_size = global_batch / world;
    options.learning_rate = 1e-5;
    options.warmup_steps = 0;
    options.log_every = 5;
    options.save_every = 0;
    options.max_length = length;
    options.output_dir = output.path();
    options.process_group = group ? &*group : nullptr;
    options.shard_optimizer = shard_optimizer;
    const auto start = std::chrono::steady_clock::now();
    can::run_training(task, options);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string peak = std::to_string(can::peak_resident_bytes());
    std::vector<std::string> peaks = group ? group->all_gather_bytes(peak) : std::vector<std::string>{peak};
    if (launch.rank != 0) return 0;
    std::vector<int64_t> peak_bytes;
    for (const std::string& bytes : peaks) peak_bytes.push_back(std::stoll(bytes));

    double tokens_per_second = 0;
    int64_t windows = 0;
    for (const auto& line : can::testing::read_json_lines(output.path() / "metrics.jsonl")) {
      if (line.at("step").get<int64_t>() <= 5) continue;  // the warm-up window
      tokens_per_second += line.at("tokens_per_second").get<double>();
      ++windows;
    }
    int64_t parameters = 0;
    for (const auto& p : policy->parameters()) parameters += p.numel();
    std::cout << nlohmann::json{{"implementation", "CAN"},
                                {"config", config_name},
                                {"parameters", parameters},
                                {"processes", world},
                                {"shard_optimizer", shard_optimizer},
                                {"peak_rss_bytes_per_rank", peak_bytes},
                                {"threads_per_process", threads},
                                {"global_batch_pairs", global_batch},
                                {"sequence_length", length},
                                {"updates", updates},
                                {"tokens_per_second", tokens_per_second / static_cast<double>(windows)},
                                {"wall_seconds", seconds}}
                     .dump()
              << std::endl;
  } catch (const std::exception& error) {
    std::cerr << "bench_dpo_job: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
