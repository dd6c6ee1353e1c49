// A run directory and the ordered stages that fill it (docs/design.md §5).
//
//   <run>/config.resolved.yaml   every key of the config, written at the start
//   <run>/can-train.log          the log of every invocation, appended
//   <run>/stages.json            per stage: status (running, done, failed, interrupted), start, end, seconds,
//                                peak resident memory, compute counts (compute_counts.h), and what
//                                the stage adds (StageContext::summary)
//   <run>/can-train.lock         the advisory lock of the process writing the run (its process id)
//   <run>/<stage>.partial/       the work directory of a stage that has not finished
//   <run>/<stage>/               a finished stage's artifact
//
// A stage writes only into its work directory. When its function returns, the
// runner renames `<stage>.partial/` to `<stage>/` (atomic), so a final folder
// exists exactly when the stage finished. When it throws (an error, or
// can::Interrupted), the work directory stays; `--resume` runs the stage again
// in the same directory with `resuming` set, so a trainer can continue from the
// checkpoints it saved there. Finished stages are skipped on --resume; to redo
// one, delete its folder.
//
// A job of several processes (distributed.h) runs one pipeline: rank 0 alone takes
// the lock, checks the run, writes the log, the manifest and every artifact, and
// renames work directories; it tells the others which stages to run. A job-wide
// stage (Stage::job_wide: training, sampling, scoring) runs on every rank, which share
// its work; any other stage runs on rank 0 while the others wait for it. The run
// directory must be one folder that every rank sees (a shared filesystem across machines).
#pragma once

#include <filesystem>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "can/config.h"

namespace can {

class ProcessGroup;

struct StageContext {
  std::filesystem::path run_dir;
  std::filesystem::path work_dir;  // <run>/<stage>.partial/, exists; becomes <run>/<stage>/ on success
  bool resuming = false;           // work_dir holds what an earlier, unfinished attempt left
  // What the stage adds to its entry in stages.json, under "summary" (an empty object
  // adds nothing): the primal-dual rounds' λ and estimated constraints.
  nlohmann::json* summary = nullptr;
  // The job, in a job-wide stage of a job (its ranks share the stage's work); null otherwise.
  const ProcessGroup* group = nullptr;

  // Whether this process writes the stage's files: rank 0 of a job, or a process alone.
  bool writes() const;

  // <run>/<stage>/ of a finished stage; an error naming the stage when it has not finished.
  std::filesystem::path artifact(const std::string& stage) const;
};

struct Stage {
  std::string name;                 // a folder name: a letter or digit, then letters, digits, '_', '-', '.'
  std::vector<std::string> inputs;  // earlier stages whose artifacts `run` reads
  std::function<void(const StageContext&)> run;
  // Every rank of a job runs it, sharing its training or inference through StageContext::group
  // and writing only where StageContext::writes(); false: rank 0 alone runs it.
  bool job_wide = false;
};

struct StageSelection {
  bool resume = false;              // continue an existing run directory
  std::vector<std::string> stages;  // run only these (in pipeline order); empty: all
};

// Runs the selected stages of `stages` (in their order) in config.run.dir and
// logs to the console and <run>/can-train.log. Errors, before any stage runs:
// a run directory another process is writing (it holds <run>/can-train.lock; the
// message names its process id), a non-empty run directory without `resume`; on `resume`, a config whose
// artifact-relevant keys differ from config.resolved.yaml (listing them); an
// unknown stage name (listing the valid ones); a selected stage whose input
// neither has finished nor is selected before it. Rethrows what a stage throws.
// `group`: the job this process is a rank of (null: a process alone); rank 0's errors
// before the first stage, and in a stage rank 0 runs alone, reach every rank.
void run_stages(const Config& config, const std::vector<Stage>& stages, const StageSelection& selection,
                const ProcessGroup* group = nullptr);

// What run_stages checks before it runs a stage (all but the lock), writing nothing:
// for can-train --dry-run.
void check_run_can_start(const Config& config, const std::vector<Stage>& stages, const StageSelection& selection);

}  // namespace can
