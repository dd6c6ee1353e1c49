#include "can/stage_runner.h"

#include <fcntl.h>
#include <malloc.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <ATen/ATen.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "can/atomic_file.h"
#include "can/compute_counts.h"
#include "can/distributed.h"
#include "can/error.h"
#include "can/json_fields.h"
#include "can/logging.h"
#include "can/runtime.h"

namespace can {

namespace fs = std::filesystem;

namespace {

constexpr const char* kResolvedConfigFile = "config.resolved.yaml";
constexpr const char* kManifestFile = "stages.json";
constexpr const char* kLogFile = "can-train.log";
constexpr const char* kLockFile = "can-train.lock";

// One writer per run directory: an advisory lock (flock) on <run>/can-train.lock,
// held while the object lives. The kernel releases it when the process ends in any
// way (SIGKILL included), so a lock file left behind is never a stale lock; the
// file holds the holder's process id, for the message of the one refused.
class RunLock {
 public:
  explicit RunLock(const fs::path& path) {
    descriptor_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    check(descriptor_ >= 0, "cannot open the run lock '{}': {}", path.string(), std::strerror(errno));
    if (::flock(descriptor_, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      ::close(descriptor_);
      if (error == EWOULDBLOCK) {
        std::string holder = read_text_file(path);
        holder.erase(holder.find_last_not_of(" \n") + 1);
        fail("run directory {} is in use by another can-train (process {}, holding {}); wait for it to finish, "
             "or choose another run.dir",
             path.parent_path().string(), holder.empty() ? "unknown" : holder, path.string());
      }
      fail("cannot lock '{}': {}", path.string(), std::strerror(error));
    }
    const std::string pid = fmt::format("{}\n", static_cast<long>(::getpid()));
    check(::ftruncate(descriptor_, 0) == 0 && ::write(descriptor_, pid.data(), pid.size()) ==
                                                  static_cast<ssize_t>(pid.size()),
          "cannot write the run lock '{}': {}", path.string(), std::strerror(errno));
  }
  ~RunLock() { ::close(descriptor_); }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int descriptor_ = -1;
};

fs::path work_dir_of(const fs::path& run_dir, const std::string& stage) { return run_dir / (stage + ".partial"); }

bool is_finished(const fs::path& run_dir, const std::string& stage) { return fs::is_directory(run_dir / stage); }

std::string utc_now() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm parts{};
  gmtime_r(&now, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

// <run>/stages.json: {"format_version", "stages": [{"name", "status", "started",
// "finished", "seconds", "peak_rss_bytes", "compute", "error", "summary"}, ...]}, rewritten atomically
// on every change. peak_rss_bytes: the process's peak resident memory during the stage (null
// where the peak cannot be reset per stage); compute: its ComputeCounts (compute_counts.h)
// in this invocation (a resumed stage counts what it did after resuming).
class Manifest {
 public:
  explicit Manifest(fs::path path) : path_(std::move(path)) {
    if (!fs::exists(path_)) return;
    try {
      const nlohmann::json manifest = read_json_file(path_);
      check_format_version(manifest, path_.string());
      stages_ = required_field(manifest, "stages", path_.string());
      check(stages_.is_array(), "'stages' is not an array");
    } catch (const std::exception& error) {
      fail("{}: not a stage manifest this CAN reads ({}); move it away to start the manifest afresh", path_.string(),
           error.what());
    }
  }

  void record(const std::string& stage, const nlohmann::json& fields) {
    auto entry = std::find_if(stages_.begin(), stages_.end(),
                              [&](const nlohmann::json& e) { return e.value("name", "") == stage; });
    if (entry == stages_.end()) {
      stages_.push_back({{"name", stage}});
      entry = stages_.end() - 1;
    }
    entry->update(fields);
    // An error message may quote bytes of a data file that are not UTF-8: they become U+FFFD here.
    const nlohmann::json manifest = {{"format_version", kArtifactFormatVersion}, {"stages", stages_}};
    write_text_atomically(path_, manifest.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  }

 private:
  fs::path path_;
  nlohmann::json stages_ = nlohmann::json::array();
};

// A folder name that is never "." or "..": a letter or digit, then letters, digits, '_', '-' and '.'.
bool is_valid_stage_name(const std::string& name) {
  return !name.empty() && std::isalnum(static_cast<unsigned char>(name.front())) &&
         std::all_of(name.begin(), name.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '_' || c == '-' || c == '.'; });
}

// The pipeline itself must be well formed: unique names, inputs that come earlier.
void check_pipeline(const std::vector<Stage>& stages) {
  std::set<std::string> earlier;
  for (const Stage& stage : stages) {
    check(is_valid_stage_name(stage.name), "stage name '{}' is not a folder name: a letter or digit, then letters, digits, '_', '-' and '.'",
          stage.name);
    check(!earlier.count(stage.name), "stage '{}' appears twice in the pipeline", stage.name);
    check(static_cast<bool>(stage.run), "stage '{}' has no function", stage.name);
    for (const std::string& input : stage.inputs) {
      check(earlier.count(input), "stage '{}' lists input '{}', which is not an earlier stage", stage.name, input);
    }
    earlier.insert(stage.name);
  }
}

std::string stage_names(const std::vector<Stage>& stages) {
  std::vector<std::string> names;
  for (const Stage& stage : stages) names.push_back(stage.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

std::set<std::string> select(const std::vector<Stage>& stages, const StageSelection& selection,
                             const std::string& pipeline) {
  std::set<std::string> selected;
  for (const Stage& stage : stages) {
    const bool wanted =
        selection.stages.empty() || std::count(selection.stages.begin(), selection.stages.end(), stage.name) > 0;
    if (wanted) selected.insert(stage.name);
  }
  for (const std::string& name : selection.stages) {
    check(selected.count(name), "--stages: unknown stage '{}'; the {} stages are: {}", name, pipeline,
          stage_names(stages));
  }
  return selected;
}

void check_unchanged_config(const Config& config, const fs::path& run_dir) {
  const fs::path resolved = run_dir / kResolvedConfigFile;
  // A run's first act is to write its resolved config: without it the folder is not a can-train run (or its
  // records were deleted), and nothing says with which settings its stages were made.
  check(fs::exists(resolved),
        "cannot resume {}: it has no {}, so it is not a can-train run or its records were deleted; "
        "choose another run.dir",
        run_dir.string(), kResolvedConfigFile);
  Config previous;
  try {
    previous = load_config(resolved);
  } catch (const Error& error) {
    fail("cannot resume {}: its {} no longer loads: {}", run_dir.string(), kResolvedConfigFile, error.what());
  }
  const std::vector<ConfigDifference> differences = artifact_config_differences(previous, config);
  if (differences.empty()) return;
  std::string listing;
  for (const ConfigDifference& d : differences) {
    listing += fmt::format("\n  {}: {} (run) -> {} (now)", d.key, d.before, d.after);
  }
  fail(
      "cannot resume {}: the config differs from {} in {} key(s), which may invalidate finished stages:{}\n"
      "resume with the run's config, or choose another run.dir",
      run_dir.string(), resolved.string(), differences.size(), listing);
}

void check_inputs(const std::vector<Stage>& stages, const std::set<std::string>& selected, const fs::path& run_dir) {
  for (const Stage& stage : stages) {
    if (!selected.count(stage.name) || is_finished(run_dir, stage.name)) continue;
    for (const std::string& input : stage.inputs) {
      if (selected.count(input) || is_finished(run_dir, input)) continue;
      fail(
          "stage '{}' needs the output of stage '{}', which has not finished ({} does not exist); "
          "add '{}' to --stages",
          stage.name, input, (run_dir / input).string(), input);
    }
  }
}

// The job's compute counts: every rank's summed (a stage rank 0 runs alone: rank 0's).
ComputeCounts job_compute_counts(const ProcessGroup* group) {
  ComputeCounts counts = compute_counts();
  if (group == nullptr) return counts;
  const at::Tensor sums = at::tensor({static_cast<double>(counts.forward_tokens), static_cast<double>(counts.backward_tokens),
                                      static_cast<double>(counts.sampled_tokens),
                                      static_cast<double>(counts.optimizer_updates)},
                                     at::kDouble);
  group->all_reduce_sum({sums});
  const auto value = [&](int64_t i) { return static_cast<int64_t>(sums[i].item<double>()); };
  return {value(0), value(1), value(2), value(3)};
}

// What rank 0 tells the others at the end of each stage: "" when it finished, else why not.
void tell_the_job(const ProcessGroup* group, const std::string& failure) {
  if (group != nullptr) group->broadcast_bytes(failure, 0);
}

// Rank 0's part of a stage (a process alone: all of it). `group`: the job, if any.
void run_stage(const Stage& stage, const fs::path& run_dir, Manifest& manifest, const ProcessGroup* group) {
  StageContext context;
  context.run_dir = run_dir;
  context.work_dir = work_dir_of(run_dir, stage.name);
  context.resuming = fs::exists(context.work_dir);
  const bool job_wide = group != nullptr && stage.job_wide;
  if (job_wide) {
    context.group = group;
    group->broadcast_bytes(context.resuming ? "resuming" : "", 0);
  }
  nlohmann::json summary = nlohmann::json::object();
  context.summary = &summary;
  fs::create_directories(context.work_dir);
  manifest.record(
      stage.name,
      {{"status", "running"},
       {"started", utc_now()},
       {"finished", nullptr},
       {"seconds", nullptr},
       {"peak_rss_bytes", nullptr},
       {"compute", nullptr},
       {"error", nullptr}});
  spdlog::info("stage {}: {} in {}{}", stage.name, context.resuming ? "resuming" : "starting", context.work_dir.string(),
               group == nullptr ? "" : job_wide ? fmt::format(" (all {} ranks)", group->world_size()) : " (rank 0)");
  const auto start = std::chrono::steady_clock::now();
  malloc_trim(0);  // heap that earlier stages freed goes back to the system, out of this stage's peak
  const bool peak_is_the_stages = reset_peak_resident_memory();
  reset_compute_counts();
  const auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  const auto record_end = [&](const char* status, const std::string& error, const ComputeCounts& counts) {
    const int64_t peak = peak_is_the_stages ? peak_resident_bytes() : -1;
    nlohmann::json fields = {{"status", status},
                             {"finished", utc_now()},
                             {"seconds", seconds()},
                             {"peak_rss_bytes", peak > 0 ? nlohmann::json(peak) : nlohmann::json(nullptr)},
                             {"compute",
                              {{"forward_tokens", counts.forward_tokens},
                               {"backward_tokens", counts.backward_tokens},
                               {"sampled_tokens", counts.sampled_tokens},
                               {"optimizer_updates", counts.optimizer_updates}}}};
    if (!error.empty()) fields["error"] = error;
    if (!summary.empty()) fields["summary"] = summary;
    manifest.record(stage.name, fields);
  };
  // A failure in a job-wide stage is not told: the others may be inside a collective of
  // the stage, and they learn of it when this process's connections close.
  try {
    stage.run(context);
  } catch (const Interrupted& interrupted) {
    record_end("interrupted", interrupted.what(), compute_counts());
    spdlog::warn("stage {}: interrupted; --resume continues it in {}", stage.name, context.work_dir.string());
    if (group != nullptr && !job_wide) tell_the_job(group, fmt::format("stage {} was interrupted", stage.name));
    throw;
  } catch (const std::exception& error) {
    record_end("failed", error.what(), compute_counts());
    spdlog::error("stage {}: failed after {:.1f} s; its work is kept in {} for --resume", stage.name, seconds(),
                  context.work_dir.string());
    if (group != nullptr && !job_wide) tell_the_job(group, fmt::format("stage {} failed: {}", stage.name, error.what()));
    throw;
  }
  const ComputeCounts counts = job_wide ? job_compute_counts(group) : compute_counts();
  try {
    const fs::path final_dir = run_dir / stage.name;
    check(!fs::exists(final_dir), "stage '{}' wrote {} itself; a stage writes only into its work directory {}",
          stage.name, final_dir.string(), context.work_dir.string());
    rename_durably(context.work_dir, final_dir);
    record_end("done", "", counts);
  } catch (const std::exception& error) {
    tell_the_job(group, fmt::format("stage {} failed at its end: {}", stage.name, error.what()));
    throw;
  }
  tell_the_job(group, "");
  spdlog::info("stage {}: done in {:.1f} s", stage.name, seconds());
}

// The part of a stage of a rank other than 0: its share of a job-wide stage's work, then
// rank 0's word that the stage finished.
void follow_stage(const Stage& stage, const fs::path& run_dir, const ProcessGroup& group) {
  if (stage.job_wide) {
    StageContext context;
    context.run_dir = run_dir;
    context.work_dir = work_dir_of(run_dir, stage.name);
    context.resuming = group.broadcast_bytes("", 0) == "resuming";
    nlohmann::json summary = nlohmann::json::object();  // rank 0's goes into stages.json
    context.summary = &summary;
    context.group = &group;
    reset_compute_counts();
    stage.run(context);
    job_compute_counts(&group);
  }
  const std::string failure = group.broadcast_bytes("", 0);
  check(failure.empty(), "rank 0: {}", failure);
}

}  // namespace

bool StageContext::writes() const { return group == nullptr || group->rank() == 0; }

fs::path StageContext::artifact(const std::string& stage) const {
  check(is_finished(run_dir, stage), "stage '{}' has not finished: {} does not exist", stage,
        (run_dir / stage).string());
  return run_dir / stage;
}

void check_run_can_start(const Config& config, const std::vector<Stage>& stages, const StageSelection& selection) {
  check_pipeline(stages);
  const std::set<std::string> selected = select(stages, selection, config.pipeline);
  const fs::path run_dir = config.run.dir;
  check(!fs::exists(run_dir) || fs::is_directory(run_dir), "run.dir {} exists and is not a directory",
        run_dir.string());
  bool has_content = false;
  if (fs::exists(run_dir)) {
    for (const auto& entry : fs::directory_iterator(run_dir)) has_content |= entry.path().filename() != kLockFile;
  }
  check(!has_content || selection.resume,
        "run directory {} is not empty; pass --resume to continue that run, or choose another run.dir "
        "(--set run.dir=...)",
        run_dir.string());
  if (selection.resume && has_content) check_unchanged_config(config, run_dir);
  check_inputs(stages, selected, run_dir);
}

void run_stages(const Config& config, const std::vector<Stage>& stages, const StageSelection& selection,
                const ProcessGroup* group) {
  check_pipeline(stages);
  const std::set<std::string> selected = select(stages, selection, config.pipeline);
  const fs::path run_dir = config.run.dir;
  if (group != nullptr && group->rank() != 0) {
    // Rank 0 checks and prepares the run, then names the stages to run, or says why none.
    const nlohmann::json plan = nlohmann::json::parse(group->broadcast_bytes("", 0));
    check(!plan.contains("error"), "rank 0 could not start the run: {}", plan.value("error", ""));
    for (const nlohmann::json& entry : plan.at("stages")) {
      const std::string name = entry.get<std::string>();
      follow_stage(*std::find_if(stages.begin(), stages.end(), [&](const Stage& s) { return s.name == name; }),
                   run_dir, *group);
    }
    return;
  }
  std::optional<RunLock> lock;
  std::optional<Manifest> manifest;
  std::vector<const Stage*> to_run;
  try {
    check(!fs::exists(run_dir) || fs::is_directory(run_dir), "run.dir {} exists and is not a directory",
          run_dir.string());
    // Before anything of an existing run is read: a second process on it stops here.
    if (fs::exists(run_dir)) lock.emplace(run_dir / kLockFile);
    check_run_can_start(config, stages, selection);

    fs::create_directories(run_dir);
    if (!lock) lock.emplace(run_dir / kLockFile);
    setup_logging(config.run.log_level, (run_dir / kLogFile).string(), group != nullptr ? "rank 0" : "");
    // Under the lock no other process writes here: temporaries are what a killed run left.
    if (const int removed = remove_stale_temporaries(run_dir); removed > 0) {
      spdlog::info("removed {} temporary file(s) or folder(s) a killed run left in {}", removed, run_dir.string());
    }
    const fs::path resolved = run_dir / kResolvedConfigFile;
    if (!fs::exists(resolved)) write_text_atomically(resolved, config_to_yaml(config));
    manifest.emplace(run_dir / kManifestFile);
    spdlog::info("{} run in {}: stages {}{}", config.pipeline, run_dir.string(),
                 selection.stages.empty() ? stage_names(stages) : fmt::format("{}", fmt::join(selection.stages, ", ")),
                 group != nullptr ? fmt::format(", a job of {} processes", group->world_size()) : "");
    for (const Stage& stage : stages) {
      if (!selected.count(stage.name)) continue;
      if (is_finished(run_dir, stage.name)) {
        spdlog::info("stage {}: finished earlier, skipped (delete {} to run it again)", stage.name,
                     (run_dir / stage.name).string());
        continue;
      }
      to_run.push_back(&stage);
    }
  } catch (const std::exception& error) {
    if (group != nullptr) group->broadcast_bytes(nlohmann::json{{"error", error.what()}}.dump(), 0);
    throw;
  }
  if (group != nullptr) {
    nlohmann::json names = nlohmann::json::array();
    for (const Stage* stage : to_run) names.push_back(stage->name);
    group->broadcast_bytes(nlohmann::json{{"stages", names}}.dump(), 0);
  }
  for (const Stage* stage : to_run) run_stage(*stage, run_dir, *manifest, group);
  spdlog::info("all selected stages of {} have finished", run_dir.string());
}

}  // namespace can
