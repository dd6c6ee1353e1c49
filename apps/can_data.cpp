// can-data: make data sets. One subcommand per kind of data; each is set up by
// an add_*_command function that registers its options and its action, so a new
// kind is one more function and one more line in main.
//
//   can-data synth --out DIR [--seed S] [--train-prompts N] [--test-prompts N] [--harmful-fraction F] [--label-noise P]
//                  [--privacy-harm]
//   can-data scores-synth --out FILE [--prompts M] [--responses N | LO:HI] [--constraints m] [--seed S]
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <functional>
#include <iostream>

#include "can/cli.h"
#include "can/error.h"
#include "can/logging.h"
#include "can/synthetic_scores.h"
#include "can/synthetic_world.h"

namespace {

// The action of the subcommand that was chosen, run after parsing.
using Action = std::function<void()>;

// "N" or "LO:HI" responses per prompt.
void parse_response_range(const std::string& text, can::SyntheticScoresOptions& options) {
  const size_t colon = text.find(':');
  try {
    size_t used = 0;
    options.min_responses = std::stoll(text.substr(0, colon), &used);
    can::check(used == (colon == std::string::npos ? text.size() : colon), "trailing characters");
    options.max_responses = options.min_responses;
    if (colon != std::string::npos) {
      options.max_responses = std::stoll(text.substr(colon + 1), &used);
      can::check(used == text.size() - colon - 1, "trailing characters");
    }
  } catch (const std::exception&) {
    can::fail("--responses '{}': expected a count N or a range LO:HI, e.g. 128 or 64:128", text);
  }
}

void add_scores_synth_command(CLI::App& app, Action& action) {
  auto* command = app.add_subcommand(
      "scores-synth",
      "Write a realistic synthetic offline-scores file (JSON Lines, docs/design.md §5) to try can-dual without a "
      "model: harmful and benign prompts, a helpfulness-safety trade-off on harmful ones, heavy-tailed scores.");
  auto options = std::make_shared<can::SyntheticScoresOptions>();
  auto out = std::make_shared<std::string>();
  auto responses = std::make_shared<std::string>("128");
  command->add_option("--out", *out, "the scores file to write")->required();
  command->add_option("--prompts", options->num_prompts, "number of prompts M")
      ->check(can::number_above(0))
      ->capture_default_str();
  command->add_option("--responses", *responses, "responses per prompt: N, or LO:HI for N_i drawn uniformly")
      ->capture_default_str();
  command->add_option("--constraints", options->num_constraints, "number of safety constraints m (harm categories)")
      ->check(can::number_above(0))
      ->capture_default_str();
  command->add_option("--seed", options->seed, "random seed; the same seed gives the same file")
      ->check(can::seed_number())
      ->capture_default_str();
  command->callback([&action, options, out, responses] {
    action = [options, out, responses] {
      parse_response_range(*responses, *options);
      const can::OfflineScores scores = can::make_synthetic_scores(*options);
      scores.save(*out);
      spdlog::info("wrote {}: {} prompts, {} responses, {} constraint(s)", *out, scores.num_prompts(),
                   scores.total_responses(), scores.num_constraints());
    };
  });
}

void add_synth_command(CLI::App& app, Action& action) {
  auto* command = app.add_subcommand(
      "synth",
      "Write the embedded default's synthetic safety world (docs/design.md §8): PKU-SafeRLHF-schema preference pairs, "
      "SFT data, train and held-out test prompts, a tokenizer corpus, and world.json.");
  auto options = std::make_shared<can::WorldOptions>();
  auto out = std::make_shared<std::string>();
  command->add_option("--out", *out, "the directory to write")->required();
  command->add_option("--seed", options->seed, "random seed; the same seed gives the same files")
      ->check(can::seed_number())
      ->capture_default_str();
  command->add_option("--train-prompts", options->num_train_prompts, "training prompts (one pair each)")
      ->check(can::number_within(1, can::kMaxWorldPrompts))
      ->capture_default_str();
  command->add_option("--test-prompts", options->num_test_prompts, "held-out test prompts")
      ->check(can::number_within(1, can::kMaxWorldPrompts))
      ->capture_default_str();
  command->add_option("--harmful-fraction", options->harmful_fraction, "fraction of harmful requests")
      ->check(can::number_within(0, 1))
      ->capture_default_str();
  command->add_option("--label-noise", options->label_noise, "probability that a preference label is flipped")
      ->check(can::number_within(0, 0.5))
      ->capture_default_str();
  command->add_flag("--privacy-harm", options->privacy_harm,
                    "a second kind of harm, privacy, judged and labelled on its own (two safety constraints)");
  command->callback([&action, options, out] { action = [options, out] { can::write_world(*options, *out); }; });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Make CAN data sets."};
  app.require_subcommand(1);
  Action action;
  add_synth_command(app, action);
  add_scores_synth_command(app, action);
  if (const auto status = can::parse_arguments(app, argc, argv)) return *status;
  try {
    can::setup_logging("info");
    action();
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "can-data: " << error.what() << '\n';
    return 1;
  }
}
