// can-train: run the MoCAN or PeCAN pipeline of a config into its run directory.
//   can-train --config FILE [--set key.path=value ...] [--resume] [--stages a,b]
//             [--sweep-margins [J:]b1,b2,...] [--print-config] [--dry-run]
// Exit status: 0 done, 1 error (stderr says what and where), 2 usage, 130 interrupted.
//
// Several processes, one job: under a launcher that sets RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR and MASTER_PORT (torchrun --no-python --nproc-per-node N can-train ...,
// Slurm's srun, or a shell loop; README, "Several processes"), the processes join one
// Gloo process group and run one pipeline: rank 0 writes, training is data-parallel and
// sampling and scoring are shared (stage_runner.h, distributed.h).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <sstream>

#include "can/cli.h"
#include "can/config.h"
#include "can/distributed.h"
#include "can/error.h"
#include "can/logging.h"
#include "can/pipeline.h"
#include "can/progress.h"
#include "can/run_plan.h"
#include "can/runtime.h"
#include "can/stage_runner.h"

namespace {

constexpr int kInterrupted = 130;

// How long a rank waits for the others, in a collective or for rank 0 to finish a stage
// it runs alone, before it gives the job up: PyTorch's default for Gloo. A peer that
// fails or is killed is noticed at once (its connections close), not after this.
constexpr std::chrono::minutes kJobTimeout{30};

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> items;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) items.push_back(item);
  return items;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Run the MoCAN or PeCAN pipeline of a config into its run directory (run.dir)"};
  std::string config_file, stages_text, sweep_text;
  std::vector<std::string> assignments;
  bool resume = false, print_config = false, dry_run = false;
  app.add_option("--config", config_file, "YAML config; configs/mocan.yaml documents every key")->required();
  app.add_option("--set", assignments, "override one key, e.g. --set dpo.beta=0.2 (repeatable)")
      ->allow_extra_args(false);
  app.add_flag("--resume", resume, "continue the run in run.dir: skip finished stages, resume the unfinished one");
  app.add_option("--stages", stages_text, "comma-separated stages to run, in pipeline order (default: all)");
  app.add_option("--sweep-margins", sweep_text,
                 "comma-separated safety margins to sweep (sets sweep.margins); J:b1,b2,... sweeps constraint J "
                 "(0-based, sets sweep.constraint) while the others keep dual.margins");
  app.add_flag("--print-config", print_config, "print the resolved config, documented, and exit");
  app.add_flag("--dry-run", dry_run,
               "open every input, print each stage's work and estimated peak memory, and exit: 0 when nothing "
               "would stop the run, 1 naming every problem");
  if (const auto status = can::parse_arguments(app, argc, argv)) return *status;

  std::vector<can::OptionOverride> overrides;
  can::StageSelection selection;
  selection.resume = resume;
  try {
    for (const std::string& assignment : assignments) overrides.push_back(can::parse_set_option(assignment));
    if (!sweep_text.empty()) {
      const std::string source = "--sweep-margins " + sweep_text;
      const size_t colon = sweep_text.find(':');
      if (colon != std::string::npos) overrides.push_back({"sweep.constraint", sweep_text.substr(0, colon), source});
      overrides.push_back({"sweep.margins", "[" + sweep_text.substr(colon + 1) + "]", source});
    }
    if (!stages_text.empty()) selection.stages = split_commas(stages_text);
    for (const std::string& name : selection.stages) {
      can::check(!name.empty(), "--stages {}: an empty stage name; expected names separated by commas", stages_text);
    }
  } catch (const can::Error& error) {
    std::cerr << "can-train: " << error.what() << std::endl;
    return can::kExitUsage;
  }

  std::string who = "can-train";  // in a job: "can-train (rank r of N)"
  try {
    const can::LaunchEnvironment launch = can::read_launch_environment(std::getenv);
    if (launch.world_size > 1) who = fmt::format("can-train (rank {} of {})", launch.rank, launch.world_size);
    can::Config config = can::load_config(config_file, overrides);
    if (print_config) {
      std::cout << can::config_to_yaml(config);
      return 0;
    }
    if (dry_run) {
      const can::RunPlan plan = can::plan_run(config, selection);
      std::cout << "can-train --dry-run: " << config_file << " (pipeline " << config.pipeline << ", device "
                << config.run.device << ", compute " << config.run.compute_dtype << ")\n"
                << can::format_run_plan(plan);
      return plan.problems.empty() ? 0 : 1;
    }
    can::setup_logging(config.run.log_level);
    can::configure_threads(static_cast<int>(config.run.threads));
    std::optional<can::ProcessGroup> group;
    if (launch.world_size > 1) {
      // On GPUs each rank takes its machine's GPU LOCAL_RANK, and NCCL carries CUDA tensors.
      const bool gpus = can::select_device(config.run.device).is_cuda();
      if (gpus) config.run.device = fmt::format("cuda:{}", launch.local_rank);
      if (launch.rank != 0) {  // rank 0 logs for the job; the others say only what stops them
        can::setup_logging(config.run.log_level == "off" ? "off" : "error", "", fmt::format("rank {}", launch.rank));
        can::hide_progress_bars();
      }
      group.emplace(can::ProcessGroup::join(launch, kJobTimeout, gpus));
    }
    can::run_stages(config, can::pipeline_stages(config), selection, group ? &*group : nullptr);
    if (!config.sweep.margins.empty() && launch.rank == 0) can::write_sweep_summary(config);
  } catch (const can::Interrupted& interrupted) {
    std::cerr << who << ": interrupted: " << interrupted.what() << "; continue with --resume" << std::endl;
    return kInterrupted;
  } catch (const std::exception& error) {
    std::cerr << who << ": error: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
