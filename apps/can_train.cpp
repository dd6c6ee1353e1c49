// can-train: run the MoCAN or PeCAN pipeline of a config into its run directory.
//   can-train --config FILE [--set key.path=value ...] [--resume] [--stages a,b]
//             [--sweep-margins [J:]b1,b2,...] [--print-config] [--dry-run]
// Exit status: 0 done, 1 error (stderr says what and where), 2 usage, 130 interrupted.
#include <CLI/CLI.hpp>
#include <iostream>
#include <sstream>

#include "can/cli.h"
#include "can/config.h"
#include "can/error.h"
#include "can/logging.h"
#include "can/pipeline.h"
#include "can/run_plan.h"
#include "can/runtime.h"
#include "can/stage_runner.h"

namespace {

constexpr int kInterrupted = 130;

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

  try {
    const can::Config config = can::load_config(config_file, overrides);
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
    can::run_stages(config, can::pipeline_stages(config), selection);
    if (!config.sweep.margins.empty()) can::write_sweep_summary(config);
  } catch (const can::Interrupted& interrupted) {
    std::cerr << "can-train: interrupted: " << interrupted.what() << "; continue with --resume" << std::endl;
    return kInterrupted;
  } catch (const std::exception& error) {
    std::cerr << "can-train: error: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
