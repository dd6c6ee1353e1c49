#include "can/training_loop.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "can/atomic_file.h"
#include "can/compute_counts.h"
#include "can/distributed.h"
#include "can/epoch_shuffler.h"
#include "can/gradient_all_reduce.h"
#include "can/hf_checkpoint.h"
#include "can/metrics_writer.h"
#include "can/model_weights.h"
#include "can/optimizer.h"
#include "can/progress.h"
#include "can/sharded_optimizer.h"
#include "can/runtime.h"
#include "can/trainer_state.h"
#include "can/training_checkpoint.h"

namespace can {

namespace fs = std::filesystem;

namespace {

// Set by the SIGINT handler, read at update boundaries. Lock-free, hence
// async-signal-safe.
std::atomic<bool> interrupt_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void request_interrupt(int) {
  // The first Ctrl-C asks for a checkpoint and a clean stop; a second one kills at once.
  if (interrupt_requested.exchange(true)) {
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
  }
}

// Installs request_interrupt for the loop's lifetime and restores the previous handler after.
class InterruptHandler {
 public:
  InterruptHandler() {
    interrupt_requested = false;
    previous_ = std::signal(SIGINT, request_interrupt);
  }
  ~InterruptHandler() { std::signal(SIGINT, previous_); }
  InterruptHandler(const InterruptHandler&) = delete;
  InterruptHandler& operator=(const InterruptHandler&) = delete;

 private:
  void (*previous_)(int);
};

void validate(const TrainingTask& task, const TrainingOptions& options) {
  check(!task.stage.empty(), "a training task needs a stage name");
  check(task.model != nullptr, "{}: training task has no model", task.stage);
  check(task.num_examples > 0, "{}: no training examples", task.stage);
  check(task.compute_loss && task.save_model, "{}: training task needs compute_loss and save_model", task.stage);
  check(!task.save_trained_weights == !task.load_trained_weights,
        "{}: a training task sets both save_trained_weights and load_trained_weights, or neither", task.stage);
  check(options.epochs >= 1, "{}: epochs must be >= 1, got {}", task.stage, options.epochs);
  check(options.max_steps >= 0, "{}: max_steps must be >= 0, got {}", task.stage, options.max_steps);
  check(options.micro_batch_size >= 1, "{}: micro_batch_size must be >= 1, got {}", task.stage,
        options.micro_batch_size);
  check(options.gradient_accumulation_steps >= 1, "{}: gradient_accumulation_steps must be >= 1, got {}", task.stage,
        options.gradient_accumulation_steps);
  check(options.max_grad_norm >= 0, "{}: max_grad_norm must be >= 0, got {}", task.stage, options.max_grad_norm);
  check(options.log_every >= 1, "{}: log_every must be >= 1, got {}", task.stage, options.log_every);
  check(options.eval_every >= 0 && options.save_every >= 0, "{}: eval_every and save_every must be >= 0, got {} and {}",
        task.stage, options.eval_every, options.save_every);
  check(!options.output_dir.empty(), "{}: output_dir is not set", task.stage);
}

double seconds_between(std::chrono::steady_clock::time_point begin, std::chrono::steady_clock::time_point end) {
  return std::chrono::duration<double>(end - begin).count();
}

std::string format_seconds(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s / 60) % 60);
  return fmt::format("{}m{:02}s", s / 60, s % 60);
}

// Metrics of the updates since the last metrics line.
struct MetricsWindow {
  int64_t updates = 0;
  double loss_sum = 0;   // of the updates' losses
  int64_t examples = 0;  // weights of metric_sums
  int64_t tokens = 0;
  std::map<std::string, at::Tensor> metric_sums;  // Σ micro-batch mean × its examples, on the device
  // Training started (again) after the last line's evaluation and checkpoint.
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();

  void add(const LossOutput& output, int64_t batch_examples) {
    for (const auto& [name, value] : output.metrics) {
      const auto weighted = value.detach() * static_cast<double>(batch_examples);
      auto& sum = metric_sums[name];
      sum = sum.defined() ? sum + weighted : weighted;
    }
    examples += batch_examples;
  }

  // Sums the window's examples, tokens and metric sums over the job's ranks, so that
  // means() gives the job's. `names`: every metric the task reports (a rank that had no
  // examples in this window adds zeros for them), the same on every rank.
  void sum_over(const ProcessGroup& group, const std::set<std::string>& names) {
    for (const std::string& name : names) {
      if (metric_sums.count(name) == 0) metric_sums[name] = torch::zeros({1}, torch::kDouble);
    }
    std::vector<at::Tensor> sums;
    for (auto& entry : metric_sums) sums.push_back(entry.second = entry.second.to(torch::kCPU, torch::kDouble).reshape({1}));
    const at::Tensor counts = torch::tensor({static_cast<double>(examples), static_cast<double>(tokens)},
                                            torch::kDouble);
    sums.push_back(counts);
    group.all_reduce_sum(sums);
    examples = static_cast<int64_t>(counts[0].item<double>());
    tokens = static_cast<int64_t>(counts[1].item<double>());
  }

  // One device read for all metrics.
  std::map<std::string, double> means() const {
    std::map<std::string, double> result;
    if (metric_sums.empty()) return result;
    std::vector<at::Tensor> sums;
    for (const auto& entry : metric_sums) sums.push_back(entry.second.to(torch::kDouble).reshape({}));
    const auto host = torch::stack(sums).cpu();
    const auto* data = host.data_ptr<double>();
    size_t i = 0;
    for (const auto& entry : metric_sums) result[entry.first] = data[i++] / static_cast<double>(examples);
    return result;
  }
};

// Whether every parameter is finite: a checkpoint must never hold NaN or Inf.
bool all_finite(const std::vector<at::Tensor>& parameters) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> flags;
  for (const auto& parameter : parameters) flags.push_back(torch::isfinite(parameter).all().reshape({1}));
  return torch::cat(flags).all().item<bool>();
}

// What the task's loss averages over in the examples at `indices`.
int64_t loss_items(const TrainingTask& task, const std::vector<int64_t>& indices) {
  return task.loss_items ? task.loss_items(indices) : static_cast<int64_t>(indices.size());
}

}  // namespace

int64_t total_training_steps(int64_t num_examples, const TrainingOptions& options) {
  if (options.max_steps > 0) return options.max_steps;
  const int64_t world = options.process_group != nullptr ? options.process_group->world_size() : 1;
  const int64_t micro_batches = batches_per_epoch(num_examples, options.micro_batch_size * world);
  return options.epochs * batches_per_epoch(micro_batches, options.gradient_accumulation_steps);
}

std::map<std::string, double> evaluate_in_batches(
    int64_t num_examples, int64_t batch_size, const std::function<LossOutput(const std::vector<int64_t>&)>& compute,
    const ProcessGroup* group) {
  check(num_examples > 0 && batch_size > 0, "evaluation needs examples and a positive batch size, got {} and {}",
        num_examples, batch_size);
  const int64_t rank = group != nullptr ? group->rank() : 0;
  const int64_t world = group != nullptr ? group->world_size() : 1;
  MetricsWindow totals;
  for (int64_t begin = rank * batch_size; begin < num_examples; begin += world * batch_size) {  // this rank's batches
    std::vector<int64_t> indices;
    for (int64_t i = begin; i < std::min(num_examples, begin + batch_size); ++i) indices.push_back(i);
    LossOutput output = compute(indices);
    output.metrics["loss"] = output.loss.detach();
    totals.add(output, static_cast<int64_t>(indices.size()));
  }
  if (group != nullptr) {  // the job's sums, over every metric any rank computed
    std::set<std::string> names;
    for (const auto& entry : totals.metric_sums) names.insert(entry.first);
    for (const std::string& listed : group->all_gather_bytes(nlohmann::json(names).dump())) {
      for (const auto& name : nlohmann::json::parse(listed)) names.insert(name.get<std::string>());
    }
    totals.sum_over(*group, names);
  }
  return totals.means();
}

TrainingSummary run_training(const TrainingTask& task, const TrainingOptions& options) {
  validate(task, options);
  const std::string& stage = task.stage;
  torch::nn::Module& model = *task.model;
  const int64_t total_steps = total_training_steps(task.num_examples, options);
  const ProcessGroup* group = options.process_group;
  const int64_t rank = group != nullptr ? group->rank() : 0;
  const int64_t world = group != nullptr ? group->world_size() : 1;
  const bool writer = rank == 0;  // logs, metrics, checkpoints and the model
  // So that every rank has a part of the first update, and with it the task's metric names.
  check(task.num_examples >= options.micro_batch_size * world,
        "{}: {} training examples are fewer than one micro-batch of the job ({} ranks × micro_batch_size {})", stage,
        task.num_examples, world, options.micro_batch_size);
  std::set<std::string> metric_names;  // of the task, from its first micro-batch

  AdamWConfig adamw;
  adamw.weight_decay = options.weight_decay;
  auto optimizer = make_adamw(model.named_parameters(), adamw);
  const auto parameters = optimizer_parameters(*optimizer);
  check(!options.shard_optimizer || group != nullptr,
        "{}: shard_optimizer needs a job of several processes (distributed.shard_optimizer)", stage);
  std::optional<ShardedOptimizer> shards;  // ZeRO stage 1: this rank's share of AdamW's moments
  if (options.shard_optimizer) shards.emplace(*group, parameters);
  // Unsharded, in a job: the gradients' all-reduce overlapped with the update's last backward.
  std::optional<GradientAllReduce> gradient_sum;
  if (group != nullptr && !shards) gradient_sum.emplace(*group, parameters);
  LearningRateSchedule schedule;
  schedule.peak_lr = options.learning_rate;
  schedule.warmup_steps = options.warmup_steps;
  schedule.total_steps = total_steps;
  schedule.decay = options.decay;
  schedule.min_lr = options.min_lr;
  schedule.at(0);  // validates the schedule before any work
  EpochShuffler shuffler(task.num_examples, options.seed);

  int64_t step = 0;
  fs::path last_checkpoint = latest_training_checkpoint(options.output_dir);
  if (!last_checkpoint.empty()) {
    check(options.resume,
          "{}: '{}' already holds checkpoints (latest: {}); resume to continue that run, or choose another "
          "output directory",
          stage, options.output_dir.string(), last_checkpoint.string());
    const auto load_all_parameters = [&](const fs::path& folder) {
      load_named_tensors(model, load_checkpoint_tensors(folder), folder.string());
    };
    const TrainerState state = load_training_checkpoint(
        last_checkpoint, task.load_trained_weights ? task.load_trained_weights : load_all_parameters, *optimizer);
    restore_trainer_state(state, shuffler, world);
    if (shards) shards->drop_moments_of_others(*optimizer);
    step = state.step;
    check(step <= total_steps, "{}: checkpoint '{}' is at update {}, beyond this run's {} updates", stage,
          last_checkpoint.string(), step, total_steps);
    spdlog::info("{}: resuming from '{}' at update {}/{}", stage, last_checkpoint.string(), step, total_steps);
  } else {
    if (options.resume)
      spdlog::info("{}: no checkpoint in '{}', starting from the beginning", stage, options.output_dir.string());
    set_seed(options.seed + static_cast<uint64_t>(rank));
  }
  if (group != nullptr) group->broadcast(parameters, 0);

  std::optional<MetricsWriter> metrics_writer;
  if (writer) metrics_writer.emplace(options.output_dir / "metrics.jsonl", step);
  InterruptHandler interrupt_handler;
  ProgressBar progress(stage, writer ? total_steps - step : 0, "updates");
  const auto loop_start = std::chrono::steady_clock::now();
  const int64_t first_step = step;
  const double max_grad_norm =
      options.max_grad_norm > 0 ? options.max_grad_norm : std::numeric_limits<double>::infinity();
  TrainingSummary summary;
  MetricsWindow window;
  double grad_norm = 0, learning_rate = 0;
  const auto last_good_checkpoint = [&] {
    return last_checkpoint.empty() ? std::string("No checkpoint was saved yet")
                                   : fmt::format("The last good checkpoint is '{}'", last_checkpoint.string());
  };
  model.train();

  while (step < total_steps) {
    learning_rate = schedule.at(step);
    set_learning_rate(*optimizer, learning_rate);
    optimizer->zero_grad();

    // The update's micro-batches of the job, never past the end of the epoch, and this
    // rank's part of each (none at an epoch's end when the job's micro-batch runs short).
    std::vector<std::vector<int64_t>> micro_batches;
    int64_t update_items = 0;  // what the loss averages over, in the job's micro-batches
    for (int64_t k = 0; k < options.gradient_accumulation_steps; ++k) {
      const std::vector<int64_t> job_batch = shuffler.next_batch(options.micro_batch_size * world);
      update_items += loss_items(task, job_batch);
      const auto begin = std::min<int64_t>(rank * options.micro_batch_size, static_cast<int64_t>(job_batch.size()));
      const auto end = std::min<int64_t>(begin + options.micro_batch_size, static_cast<int64_t>(job_batch.size()));
      if (begin < end) micro_batches.emplace_back(job_batch.begin() + begin, job_batch.begin() + end);
      if (shuffler.state().position == 0) break;
    }
    bool job_interrupted = false;  // in a job: a rank was asked to stop
    at::Tensor update_loss;  // [] detached, on the device: Σ this rank's weighted losses (none without examples)
    for (size_t m = 0; m < micro_batches.size(); ++m) {
      const std::vector<int64_t>& indices = micro_batches[m];
      const MicroBatchLoss result = task.compute_loss(indices);
      const double weight =
          static_cast<double>(loss_items(task, indices)) / static_cast<double>(std::max<int64_t>(1, update_items));
      if (gradient_sum && m + 1 == micro_batches.size()) gradient_sum->arm();  // this backward's gradients are final
      (result.output.loss * weight).backward();
      const auto weighted_loss = result.output.loss.detach() * weight;
      update_loss = update_loss.defined() ? update_loss + weighted_loss : weighted_loss;
      window.add(result.output, static_cast<int64_t>(indices.size()));
      for (const auto& entry : result.output.metrics) metric_names.insert(entry.first);
      window.tokens += result.tokens;
    }

    if (group != nullptr) {  // the job's gradient and loss: sums of the ranks' weighted parts
      if (shards) {
        for (const auto& parameter : parameters) {
          if (!parameter.grad().defined()) parameter.mutable_grad() = torch::zeros_like(parameter);
        }
        shards->reduce_gradients();  // each gradient's sum on its owner alone
      } else {
        gradient_sum->finish();  // the buckets backward did not start, then every bucket's sums
      }
      // One copy to the host per update, where the loss is read anyway.
      update_loss = update_loss.defined() ? update_loss.to(torch::kCPU, torch::kDouble) : torch::zeros({}, torch::kDouble);
      // Ctrl-C on any rank stops every rank after this same update.
      const at::Tensor interrupts = torch::tensor(interrupt_requested ? 1.0 : 0.0, torch::kDouble);
      group->all_reduce_sum({update_loss, interrupts});
      job_interrupted = interrupts.item<double>() > 0;
    }
    grad_norm = shards ? shards->clip_gradients(max_grad_norm) : clip_gradient_norm(parameters, max_grad_norm);
    const double loss = update_loss.item<double>();
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
      optimizer->zero_grad();
      fail(
          "{}: update {} has a non-finite {} (loss {}, grad_norm {}); training stopped before applying it. {}. "
          "Check the data and lower the learning rate, then resume.",
          stage, step + 1, std::isfinite(loss) ? "grad_norm" : "loss", loss, grad_norm, last_good_checkpoint());
    }
    adamw_step(*optimizer);  // sharded: the parameters this rank owns, the only ones with gradients
    if (shards) shards->share_parameters();
    if (writer) count_optimizer_update();  // one of the job's, counted once
    const auto trained_until = std::chrono::steady_clock::now();  // tokens/s leaves out evaluation and saving
    ++step;
    window.updates += 1;
    window.loss_sum += loss;
    if (writer) progress.advance(1, fmt::format("loss {:.4f}", loss));

    const bool final_step = step == total_steps;
    const bool interrupted = (group != nullptr ? job_interrupted : interrupt_requested.load()) && !final_step;
    const bool evaluate_now =
        task.evaluate && (final_step || (options.eval_every > 0 && step % options.eval_every == 0));
    const bool save_now = final_step || interrupted || (options.save_every > 0 && step % options.save_every == 0);

    if (evaluate_now) {
      model.eval();
      std::map<std::string, double> evaluation;
      {
        torch::NoGradGuard no_grad;
        evaluation = task.evaluate();
      }
      model.train();
      summary.eval_metrics.clear();
      for (const auto& [name, value] : evaluation) summary.eval_metrics["eval_" + name] = value;
    }
    if (step % options.log_every == 0 || evaluate_now || save_now) {
      if (group != nullptr) window.sum_over(*group, metric_names);
      const double window_seconds = seconds_between(window.start, trained_until);
      const double loop_seconds = seconds_between(loop_start, std::chrono::steady_clock::now());
      std::map<std::string, double> line = window.means();
      line["loss"] = window.loss_sum / static_cast<double>(window.updates);
      line["grad_norm"] = grad_norm;
      line["learning_rate"] = learning_rate;
      line["epoch"] = static_cast<double>(shuffler.state().epoch) +
                      static_cast<double>(shuffler.state().position) / static_cast<double>(task.num_examples);
      line["tokens_per_second"] = window_seconds > 0 ? static_cast<double>(window.tokens) / window_seconds : 0.0;
      summary.train_metrics = line;
      if (evaluate_now) line.insert(summary.eval_metrics.begin(), summary.eval_metrics.end());
      const double eta =
          loop_seconds / static_cast<double>(step - first_step) * static_cast<double>(total_steps - step);
      if (writer) {
        metrics_writer->write(stage, step, line);
        progress.clear();
        spdlog::info("{} update {}/{}: loss {:.4f}, lr {:.3g}, grad_norm {:.3f}, {:.0f} tokens/s, ETA {}{}", stage, step,
                   total_steps, line["loss"], learning_rate, grad_norm, line["tokens_per_second"], format_seconds(eta),
                   evaluate_now && summary.eval_metrics.count("eval_loss")
                         ? fmt::format(", eval_loss {:.4f}", summary.eval_metrics.at("eval_loss"))
                         : "");
      }
      window = MetricsWindow();
    }
    if (save_now) {
      check(all_finite(parameters), "{}: the weights are not finite after update {}; not saving them. {}.", stage, step,
            last_good_checkpoint());
      if (shards) shards->gather_moments(*optimizer);  // one checkpoint, in the unsharded format
      if (writer) {
        last_checkpoint = save_training_checkpoint(
            options.output_dir, step, task.save_trained_weights ? task.save_trained_weights : task.save_model,
            *optimizer, capture_trainer_state(step, shuffler, world));
      }
      if (shards) shards->drop_moments_of_others(*optimizer);
      if (group != nullptr) group->barrier();
    }
    if (window.updates == 0) window.start = std::chrono::steady_clock::now();
    if (interrupted) {
      progress.finish();
      throw Interrupted(fmt::format(
          "{}: interrupted (Ctrl-C) after update {}/{}; checkpoint saved to '{}'. Run again with resume to continue.",
          stage, step, total_steps, last_checkpoint.string()));
    }
  }
  progress.finish();

  summary.steps = step;
  summary.model_directory = options.output_dir / "model";
  if (writer) {
    write_directory_atomically(summary.model_directory, task.save_model);
    spdlog::info("{}: {} updates done, model written to '{}'", stage, step, summary.model_directory.string());
  }
  if (group != nullptr) group->barrier();
  return summary;
}

}  // namespace can
