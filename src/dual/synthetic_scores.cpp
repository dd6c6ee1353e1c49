#include "can/synthetic_scores.h"

#include <random>
#include <string>
#include <vector>

#include "can/error.h"

namespace can {

OfflineScores make_synthetic_scores(const SyntheticScoresOptions& options) {
  check(options.num_prompts > 0, "synthetic scores: num_prompts must be positive, got {}", options.num_prompts);
  check(options.min_responses > 0 && options.min_responses <= options.max_responses,
        "synthetic scores: need 0 < min_responses <= max_responses, got {} and {}", options.min_responses,
        options.max_responses);
  check(options.num_constraints > 0, "synthetic scores: num_constraints must be positive, got {}",
        options.num_constraints);
  // Compared as doubles: the product of three int64 counts may overflow.
  const double most_scores = static_cast<double>(options.num_prompts) * static_cast<double>(options.max_responses) *
                             (1.0 + options.num_constraints);
  check(most_scores <= static_cast<double>(kMaxSyntheticScores),
        "synthetic scores: {} prompts × up to {} responses × (1 reward + {} safety) is {:.3g} scores, more than the "
        "{} allowed; ask for fewer",
        options.num_prompts, options.max_responses, options.num_constraints, most_scores, kMaxSyntheticScores);
  const int m = options.num_constraints;
  std::mt19937_64 generator(options.seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::student_t_distribution<double> heavy_tail(3.0);  // variance 3, tails ~|x|^-4
  std::uniform_int_distribution<int64_t> response_count(options.min_responses, options.max_responses);
  std::uniform_real_distribution<double> harm_sensitivity(0.06, 0.16);  // safety lost per unit of compliance
  std::bernoulli_distribution very_unsafe(0.03);
  std::exponential_distribution<double> very_unsafe_depth(1 / 0.3);

  std::vector<std::string> prompt_ids(options.num_prompts);
  std::vector<std::vector<double>> rewards(options.num_prompts);
  std::vector<std::vector<std::vector<double>>> safety(options.num_prompts);
  std::vector<bool> harmful(m);
  std::vector<double> sensitivity(m);
  std::vector<double> safety_offset(m);
  for (int64_t i = 0; i < options.num_prompts; ++i) {
    prompt_ids[i] = "synth-" + std::to_string(i);
    const int64_t n = response_count(generator);
    // Score models add per-prompt offsets; the dual must be blind to them.
    const double reward_offset = 1.0 * normal(generator);
    for (int j = 0; j < m; ++j) {
      // The first harm category is the most common one.
      harmful[j] = std::bernoulli_distribution(j == 0 ? 0.35 : 0.2)(generator);
      sensitivity[j] = harm_sensitivity(generator);
      safety_offset[j] = (harmful[j] ? -0.5 : 0.5) + 0.7 * normal(generator);
    }
    rewards[i].resize(n);
    safety[i].assign(m, std::vector<double>(n));
    for (int64_t k = 0; k < n; ++k) {
      const double compliance = normal(generator);
      const double quality = normal(generator);
      rewards[i][k] = reward_offset + 0.08 * compliance + 0.04 * quality + 0.03 * heavy_tail(generator);
      for (int j = 0; j < m; ++j) {
        double g = safety_offset[j] + 0.03 * heavy_tail(generator);
        if (harmful[j]) {
          g -= sensitivity[j] * compliance;
          if (very_unsafe(generator)) g -= very_unsafe_depth(generator);
        } else {
          g += 0.02 * quality;
        }
        safety[i][j][k] = g;
      }
    }
  }
  return OfflineScores(std::move(prompt_ids), rewards, safety);
}

}  // namespace can
