#include "can/relabel.h"

#include <cmath>
#include <random>

#include "can/error.h"

namespace can {

RelabelMode parse_relabel_mode(const std::string& name) {
  if (name == "bernoulli") return RelabelMode::kBernoulli;
  if (name == "argmax") return RelabelMode::kArgmax;
  if (name == "soft") return RelabelMode::kSoft;
  fail("unknown re-labelling mode '{}' (expected bernoulli, argmax or soft)", name);
}

std::string relabel_mode_name(RelabelMode mode) {
  switch (mode) {
    case RelabelMode::kBernoulli: return "bernoulli";
    case RelabelMode::kArgmax: return "argmax";
    case RelabelMode::kSoft: return "soft";
  }
  fail("unknown re-labelling mode {}", static_cast<int>(mode));
}

RelabeledPairs relabel_pairs(const std::vector<PreferencePair>& pairs, const std::vector<double>& score_0,
                             const std::vector<double>& score_1, const RelabelOptions& options) {
  check(score_0.size() == pairs.size() && score_1.size() == pairs.size(), "re-labelling: {} pairs but {} and {} scores",
        pairs.size(), score_0.size(), score_1.size());
  std::mt19937_64 rng(options.seed);
  RelabeledPairs result{pairs, std::vector<double>(pairs.size())};
  for (size_t i = 0; i < pairs.size(); ++i) {
    const double difference = score_1[i] - score_0[i];
    check(std::isfinite(difference), "re-labelling: pair {} has a non-finite score ({}, {})", i, score_0[i],
          score_1[i]);
    const double probability = 1.0 / (1.0 + std::exp(-difference));
    result.probability_1[i] = probability;
    // A uniform draw from the top 53 bits, the same on every standard library.
    const double uniform = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const bool prefer_1 = options.mode == RelabelMode::kBernoulli ? uniform < probability : difference > 0;
    result.pairs[i].better_response_id = prefer_1 ? 1 : 0;
    // σ(|s_1 − s_0|), computed without 1 − σ cancelling.
    result.pairs[i].better_probability =
        options.mode == RelabelMode::kSoft ? 1.0 / (1.0 + std::exp(-std::abs(difference))) : 1.0;
  }
  return result;
}

std::vector<double> composite_scores(const std::vector<double>& reward, const std::vector<std::vector<double>>& safety,
                                     const std::vector<double>& lambda) {
  check(safety.size() == lambda.size(), "composite scores: {} safety rows but {} multipliers", safety.size(),
        lambda.size());
  std::vector<double> scores = reward;
  for (size_t j = 0; j < lambda.size(); ++j) {
    check(safety[j].size() == reward.size(), "composite scores: safety row {} has {} entries, reward has {}", j,
          safety[j].size(), reward.size());
    for (size_t k = 0; k < reward.size(); ++k) scores[k] += lambda[j] * safety[j][k];
  }
  return scores;
}

}  // namespace can
