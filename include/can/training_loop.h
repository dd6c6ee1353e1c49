// The training loop that the SFT, score-model and DPO trainers share: AdamW with
// decay / no-decay groups (optimizer.h), linear warm-up then cosine or constant
// learning rate (lr_schedule.h), gradient accumulation and global-norm clipping,
// metrics to <output_dir>/metrics.jsonl and the console (progress bar; an info log
// line every log_every updates with loss, tokens/s and ETA), evaluation every K
// updates, checkpoints every K updates and at the end (training_checkpoint.h),
// exact resumption, a stop on a non-finite loss or gradient, and Ctrl-C.
//
// One update draws gradient_accumulation_steps micro-batches from the epoch's
// shuffled order (epoch_shuffler.h); an update never spans two epochs, so the last
// update of an epoch may have fewer micro-batches. Micro-batch losses are weighted
// by their share of the update's items (TrainingTask::loss_items: examples, or SFT's
// response tokens), so an update's loss is the mean over all its items whatever the
// micro-batch size, accumulation or number of ranks (as transformers' Trainer with
// num_items_in_batch). Updates per epoch:
// ceil(ceil(num_examples / micro_batch_size) / gradient_accumulation_steps).
//
// The device is read once per update: the gradient norm (and with it the loss),
// which decides whether the update may be applied. Metrics stay tensors until a
// metrics line is written.
//
// Data parallelism (TrainingOptions::process_group): each micro-batch is drawn for the
// whole job, micro_batch_size × world_size examples from the one order the seed
// decides, and rank r computes its r-th micro_batch_size of them; the gradients are
// summed across ranks in buckets after the update's backward passes (each rank's loss
// weighted by its share of the job's examples), so the update equals that of one
// process with micro_batch_size × world_size. Loss, gradient norm, clipping, the
// non-finite stop and metrics use the job's values, identical on every rank. Rank 0
// alone logs, writes metrics, checkpoints and the model; the others wait for it.
// With shard_optimizer, ZeRO stage 1 (sharded_optimizer.h): gradients are reduced onto
// each parameter's owner, which updates it and shares it; the same parameters.
// Every rank starts from rank 0's parameters; dropout draws from seed + rank. Ctrl-C
// on any rank stops every rank after the same update, with rank 0's checkpoint.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "can/error.h"
#include "can/losses.h"
#include "can/lr_schedule.h"

namespace torch::nn {
class Module;
}

namespace can {

class ProcessGroup;

// The options of one training run; can-train's sft, reward_model, cost_model and
// dpo sections (config.h) are this struct, and their defaults are these.
struct TrainingOptions {
  int64_t epochs = 3;                       // passes over the training examples
  int64_t micro_batch_size = 8;             // examples per forward and backward pass
  int64_t gradient_accumulation_steps = 1;  // micro-batches per optimizer update
  double learning_rate = 5e-4;              // peak, after warm-up
  double weight_decay = 0.0;                // AdamW's, on matrices and embeddings only
  int64_t warmup_steps = 100;               // updates of linear warm-up from 0
  LearningRateDecay decay = LearningRateDecay::kCosine;
  double min_lr = 0.0;               // floor of the cosine decay
  double max_grad_norm = 1.0;        // global L2 clipping; 0: the norm is logged but not clipped
  int64_t log_every = 10;            // updates between metrics lines (also written at evaluations and checkpoints)
  int64_t eval_every = 0;            // updates between evaluations; 0: at the end only
  int64_t save_every = 100;          // updates between checkpoints; 0: at the end only
  uint64_t seed = 0;                 // the data order, and torch's CPU generator at a fresh start
  int64_t max_length = 512;          // tokens per sequence, prompt + response (the trainers' truncation)
  // Recompute each decoder layer in backward instead of keeping its activations;
  // the trainers (sft_trainer.h, score_model_trainer.h, dpo_trainer.h) set it on the model.
  bool activation_checkpointing = false;
  // Optimizer updates of the run when > 0, instead of epochs × updates per epoch: the data
  // order runs on through as many epochs as that takes (Hugging Face's max_steps). Not a
  // config key: the primal-dual pipeline's rounds set it (primal_dual.updates_per_round).
  int64_t max_steps = 0;
  // The job whose ranks train together (distributed.h); null: this process alone. Not a config key.
  const ProcessGroup* process_group = nullptr;
  // In a job, each rank keeps AdamW's moments of 1/N of the parameters (ZeRO stage 1,
  // sharded_optimizer.h). Not a trainer key: distributed.shard_optimizer sets it.
  bool shard_optimizer = false;
  bool resume = false;               // continue from <output_dir>/checkpoints/latest when it exists
  std::filesystem::path output_dir;  // metrics.jsonl, checkpoints/, model/
};

// What the trainer computes for one micro-batch.
struct MicroBatchLoss {
  LossOutput output;   // the mean loss over the micro-batch's examples, and its metrics
  int64_t tokens = 0;  // real (not padding) tokens processed, for tokens/s
};

struct TrainingTask {
  std::string stage;  // names the run in metrics.jsonl and logs: "sft", "reward_model", "cost_model", "dpo"
  std::shared_ptr<torch::nn::Module> model;  // trained in place: the parameters with requires_grad
  int64_t num_examples = 0;                  // training examples, visited as indices [0, num_examples)
  // The forward pass on the training examples at `indices` (at most micro_batch_size); the loop runs backward.
  std::function<MicroBatchLoss(const std::vector<int64_t>& indices)> compute_loss;
  // How many items compute_loss's mean loss averages over for the examples at `indices`
  // (any number of them): SFT's response tokens. Empty: the examples themselves.
  std::function<int64_t(const std::vector<int64_t>& indices)> loss_items;
  // Metrics on held-out data (evaluate_in_batches), run in eval mode without
  // gradients; logged with an "eval_" prefix, as TRL does. Empty: no evaluation.
  std::function<std::map<std::string, double>()> evaluate;
  // Writes config.json and model.safetensors (Hugging Face layout) into a folder.
  std::function<void(const std::filesystem::path& directory)> save_model;
  // What a checkpoint holds of the model when only some parameters train (LoRA:
  // the adapters), written into and read back from the checkpoint's folder. Both
  // empty: save_model writes it and every named parameter is read back by name.
  std::function<void(const std::filesystem::path& directory)> save_trained_weights;
  std::function<void(const std::filesystem::path& directory)> load_trained_weights;
};

struct TrainingSummary {
  int64_t steps = 0;                            // optimizer updates of the whole run, resumed ones included
  std::map<std::string, double> train_metrics;  // the last metrics line's training values
  std::map<std::string, double> eval_metrics;   // the last evaluation ("eval_" names); empty without one
  std::filesystem::path model_directory;        // <output_dir>/model: the final weights, Hugging Face layout
};

// Trains task.model and writes <output_dir>/model at the end. Ctrl-C (SIGINT)
// saves a checkpoint of the last complete update, then throws can::Interrupted
// (error.h): running again with resume continues from it; a second Ctrl-C kills. Metrics lines carry
// loss, grad_norm (before clipping), learning_rate (of the update), epoch
// (fractional), tokens_per_second, the means of the task's metrics over the
// updates since the last line, and eval_* at evaluations. With resume and a
// checkpoint present, weights, optimizer and trainer state are restored and the
// run continues exactly as if never stopped (bit for bit on CPU). Without resume,
// an output_dir that already holds checkpoints is an error, not overwritten.
// A non-finite loss or gradient norm stops training with a can::Error naming the
// update and the value, before the update is applied; the last checkpoint stays.
TrainingSummary run_training(const TrainingTask& task, const TrainingOptions& options);

// Optimizer updates of the whole run (of the job's micro-batches, micro_batch_size ×
// world_size examples each): max_steps when it is set.
int64_t total_training_steps(int64_t num_examples, const TrainingOptions& options);

// Mean loss ("loss") and metrics over examples [0, num_examples) in order, in
// batches of batch_size weighted by their size. For TrainingTask::evaluate. In a job
// (`group`) rank r computes the batches b ≡ r (mod N) and every rank gets the job's means.
std::map<std::string, double> evaluate_in_batches(
    int64_t num_examples, int64_t batch_size, const std::function<LossOutput(const std::vector<int64_t>&)>& compute,
    const ProcessGroup* group = nullptr);

}  // namespace can
