// The launch variables, and a real job of two processes on localhost: this test binary
// starts itself twice as workers (DistributedWorker.Run, skipped unless
// CAN_DISTRIBUTED_WORKER names what to do), each joining through c10d's TCPStore and
// Gloo, and checks their exit statuses.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "can/chat_template.h"
#include "can/distributed.h"
#include "can/gradient_all_reduce.h"
#include "can/dpo_trainer.h"
#include "can/error.h"
#include "can/hf_checkpoint.h"
#include "can/model_weights.h"
#include "can/optimizer.h"
#include "can/training_checkpoint.h"
#include "can/preference_data.h"
#include "can/synthetic_world.h"
#include "can/tokenizer.h"
#include "json_files.h"
#include "free_port.h"
#include "temporary_directory.h"
#include "tiny_model.h"

extern char** environ;

namespace {

using can::testing::free_port;

using Variables = std::map<std::string, std::string>;

can::LaunchEnvironment read(const Variables& variables) {
  return can::read_launch_environment([&](const char* name) -> const char* {
    const auto found = variables.find(name);
    return found == variables.end() ? nullptr : found->second.c_str();
  });
}

std::string error_of(const Variables& variables) {
  try {
    read(variables);
  } catch (const can::Error& error) {
    return error.what();
  }
  return "(no error)";
}

const Variables kTorchrun = {{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node0"},
                             {"MASTER_PORT", "29500"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"}};

TEST(LaunchEnvironment, NoVariablesIsOneProcess) {
  const can::LaunchEnvironment launch = read({});
  EXPECT_EQ(launch.rank, 0);
  EXPECT_EQ(launch.world_size, 1);
  EXPECT_FALSE(launch.agent_store);
}

TEST(LaunchEnvironment, ReadsWhatTorchrunSets) {
  const can::LaunchEnvironment launch = read(kTorchrun);
  EXPECT_EQ(launch.rank, 3);
  EXPECT_EQ(launch.world_size, 4);
  EXPECT_EQ(launch.local_rank, 1);
  EXPECT_EQ(launch.master_addr, "node0");
  EXPECT_EQ(launch.master_port, 29500);
  EXPECT_TRUE(launch.agent_store);
  Variables by_hand = kTorchrun;  // a scheduler or a shell sets no agent variable
  by_hand.erase("TORCHELASTIC_USE_AGENT_STORE");
  EXPECT_FALSE(read(by_hand).agent_store);
}

TEST(LaunchEnvironment, WrongOrPartialVariablesAreNamed) {
  Variables partial = kTorchrun;
  partial.erase("MASTER_PORT");
  partial.erase("LOCAL_RANK");
  EXPECT_NE(error_of(partial).find("LOCAL_RANK, MASTER_PORT missing"), std::string::npos) << error_of(partial);
  const std::vector<std::pair<std::string, std::string>> wrong = {
      {"RANK", "4"}, {"RANK", "-1"}, {"WORLD_SIZE", "0"}, {"WORLD_SIZE", "two"}, {"MASTER_PORT", "70000"},
      {"LOCAL_RANK", "1.5"}, {"TORCHELASTIC_USE_AGENT_STORE", "yes"}};
  for (const auto& [name, value] : wrong) {
    Variables variables = kTorchrun;
    variables[name] = value;
    const std::string message = error_of(variables);
    EXPECT_NE(message.find(name + "='" + value + "'"), std::string::npos) << message;
  }
}

// --- two processes ---------------------------------------------------------------------

// Starts this binary as worker `rank` of `world` doing `task` (in `folder`, when it has
// one); returns its pid.
pid_t start_worker(const std::string& task, int rank, int world, int port, const std::string& folder = "") {
  std::vector<std::string> environment;
  for (char** entry = environ; *entry != nullptr; ++entry) environment.emplace_back(*entry);
  for (const std::string& variable :
       {"CAN_DISTRIBUTED_WORKER=" + task, "RANK=" + std::to_string(rank), "WORLD_SIZE=" + std::to_string(world),
        "LOCAL_RANK=" + std::to_string(rank), std::string("MASTER_ADDR=127.0.0.1"),
        "MASTER_PORT=" + std::to_string(port), std::string("OMP_NUM_THREADS=1"), "CAN_DISTRIBUTED_FOLDER=" + folder}) {
    environment.push_back(variable);
  }
  std::vector<char*> envp;
  for (std::string& variable : environment) envp.push_back(variable.data());
  envp.push_back(nullptr);
  std::string program = "/proc/self/exe", filter = "--gtest_filter=DistributedWorker.Run";
  char* argv[] = {program.data(), filter.data(), nullptr};
  pid_t pid = 0;
  EXPECT_EQ(::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()), 0);
  return pid;
}

// The worker's exit status, or -1 when it is still running after `limit` (it is then killed).
int wait_for(pid_t pid, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(Distributed, BucketsAreConsecutiveRunsOfOneDtypeWithinTheByteLimit) {
  // float32 of 40, 40, 24 and 100 bytes, then a float64 of 16 and a float32 of 8. With a
  // limit of 80 bytes: [40 + 40] (the 24 would make 104), [24] (the 100 would make 124),
  // [100] (alone, over the limit), [float64], [the float32 after the dtype change].
  const auto f32 = [](int64_t n) { return torch::zeros({n}, torch::kFloat32); };
  const std::vector<at::Tensor> tensors = {f32(10), f32(10), f32(6), f32(25), torch::zeros({2}, torch::kFloat64), f32(2)};
  using Ranges = std::vector<std::pair<size_t, size_t>>;
  EXPECT_EQ(can::bucket_ranges(tensors, 80), (Ranges{{0, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 6}}));
  EXPECT_EQ(can::bucket_ranges(tensors, 1 << 20), (Ranges{{0, 4}, {4, 5}, {5, 6}}));
  EXPECT_EQ(can::bucket_ranges(tensors, 1), (Ranges{{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 6}}));
  EXPECT_TRUE(can::bucket_ranges({}, 80).empty());
}

TEST(Distributed, TwoProcessesSumBroadcastAndMeetOverGloo) {
  const int port = free_port();
  ASSERT_GT(port, 0);
  const pid_t first = start_worker("collectives", 0, 2, port);
  const pid_t second = start_worker("collectives", 1, 2, port);
  EXPECT_EQ(wait_for(first, std::chrono::seconds(60)), 0) << "rank 0; its output is above";
  EXPECT_EQ(wait_for(second, std::chrono::seconds(60)), 0) << "rank 1; its output is above";
}

TEST(Distributed, ARankWhoseOthersNeverComeFailsWithinItsTimeout) {
  const int port = free_port();
  ASSERT_GT(port, 0);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(wait_for(start_worker("alone", 0, 2, port), std::chrono::seconds(60)), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

// One DPO epoch of a tiny model on the synthetic world's pairs: the folder holds the
// tokenizer, the initial model and the pairs; `output` gets the run.
can::TrainingSummary train_dpo_in(const std::filesystem::path& folder, const std::filesystem::path& output,
                                  int64_t micro_batch_size, const can::ProcessGroup* group,
                                  bool shard_optimizer = false, bool activation_checkpointing = false) {
  const can::Tokenizer tokenizer = can::Tokenizer::load((folder / "tokenizer.model").string());
  can::LlamaForCausalLM model = can::load_causal_lm((folder / "initial").string());
  auto pairs = can::read_preference_pairs(folder / "pairs_train.jsonl");
  const std::vector<can::PreferencePair> eval(pairs.begin() + 37, pairs.end());  // 7, in batches of the micro-batch
  pairs.resize(37);
  can::TrainingOptions options;
  options.epochs = 1;
  options.micro_batch_size = micro_batch_size;
  options.gradient_accumulation_steps = 2;
  options.learning_rate = 1e-3;
  options.max_grad_norm = 0.05;  // below every update's norm: clipping uses the job's norm
  options.warmup_steps = 2;
  options.log_every = 1;
  options.save_every = 0;
  options.seed = 5;
  options.max_length = 96;
  options.output_dir = output;
  options.process_group = group;
  options.shard_optimizer = shard_optimizer;
  options.activation_checkpointing = activation_checkpointing;
  can::DpoTrainingOptions dpo;
  return can::train_dpo(model, tokenizer, can::ChatTemplate(), pairs, eval, options, dpo);
}

// The largest relative difference between two folders' tensors (max |a − b| / max |b| per tensor).
double largest_relative_difference(const std::map<std::string, at::Tensor>& actual,
                                   const std::map<std::string, at::Tensor>& expected) {
  EXPECT_EQ(actual.size(), expected.size());
  double worst = 0;
  for (const auto& [name, tensor] : expected) {
    const at::Tensor difference = (actual.at(name) - tensor).abs().max() / tensor.abs().max().clamp_min(1e-12);
    worst = std::max(worst, difference.item<double>());
  }
  return worst;
}

// The AdamW moments in a run's last checkpoint, by parameter name ("exp_avg:" and "exp_avg_sq:" prefixes).
std::map<std::string, at::Tensor> checkpoint_moments(const std::filesystem::path& folder,
                                                     const std::filesystem::path& output) {
  can::LlamaForCausalLM model = can::load_causal_lm((folder / "initial").string());
  auto optimizer = can::make_adamw(model->named_parameters(), {});
  can::load_optimizer_state(*optimizer, can::latest_training_checkpoint(output) / "optimizer.pt");
  std::map<std::string, at::Tensor> moments;
  for (const auto& parameter : model->named_parameters()) {
    const auto& state = static_cast<const torch::optim::AdamWParamState&>(
        *optimizer->state().at(parameter.value().unsafeGetTensorImpl()));
    moments["exp_avg:" + parameter.key()] = state.exp_avg();
    moments["exp_avg_sq:" + parameter.key()] = state.exp_avg_sq();
    moments["step:" + parameter.key()] = torch::tensor(static_cast<double>(state.step()));
  }
  return moments;
}

TEST(Distributed, DpoOnTwoRanksEqualsOneProcessWithTheSameJobBatch) {
  const can::testing::TemporaryDirectory folder;
  can::WorldOptions world;
  world.num_train_prompts = 44;  // 37 to train on (the epoch's last job micro-batch is short: rank 1 gets none of it),
                                 // 7 held out (the trainer's evaluation, its batches shared by the ranks)
  world.num_test_prompts = 2;
  can::write_world(world, folder.path());
  can::TokenizerTrainOptions tokenizer;
  tokenizer.input_file = (folder.path() / "corpus.txt").string();
  tokenizer.model_prefix = (folder.path() / "tokenizer").string();
  tokenizer.vocab_size = 400;
  can::Tokenizer::train(tokenizer);
  torch::manual_seed(3);
  can::LlamaConfig config = can::testing::tiny_llama_config(400);
  can::save_causal_lm(can::LlamaForCausalLM(config), (folder.path() / "initial").string());

  // Three jobs of two ranks: unsharded (the all-reduce overlapping backward), with sharded
  // optimizer state (ZeRO stage 1), and unsharded with activation checkpointing (the
  // gradients then come from the backward that recomputes each layer).
  const std::vector<const char*> jobs = {"dpo", "dpo-sharded", "dpo-checkpointed"};
  std::vector<pid_t> workers;
  for (const char* task : jobs) {
    const int port = free_port();
    ASSERT_GT(port, 0);
    workers.push_back(start_worker(task, 0, 2, port, folder.path().string()));
    workers.push_back(start_worker(task, 1, 2, port, folder.path().string()));
  }
  // Meanwhile, one process with the job's micro-batch (2 ranks × 3 pairs).
  const can::TrainingSummary single = train_dpo_in(folder.path(), folder.path() / "single", 6, nullptr);
  for (const pid_t worker : workers) ASSERT_EQ(wait_for(worker, std::chrono::seconds(180)), 0) << "output above";

  const auto expected = can::load_checkpoint_tensors(folder.path() / "single" / "model");
  const auto initial = can::load_checkpoint_tensors(folder.path() / "initial");
  for (const char* job : jobs) {
    EXPECT_FALSE(std::filesystem::exists(folder.path() / job / "rank-1" / "model")) << job << ": rank 0 alone writes";
    const auto actual = can::load_checkpoint_tensors(folder.path() / job / "rank-0" / "model");
    EXPECT_LE(largest_relative_difference(actual, expected), 1e-5) << job << ": largest relative difference";
    EXPECT_GT((actual.at("lm_head.weight") - initial.at("lm_head.weight")).abs().max().item<double>(), 1e-4)
        << "training moved the weights";
    // Each update's loss and gradient norm (the job's, from the owners' parts when sharded).
    const auto lines = can::testing::read_json_lines(folder.path() / job / "rank-0" / "metrics.jsonl");
    const auto single_lines = can::testing::read_json_lines(folder.path() / "single" / "metrics.jsonl");
    ASSERT_EQ(lines.size(), single_lines.size());
    for (size_t i = 0; i < lines.size(); ++i) {
      for (const char* metric : {"loss", "grad_norm", "eval_loss", "eval_rewards/accuracies"}) {
        if (!single_lines[i].contains(metric)) continue;  // evaluation: at the end only
        ASSERT_TRUE(lines[i].contains(metric)) << job << ", update " << i + 1 << ": " << metric;
        const double expected_value = single_lines[i].at(metric).get<double>();
        EXPECT_NEAR(lines[i].at(metric).get<double>(), expected_value, 1e-5 * expected_value)
            << job << ", update " << i + 1 << ": " << metric;
      }
    }
    // The checkpoint's optimizer state (gathered onto rank 0 when sharded) is one process's.
    EXPECT_LE(largest_relative_difference(checkpoint_moments(folder.path(), folder.path() / job / "rank-0"),
                                          checkpoint_moments(folder.path(), folder.path() / "single")),
              1e-4)
        << job << ": AdamW's moments";
  }
  EXPECT_EQ(single.steps, 4);  // ceil(ceil(37 / 6) / 2)
  EXPECT_TRUE(single.eval_metrics.count("eval_loss"));
}

// What the workers do, in the processes the tests above start.
TEST(DistributedWorker, Run) {
  const char* task = std::getenv("CAN_DISTRIBUTED_WORKER");
  if (task == nullptr) GTEST_SKIP() << "run by the Distributed tests in processes of their own";
  const can::LaunchEnvironment launch = can::read_launch_environment(std::getenv);
  if (std::string(task) == "alone") {
    try {
      can::ProcessGroup::join(launch, std::chrono::seconds(3));
      FAIL() << "joined a job whose other rank never started";
    } catch (const can::Error& error) {
      EXPECT_NE(std::string(error.what()).find("rank 0: joining the store at 127.0.0.1"), std::string::npos)
          << error.what();
    }
    return;
  }
  const can::ProcessGroup group = can::ProcessGroup::join(launch, std::chrono::seconds(30));
  if (std::string(task).rfind("dpo", 0) == 0) {
    const std::filesystem::path folder = std::getenv("CAN_DISTRIBUTED_FOLDER");
    const bool sharded = std::string(task) == "dpo-sharded";
    const bool checkpointed = std::string(task) == "dpo-checkpointed";
    const can::TrainingSummary summary = train_dpo_in(folder, folder / task / ("rank-" + std::to_string(launch.rank)),
                                                      3, &group, sharded, checkpointed);
    EXPECT_EQ(summary.steps, 4);
    return;
  }
  ASSERT_EQ(group.rank(), launch.rank);
  ASSERT_EQ(group.world_size(), 2);
  const double r = group.rank();
  // Buckets of 64 bytes: the float tensors share some, the [40] one is a bucket of its
  // own, the dtype changes start new ones; one tensor is not contiguous.
  std::vector<at::Tensor> tensors = {
      torch::full({3, 4}, r + 1.0),                              // 48 bytes
      torch::arange(3, torch::kFloat) * (r + 1.0),               // 12 bytes
      torch::full({40}, 2.0 * r),                                // 160 bytes
      torch::full({2}, r - 0.5, torch::kDouble),
      torch::full({5}, static_cast<int64_t>(10 * r + 1)),
      torch::arange(6, torch::kFloat).reshape({2, 3}).t() * (r + 1.0)};
  group.all_reduce_sum(tensors, /*bucket_bytes=*/64);
  EXPECT_TRUE(torch::equal(tensors[0], torch::full({3, 4}, 3.0)));              // 1 + 2
  EXPECT_TRUE(torch::equal(tensors[1], torch::arange(3, torch::kFloat) * 3.0));
  EXPECT_TRUE(torch::equal(tensors[2], torch::full({40}, 2.0)));                // 0 + 2
  EXPECT_TRUE(torch::equal(tensors[3], torch::full({2}, 0.0, torch::kDouble)));  // −0.5 + 0.5
  EXPECT_TRUE(torch::equal(tensors[4], torch::full({5}, int64_t{12})));          // 1 + 11
  EXPECT_TRUE(torch::equal(tensors[5], torch::arange(6, torch::kFloat).reshape({2, 3}).t() * 3.0));
  const at::Tensor from_one = torch::full({4}, r);
  group.broadcast({from_one}, 1);
  EXPECT_TRUE(torch::equal(from_one, torch::full({4}, 1.0)));
  group.barrier();

  // Bytes of different sizes (rank 1's empty), gathered and broadcast.
  const std::string mine = r == 0 ? std::string("rank zero\0!", 11) : std::string();
  EXPECT_EQ(group.all_gather_bytes(mine), (std::vector<std::string>{std::string("rank zero\0!", 11), ""}));
  EXPECT_EQ(group.broadcast_bytes(r == 1 ? "from one" : "ignored", 1), "from one");
  // Five units on two ranks: rank 0 computes 0, 2, 4 and rank 1 computes 1, 3; every
  // rank gets every unit's result in order, of any length (unit 3's is empty).
  std::vector<int64_t> computed;
  const auto results = can::run_sharded(&group, 5, [&](int64_t unit) {
    computed.push_back(unit);
    return std::vector<double>(static_cast<size_t>(unit == 3 ? 0 : unit + 1), unit + 0.25);
  });
  EXPECT_EQ(computed, r == 0 ? (std::vector<int64_t>{0, 2, 4}) : (std::vector<int64_t>{1, 3}));
  ASSERT_EQ(results.size(), 5u);
  for (int64_t unit = 0; unit < 5; ++unit) {
    EXPECT_EQ(results[unit], std::vector<double>(static_cast<size_t>(unit == 3 ? 0 : unit + 1), unit + 0.25)) << unit;
  }
  EXPECT_EQ(can::run_sharded(&group, 0, [](int64_t) { return std::vector<double>{1}; }).size(), 0u);

  // Gradients summed while backward runs: two layers in buckets of 100 bytes, one
  // tensor each (reverse registration order: the second layer's bias [3], its weight
  // [3, 8], the first's bias [8], its weight [8, 4]). Rank r's loss is (r + 1) × a sum,
  // over two backward passes (gradient accumulation, armed before the second); rank 1
  // leaves the second layer out, so its buckets (the first two) never start during rank
  // 1's backward, and the later ones wait for them: the order is every rank's.
  torch::manual_seed(1);
  torch::nn::Linear first(4, 8), second(8, 3);
  std::vector<at::Tensor> parameters;
  for (auto* layer : {&first, &second}) {
    for (const auto& parameter : (*layer)->parameters()) parameters.push_back(parameter);
  }
  const at::Tensor input = torch::randn({5, 4});
  auto loss = [&](bool with_second) {
    const at::Tensor hidden = torch::tanh(first(input));
    return (with_second ? second(hidden).sum() : torch::zeros({})) + hidden.sum();
  };
  auto gradients = [&](bool with_second) {  // one pass's gradients, zeros where none
    for (const at::Tensor& parameter : parameters) parameter.mutable_grad() = at::Tensor();
    loss(with_second).backward();
    std::vector<at::Tensor> grads;
    for (const at::Tensor& parameter : parameters) {
      grads.push_back(parameter.grad().defined() ? parameter.grad().clone() : torch::zeros_like(parameter));
    }
    for (const at::Tensor& parameter : parameters) parameter.mutable_grad() = at::Tensor();
    return grads;
  };
  const auto with_second = gradients(true), without_second = gradients(false);
  std::vector<at::Tensor> expected;  // the job's sums over 2 passes: 1 × rank 0's + 2 × rank 1's
  for (size_t k = 0; k < parameters.size(); ++k) expected.push_back(2 * (with_second[k] + 2 * without_second[k]));
  {
    can::GradientAllReduce gradient_sum(group, parameters, /*bucket_bytes=*/100);
    EXPECT_EQ(gradient_sum.bucket_count(), 4);
    for (int pass = 0; pass < 2; ++pass) {
      if (pass == 1) gradient_sum.arm();
      (loss(r == 0) * (r + 1)).backward();
      EXPECT_EQ(gradient_sum.started_buckets(), pass == 1 && r == 0 ? 4 : 0) << "pass " << pass;
    }
    gradient_sum.finish();
    for (size_t k = 0; k < parameters.size(); ++k) {
      EXPECT_TRUE(torch::allclose(parameters[k].grad(), expected[k], 1e-6, 1e-6)) << "parameter " << k;
    }
    // A second update, every gradient fresh: the state was reset.
    for (const at::Tensor& parameter : parameters) parameter.mutable_grad() = at::Tensor();
    gradient_sum.arm();
    (loss(true) * (r + 1)).backward();
    EXPECT_EQ(gradient_sum.started_buckets(), 4);
    gradient_sum.finish();
    EXPECT_TRUE(torch::allclose(parameters[3].grad(), 3 * with_second[3], 1e-6, 1e-6));
  }
  // The hooks are gone with it: a backward now sends nothing (a collective here would hang the test).
  loss(true).backward();
}

}  // namespace
