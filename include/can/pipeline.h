// The stages of the MoCAN and PeCAN pipelines and of the primal-dual baseline
// (docs/design.md §3), for can-train.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "can/config.h"
#include "can/stage_runner.h"

namespace can {

// The stages of config.pipeline in run order (see src/pipeline/pipeline.cpp for
// each stage's artifact). Stages that would train a model given in config.models
// are left out. With m > 1 safety constraints (num_constraints) there is one cost
// model stage and one PeCAN safety DPO stage per constraint j ("cost_model_<j>",
// "safety_dpo_<j>"). With sweep.margins, the stages dual, relabel, dpo and eval are
// repeated once per margin b of constraint sweep.constraint and named with
// sweep_stage_suffix ("dual-b0.5", ..., "eval-b0.5"); an infeasible margin stops the
// run at its dual. The primal_dual pipeline runs MoCAN's stages up to the score models,
// then "round-0" … "round-<R−1>" (primal_dual.h) and "eval".
std::vector<Stage> pipeline_stages(const Config& config);

// What in the config voids the dual's prediction, one sentence each: the prediction
// assumes the final DPO is plain DPO (sigmoid loss, no label smoothing) and the offline
// samples come from π_ref itself (temperature 1, no top-p or top-k truncation), and is
// compared with an evaluation that samples the policies themselves. The dual stage logs
// each as a warning; report.json and report.md carry them. (A low effective sample size
// is the dual's own warning.)
std::vector<std::string> prediction_caveats(const Config& config);

// The examples a trainer's stage holds out of `examples` for its evaluation metrics:
// 5%, at least one, never all.
int64_t holdout_size(int64_t examples);

// "-b<margin>", the margin in its shortest exact decimal form; with several
// constraints "-c<j>-b<margin>", j = sweep.constraint.
std::string sweep_stage_suffix(const Config& config, double margin);

// With sweep.margins, once every margin's eval stage has finished: sweep.json,
// sweep.md and sweep.svg in run.dir (sweep_report.h). Logs and does nothing
// while some margin's evaluation is missing (a run limited with --stages).
void write_sweep_summary(const Config& config);

}  // namespace can
