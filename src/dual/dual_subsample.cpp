#include "can/dual_subsample.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>

#include "can/error.h"
#include "can/json_fields.h"

namespace can {

namespace {

using nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// `count` of the indices 0..n−1 without replacement, ascending: a partial Fisher–Yates
// shuffle. The draws use the engine's raw output (std::uniform_int_distribution
// differs between standard libraries), so a seed gives the same subset everywhere;
// the modulo bias is below n / 2^64.
std::vector<int64_t> choose(int64_t n, int64_t count, std::mt19937_64& engine) {
  std::vector<int64_t> indices(n);
  std::iota(indices.begin(), indices.end(), 0);
  for (int64_t k = 0; k < count; ++k) {
    const int64_t pick = k + static_cast<int64_t>(engine() % static_cast<uint64_t>(n - k));
    std::swap(indices[k], indices[pick]);
  }
  indices.resize(count);
  std::sort(indices.begin(), indices.end());
  return indices;
}

int64_t fewest_responses(const OfflineScores& scores) {
  int64_t fewest = scores.num_responses(0);
  for (int64_t i = 1; i < scores.num_prompts(); ++i) fewest = std::min(fewest, scores.num_responses(i));
  return fewest;
}


}  // namespace

OfflineScores subsample_scores(const OfflineScores& scores, int64_t num_prompts, int64_t num_responses,
                               uint64_t seed) {
  check(num_prompts >= 1 && num_prompts <= scores.num_prompts(),
        "subsample: {} prompts asked for, but the scores have {} (give 1 to {})", num_prompts, scores.num_prompts(),
        scores.num_prompts());
  const int64_t fewest = fewest_responses(scores);
  check(num_responses >= 2 && num_responses <= fewest,
        "subsample: {} responses per prompt asked for, but the prompt with the fewest has {} (give 2 to {})",
        num_responses, fewest, fewest);
  const int m = scores.num_constraints();
  std::mt19937_64 engine(seed);
  std::vector<std::string> ids;
  std::vector<std::vector<double>> rewards;                // [M'][N']
  std::vector<std::vector<std::vector<double>>> safety;    // [M'][m][N']
  for (const int64_t prompt : choose(scores.num_prompts(), num_prompts, engine)) {
    ids.push_back(scores.prompt_id(prompt));
    std::vector<double>& reward = rewards.emplace_back();
    std::vector<std::vector<double>>& g = safety.emplace_back(m);
    for (const int64_t k : choose(scores.num_responses(prompt), num_responses, engine)) {
      const int64_t row = scores.offsets()[prompt] + k;
      reward.push_back(scores.rewards()[row]);
      for (int j = 0; j < m; ++j) g[j].push_back(scores.safety()[row * m + j]);
    }
  }
  return OfflineScores(std::move(ids), rewards, safety);
}

uint64_t subsample_seed(uint64_t seed, int64_t num_prompts, int64_t num_responses, int64_t repeat) {
  // std::seed_seq's mixing is specified by the standard, so the seed is the same everywhere.
  // It keeps 32 bits of each input: every 64-bit value goes in as two words.
  std::vector<uint32_t> inputs;
  for (const uint64_t value : {seed, static_cast<uint64_t>(num_prompts), static_cast<uint64_t>(num_responses),
                               static_cast<uint64_t>(repeat)}) {
    inputs.push_back(static_cast<uint32_t>(value >> 32));
    inputs.push_back(static_cast<uint32_t>(value));
  }
  std::seed_seq sequence(inputs.begin(), inputs.end());
  std::array<uint32_t, 2> words{};
  sequence.generate(words.begin(), words.end());
  return (static_cast<uint64_t>(words[0]) << 32) | words[1];
}

std::vector<SubsampleSummary> subsample_dual(const OfflineScores& scores, const DualOptions& dual,
                                             const SubsampleOptions& options) {
  check(!options.prompt_counts.empty() && !options.response_counts.empty(),
        "subsample: give at least one prompt count and one response count");
  check(options.repeats >= 1, "subsample: repeats must be at least 1, got {}", options.repeats);
  const int64_t fewest = fewest_responses(scores);
  for (const auto* counts : {&options.prompt_counts, &options.response_counts}) {
    check(std::set<int64_t>(counts->begin(), counts->end()).size() == counts->size(),
          "subsample: a {} count is listed twice", counts == &options.prompt_counts ? "prompt" : "response");
  }
  for (const int64_t count : options.prompt_counts) {
    check(count >= 1 && count <= scores.num_prompts(), "subsample: prompt count {} is not within 1..{} (the prompts "
          "in the scores)", count, scores.num_prompts());
  }
  for (const int64_t count : options.response_counts) {
    check(count >= 2 && count <= fewest,
          "subsample: response count {} is not within 2..{} (the fewest responses of any prompt)", count, fewest);
  }
  const int m = scores.num_constraints();
  std::vector<SubsampleSummary> summaries;
  for (const int64_t prompts : options.prompt_counts) {
    for (const int64_t responses : options.response_counts) {
      SubsampleSummary summary;
      summary.num_prompts = prompts;
      summary.num_responses = responses;
      summary.repeats = options.repeats;
      std::vector<std::vector<double>> lambdas(m);  // [m][converged repeats]
      for (int64_t repeat = 0; repeat < options.repeats; ++repeat) {
        const uint64_t seed = subsample_seed(options.seed, prompts, responses, repeat);
        const DualSolution solution = solve_dual(subsample_scores(scores, prompts, responses, seed), dual);
        if (!solution.feasible) {
          ++summary.infeasible;
        } else if (!solution.converged) {
          ++summary.not_converged;
        } else {
          for (int j = 0; j < m; ++j) lambdas[j].push_back(solution.lambda[j]);
        }
      }
      for (int j = 0; j < m; ++j) {
        const std::vector<double>& values = lambdas[j];
        double mean = kNaN, spread = kNaN, low = kNaN, high = kNaN;
        if (!values.empty()) {
          // Welford's running mean and sum of squared deviations: equal values give exactly
          // that value and a spread of exactly 0 (a sum divided by n need not).
          mean = 0;
          double squares = 0;
          for (size_t k = 0; k < values.size(); ++k) {
            const double delta = values[k] - mean;
            mean += delta / static_cast<double>(k + 1);
            squares += delta * (values[k] - mean);
          }
          if (values.size() >= 2) spread = std::sqrt(squares / static_cast<double>(values.size() - 1));
          low = *std::min_element(values.begin(), values.end());
          high = *std::max_element(values.begin(), values.end());
        }
        summary.lambda_mean.push_back(mean);
        summary.lambda_std.push_back(spread);
        summary.lambda_min.push_back(low);
        summary.lambda_max.push_back(high);
      }
      summaries.push_back(std::move(summary));
    }
  }
  return summaries;
}

nlohmann::json to_json(const SubsampleSummary& summary) {
  return {{"num_prompts", summary.num_prompts},
          {"num_responses", summary.num_responses},
          {"repeats", summary.repeats},
          {"infeasible", summary.infeasible},
          {"not_converged", summary.not_converged},
          {"lambda_mean", numbers_or_nulls(summary.lambda_mean)},
          {"lambda_std", numbers_or_nulls(summary.lambda_std)},
          {"lambda_min", numbers_or_nulls(summary.lambda_min)},
          {"lambda_max", numbers_or_nulls(summary.lambda_max)}};
}

PlotFigure subsample_figure(const std::vector<SubsampleSummary>& summaries, const std::string& title) {
  check(!summaries.empty(), "subsample plot: no sizes");
  std::set<int64_t> prompt_counts, response_counts;
  for (const SubsampleSummary& summary : summaries) {
    prompt_counts.insert(summary.num_prompts);
    response_counts.insert(summary.num_responses);
  }
  // One panel per axis: x is one size, each line holds the other fixed. The band is
  // mean ± one standard deviation, drawn as dashed lines in the line's colour.
  auto panel = [&](const std::string& panel_title, const std::string& x_label, const std::set<int64_t>& fixed_values,
                   const std::string& fixed_name, bool x_is_prompts) {
    PlotPanel result{panel_title, x_label, "λ* (constraint 0)", {}, {}};
    size_t colour = 0;
    for (const int64_t fixed : fixed_values) {
      PlotSeries mean, upper, lower;
      for (const SubsampleSummary& summary : summaries) {
        if ((x_is_prompts ? summary.num_responses : summary.num_prompts) != fixed) continue;
        const double x = static_cast<double>(x_is_prompts ? summary.num_prompts : summary.num_responses);
        mean.x.push_back(x);
        mean.y.push_back(summary.lambda_mean[0]);
        upper.x.push_back(x);
        upper.y.push_back(summary.lambda_mean[0] + summary.lambda_std[0]);
        lower.x.push_back(x);
        lower.y.push_back(summary.lambda_mean[0] - summary.lambda_std[0]);
      }
      // Points in order of x, however the sizes were listed.
      std::vector<size_t> order(mean.x.size());
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&mean](size_t a, size_t b) { return mean.x[a] < mean.x[b]; });
      for (PlotSeries* series : {&mean, &upper, &lower}) {
        PlotSeries sorted = *series;
        for (size_t k = 0; k < order.size(); ++k) {
          sorted.x[k] = series->x[order[k]];
          sorted.y[k] = series->y[order[k]];
        }
        *series = std::move(sorted);
      }
      const std::string color = palette_color(colour++);
      mean.label = fmt::format("{} = {}", fixed_name, fixed);
      mean.color = upper.color = lower.color = color;
      upper.dashed = lower.dashed = true;
      upper.markers = lower.markers = false;
      upper.label = colour == 1 ? "± one standard deviation" : "";
      result.series.push_back(std::move(mean));
      result.series.push_back(std::move(upper));
      result.series.push_back(std::move(lower));
    }
    return result;
  };
  PlotFigure figure;
  figure.title = title;
  figure.columns = 2;
  figure.panels.push_back(panel("λ* against the number of prompts", "prompts M", response_counts,
                                "responses N", /*x_is_prompts=*/true));
  figure.panels.push_back(panel("λ* against the responses per prompt", "responses per prompt N", prompt_counts,
                                "prompts M", /*x_is_prompts=*/false));
  return figure;
}

}  // namespace can
