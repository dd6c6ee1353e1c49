// The shared training loop on a toy linear regression: exact resume after Ctrl-C,
// the NaN stop, checkpoint layout and pruning, gradient accumulation, schedule and
// metrics lines, evaluation.
#include "can/training_loop.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/hf_checkpoint.h"
#include "can/json_fields.h"
#include "can/json_lines.h"
#include "can/model_weights.h"
#include "can/training_checkpoint.h"
#include "json_files.h"
#include "temporary_directory.h"

namespace {

using can::testing::contains;
using can::testing::error_message;

namespace fs = std::filesystem;

// y = x·w + b with w, b learned; "linear.weight" is decayed, "linear.bias" is not.
struct ToyModel : torch::nn::Module {
  ToyModel() {
    torch::manual_seed(123);
    linear = register_module("linear", torch::nn::Linear(4, 1));
  }
  torch::nn::Linear linear{nullptr};
};

// 22 examples, a fixed noisy linear target.
struct ToyData {
  at::Tensor inputs;   // [22, 4]
  at::Tensor targets;  // [22, 1]
  ToyData() {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(7);
    inputs = torch::randn({22, 4}, generator);
    targets = inputs.matmul(torch::tensor({{1.0f}, {-2.0f}, {0.5f}, {3.0f}})) + 0.1 * torch::randn({22, 1}, generator);
  }
};

struct ToyRun {
  std::shared_ptr<ToyModel> model = std::make_shared<ToyModel>();
  ToyData data;
  int64_t calls = 0;  // compute_loss calls so far
  // Called with the number of the compute_loss call (1-based) and its loss; may change the loss.
  std::function<at::Tensor(int64_t call, at::Tensor loss)> on_call = [](int64_t, at::Tensor loss) { return loss; };

  can::TrainingTask task() {
    can::TrainingTask task;
    task.stage = "toy";
    task.model = model;
    task.num_examples = data.inputs.size(0);
    task.compute_loss = [this](const std::vector<int64_t>& indices) {
      const auto rows = torch::tensor(indices, torch::kLong);
      const auto predictions = model->linear(data.inputs.index_select(0, rows));
      can::MicroBatchLoss result;
      result.output.loss = on_call(++calls, (predictions - data.targets.index_select(0, rows)).pow(2).mean());
      result.output.metrics["prediction_mean"] = predictions.detach().mean();
      result.tokens = static_cast<int64_t>(indices.size());
      return result;
    };
    task.save_model = [this](const fs::path& directory) {
      can::save_checkpoint(directory, {{"architectures", {"Toy"}}}, can::named_tensors(*model));
    };
    return task;
  }
};

can::TrainingOptions toy_options(const fs::path& output_dir) {
  can::TrainingOptions options;
  options.epochs = 3;
  options.micro_batch_size = 3;
  options.gradient_accumulation_steps = 2;  // 8 micro-batches per epoch: 4 updates per epoch, 12 in all
  options.learning_rate = 0.05;
  options.weight_decay = 0.1;
  options.warmup_steps = 2;
  options.max_grad_norm = 2.0;
  options.log_every = 1;
  options.save_every = 4;
  options.seed = 5;
  options.output_dir = output_dir;
  return options;
}

// The last line of each step, as readers of a resumed metrics.jsonl do.
std::map<int64_t, nlohmann::json> last_line_per_step(const fs::path& output_dir) {
  std::map<int64_t, nlohmann::json> by_step;
  for (const auto& line : can::testing::read_json_lines(output_dir / "metrics.jsonl"))
    by_step[line["step"].get<int64_t>()] = line;
  return by_step;
}

TEST(TrainingLoop, RunInterruptedByCtrlCAndResumedReproducesEveryLossBitForBit) {
  can::testing::TemporaryDirectory uninterrupted_dir, interrupted_dir;
  ToyRun uninterrupted;
  const auto summary = can::run_training(uninterrupted.task(), toy_options(uninterrupted_dir.path()));
  EXPECT_EQ(summary.steps, 12);

  // Ctrl-C during the 15th micro-batch (update 8, mid-epoch 2): the update completes, is checkpointed, and
  // training stops with Interrupted.
  ToyRun interrupted;
  interrupted.on_call = [](int64_t call, at::Tensor loss) {
    if (call == 15) std::raise(SIGINT);
    return loss;
  };
  auto options = toy_options(interrupted_dir.path());
  options.save_every = 5;  // the interrupt, not the schedule, saves update 8
  try {
    can::run_training(interrupted.task(), options);
    FAIL() << "no Interrupted";
  } catch (const can::Interrupted& error) {
    EXPECT_NE(std::string(error.what()).find("interrupted (Ctrl-C) after update 8/12"), std::string::npos)
        << error.what();
  }
  EXPECT_EQ(can::latest_training_checkpoint(interrupted_dir.path()).filename(), "step-8");
  EXPECT_FALSE(fs::exists(interrupted_dir.path() / "model"));

  // A SIGKILL would have left lines after the checkpoint, the last one torn: the resumed run drops them.
  {
    std::ofstream after_checkpoint(interrupted_dir.path() / "metrics.jsonl", std::ios::app);
    after_checkpoint << R"({"stage": "toy", "step": 9, "loss": 123.0})" << "\n" << R"({"stage": "toy", "st)";
  }

  // A new process: other initial weights, which the checkpoint replaces.
  ToyRun resumed;
  {
    torch::NoGradGuard no_grad;
    resumed.model->linear->weight.fill_(9.0);
  }
  options.resume = true;
  const auto resumed_summary = can::run_training(resumed.task(), options);
  EXPECT_EQ(resumed_summary.steps, 12);
  EXPECT_EQ(resumed.calls, 24 - 16);  // updates 9..12 only

  int64_t previous_step = 0;
  for (const auto& line : can::testing::read_json_lines(interrupted_dir.path() / "metrics.jsonl")) {
    EXPECT_GE(line["step"].get<int64_t>(), previous_step) << line.dump();  // no step logged twice over a resume
    EXPECT_NE(line["loss"], 123.0) << line.dump();
    previous_step = line["step"].get<int64_t>();
  }
  const auto expected = last_line_per_step(uninterrupted_dir.path());
  const auto actual = last_line_per_step(interrupted_dir.path());
  ASSERT_EQ(expected.size(), 12u);
  ASSERT_EQ(actual.size(), 12u);
  for (int64_t step = 1; step <= 12; ++step) {
    for (const char* name : {"loss", "grad_norm", "learning_rate", "prediction_mean"}) {
      EXPECT_EQ(actual.at(step)[name].get<double>(), expected.at(step)[name].get<double>())
          << name << " at step " << step;
    }
  }
  EXPECT_TRUE(torch::equal(resumed.model->linear->weight, uninterrupted.model->linear->weight));
  EXPECT_TRUE(torch::equal(resumed.model->linear->bias, uninterrupted.model->linear->bias));
  // The loop put the previous (default) handler back.
  EXPECT_TRUE(std::signal(SIGINT, SIG_DFL) == SIG_DFL);
}

TEST(TrainingLoop, NonFiniteLossStopsNamingTheUpdateAndKeepsTheLastGoodCheckpoint) {
  can::testing::TemporaryDirectory output_dir;
  ToyRun run;
  run.on_call = [](int64_t call, at::Tensor loss) { return call == 11 ? loss * NAN : loss; };  // update 6
  const auto message = error_message([&] { can::run_training(run.task(), toy_options(output_dir.path())); });
  EXPECT_NE(message.find("toy: update 6 has a non-finite loss"), std::string::npos) << message;
  EXPECT_NE(message.find("step-4"), std::string::npos) << message;
  const auto checkpoint = can::latest_training_checkpoint(output_dir.path());
  EXPECT_EQ(checkpoint.filename(), "step-4");
  for (const auto& [name, tensor] : can::load_checkpoint_tensors(checkpoint)) {
    EXPECT_TRUE(torch::isfinite(tensor).all().item<bool>()) << name;
  }
  EXPECT_FALSE(fs::exists(output_dir.path() / "model"));
  // The update was not applied: the weights are still finite.
  EXPECT_TRUE(torch::isfinite(run.model->linear->weight).all().item<bool>());

  auto infinite = ToyRun();
  infinite.on_call = [](int64_t call, at::Tensor loss) { return call == 1 ? loss * INFINITY : loss; };
  can::testing::TemporaryDirectory other_dir;
  const auto first_update = error_message([&] { can::run_training(infinite.task(), toy_options(other_dir.path())); });
  EXPECT_NE(first_update.find("toy: update 1 has a non-finite loss (loss inf"), std::string::npos) << first_update;
  EXPECT_NE(first_update.find("No checkpoint was saved yet"), std::string::npos) << first_update;
}

TEST(TrainingLoop, KeepsTheNewestTwoCheckpointsAndWritesTheFinalModel) {
  can::testing::TemporaryDirectory output_dir;
  ToyRun run;
  auto options = toy_options(output_dir.path());
  options.save_every = 3;  // 3, 6, 9, 12
  const auto summary = can::run_training(run.task(), options);

  std::vector<std::string> entries;
  for (const auto& entry : fs::directory_iterator(output_dir.path() / "checkpoints")) {
    entries.push_back(entry.path().filename().string());
  }
  std::sort(entries.begin(), entries.end());
  EXPECT_EQ(entries, (std::vector<std::string>{"latest", "step-12", "step-9"}));
  EXPECT_EQ(can::read_text_file(output_dir.path() / "checkpoints" / "latest"), "step-12\n");
  for (const char* file : {"config.json", "model.safetensors", "optimizer.pt", "trainer_state.json"}) {
    EXPECT_TRUE(fs::exists(output_dir.path() / "checkpoints" / "step-9" / file)) << file;
  }
  const auto state = can::load_trainer_state(output_dir.path() / "checkpoints" / "step-9" / "trainer_state.json");
  EXPECT_EQ(state.step, 9);
  EXPECT_EQ(state.data.epoch, 2);
  EXPECT_EQ(state.data.position, 6);  // update 9 is the first of epoch 3: two micro-batches of 3

  EXPECT_EQ(summary.model_directory, output_dir.path() / "model");
  const auto weights = can::load_checkpoint_tensors(summary.model_directory);
  EXPECT_TRUE(torch::equal(weights.at("linear.weight"), run.model->linear->weight));
  EXPECT_EQ(can::read_json_file(summary.model_directory / "config.json")["architectures"][0], "Toy");

  // Running again into the same directory without resume would mix two runs.
  ToyRun again;
  const auto message = error_message([&] { can::run_training(again.task(), options); });
  EXPECT_NE(message.find("already holds checkpoints"), std::string::npos) << message;
  // Resuming a finished run trains no further.
  options.resume = true;
  EXPECT_EQ(can::run_training(again.task(), options).steps, 12);
  EXPECT_EQ(again.calls, 0);
}

TEST(TrainingLoop, AccumulatedMicroBatchesEqualOneBatchOfTheirSize) {
  // 22 examples: micro 3 × accumulation 2 gives updates of 6, 6, 6, 4 examples per epoch,
  // the same groups as micro 6 without accumulation (the shuffler's order depends on the seed only).
  can::testing::TemporaryDirectory accumulated_dir, whole_dir;
  ToyRun accumulated, whole;
  auto options = toy_options(accumulated_dir.path());
  options.save_every = 0;
  can::run_training(accumulated.task(), options);
  options.output_dir = whole_dir.path();
  options.micro_batch_size = 6;
  options.gradient_accumulation_steps = 1;
  can::run_training(whole.task(), options);
  EXPECT_EQ(accumulated.calls, 2 * whole.calls);
  EXPECT_TRUE(torch::allclose(accumulated.model->linear->weight, whole.model->linear->weight, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(accumulated.model->linear->bias, whole.model->linear->bias, 1e-5, 1e-6));
  const auto a = last_line_per_step(accumulated_dir.path());
  const auto b = last_line_per_step(whole_dir.path());
  for (int64_t step = 1; step <= 12; ++step) {
    EXPECT_NEAR(a.at(step)["loss"].get<double>(), b.at(step)["loss"].get<double>(), 1e-5) << step;
  }
}

TEST(TrainingLoop, MetricsLinesFollowTheScheduleAndCarryEvaluations) {
  can::testing::TemporaryDirectory output_dir;
  ToyRun run;
  auto options = toy_options(output_dir.path());
  options.log_every = 5;
  options.save_every = 0;
  options.eval_every = 4;
  options.learning_rate = 0.5;
  options.max_grad_norm = 0;  // measured, not clipped
  int evaluations = 0;
  auto task = run.task();
  task.evaluate = [&] {
    ++evaluations;
    EXPECT_FALSE(run.model->is_training());
    EXPECT_FALSE(torch::GradMode::is_enabled());
    return can::evaluate_in_batches(10, 4, [&](const std::vector<int64_t>& indices) {
      const auto rows = torch::tensor(indices, torch::kLong);
      can::LossOutput output;
      output.loss = (run.model->linear(run.data.inputs.index_select(0, rows)) - run.data.targets.index_select(0, rows))
                        .pow(2)
                        .mean();
      return output;
    });
  };
  const auto summary = can::run_training(task, options);
  EXPECT_EQ(evaluations, 3);  // updates 4, 8, 12

  // Lines at the log steps (5, 10), the evaluations (4, 8, 12) and the end.
  const auto lines = can::testing::read_json_lines(output_dir.path() / "metrics.jsonl");
  std::vector<int64_t> steps;
  for (const auto& line : lines) steps.push_back(line["step"].get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{4, 5, 8, 10, 12}));
  can::LearningRateSchedule schedule{0.5, 2, 12, can::LearningRateDecay::kCosine, 0.0};
  for (const auto& line : lines) {
    EXPECT_EQ(line["stage"], "toy");
    EXPECT_DOUBLE_EQ(line["learning_rate"].get<double>(), schedule.at(line["step"].get<int64_t>() - 1));
    EXPECT_GT(line["grad_norm"].get<double>(), 0.0);
    EXPECT_GT(line["tokens_per_second"].get<double>(), 0.0);
    EXPECT_EQ(line.contains("eval_loss"), line["step"].get<int64_t>() % 4 == 0) << line.dump();
  }
  EXPECT_DOUBLE_EQ(lines.back()["epoch"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(lines[1]["epoch"].get<double>(), 1.0 + 6.0 / 22.0);  // update 5: first of epoch 2

  // The final evaluation, by hand: mean squared error over the first 10 examples in batches 4, 4, 2.
  const auto predictions = run.model->linear(run.data.inputs.narrow(0, 0, 10)).detach();
  const auto errors = (predictions - run.data.targets.narrow(0, 0, 10)).pow(2).squeeze(1);
  const double expected =
      (errors.narrow(0, 0, 4).mean().item<double>() * 4 + errors.narrow(0, 4, 4).mean().item<double>() * 4 +
       errors.narrow(0, 8, 2).mean().item<double>() * 2) /
      10;
  EXPECT_NEAR(summary.eval_metrics.at("eval_loss"), expected, 1e-6);
  EXPECT_NEAR(lines.back()["eval_loss"].get<double>(), expected, 1e-6);
  // It learned: the held-out loss fell between the first and the last evaluation.
  EXPECT_LT(summary.eval_metrics.at("eval_loss"), 0.5 * lines.front()["eval_loss"].get<double>());
}

TEST(TrainingLoop, RejectsInvalidOptions) {
  can::testing::TemporaryDirectory output_dir;
  ToyRun run;
  auto options = toy_options(output_dir.path());
  options.micro_batch_size = 0;
  EXPECT_NE(error_message([&] { can::run_training(run.task(), options); }).find("micro_batch_size must be >= 1"),
            std::string::npos);
  options = toy_options(output_dir.path());
  options.warmup_steps = 13;
  EXPECT_THROW(can::run_training(run.task(), options), can::Error);
  options = toy_options("");
  EXPECT_NE(error_message([&] { can::run_training(run.task(), options); }).find("output_dir is not set"),
            std::string::npos);
}

}  // namespace
