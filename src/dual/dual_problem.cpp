// The empirical dual D̂(λ) of docs/design.md §2, its gradient and Hessian, and the
// predictions of the tilted policy π_λ, as double-precision loops over the flat
// scores (M×N×m is small: a pass over 10,000 × 128 responses takes milliseconds).
#include <algorithm>
#include <cmath>
#include <limits>

#include "can/dual.h"
#include "can/error.h"

namespace can {
namespace {

// The tilt of one prompt's n responses: logits[k] = (r_k + λᵀg_k)/β and
// weights = softmax(logits). Returns log((1/n) Σ_k exp(logits_k)), the max
// subtracted before exp. rewards: [n]; safety: [n, m].
double tilt_prompt(const double* rewards, const double* safety, int64_t n, int m, const double* lambda,
                   double inverse_beta, double* logits, double* weights) {
  if (m == 1) {  // the common case, without the inner loop
    const double lambda0 = lambda[0];
    for (int64_t k = 0; k < n; ++k) logits[k] = (rewards[k] + lambda0 * safety[k]) * inverse_beta;
  } else {
    for (int64_t k = 0; k < n; ++k) {
      double tilt = rewards[k];
      for (int j = 0; j < m; ++j) tilt += lambda[j] * safety[k * m + j];
      logits[k] = tilt * inverse_beta;
    }
  }
  const double max_logit = *std::max_element(logits, logits + n);
  double sum = 0;
  for (int64_t k = 0; k < n; ++k) {
    weights[k] = std::exp(logits[k] - max_logit);
    sum += weights[k];
  }
  const double inverse_sum = 1 / sum;
  for (int64_t k = 0; k < n; ++k) weights[k] *= inverse_sum;
  return max_logit + std::log(sum / static_cast<double>(n));
}

}  // namespace

DualProblem::DualProblem(const OfflineScores& scores, double beta, std::vector<double> margins)
    : beta_(beta),
      margins_(std::move(margins)),
      num_constraints_(scores.num_constraints()),
      offsets_(scores.offsets()),
      rewards_(scores.rewards()),
      safety_(scores.safety()) {
  check(std::isfinite(beta_) && beta_ > 0, "dual: beta must be a positive number, got {}", beta_);
  const int m = num_constraints_;
  check(static_cast<int>(margins_.size()) == m, "dual: {} margin(s) given but the scores have {} constraint(s)",
        margins_.size(), m);
  for (int j = 0; j < m; ++j) check(std::isfinite(margins_[j]), "dual: the margin of constraint {} is not finite", j);

  // Centre r and g within each prompt. Σ_k w_ik = 1, so the per-prompt means
  // cancel from the gradient and from D̂ up to the constant r̄; centring makes that
  // cancellation exact instead of a difference of large sums.
  const int64_t num_prompts = this->num_prompts();
  mean_reward_ = 0;
  max_responses_ = 0;
  max_safety_improvement_.assign(m, 0);
  safety_scale_.assign(m, 0);
  reward_scale_ = 0;
  std::vector<double> prompt_mean(m);
  std::vector<double> prompt_max(m);
  for (int64_t i = 0; i < num_prompts; ++i) {
    const int64_t begin = offsets_[i];
    const int64_t end = offsets_[i + 1];
    const double n = static_cast<double>(end - begin);
    max_responses_ = std::max(max_responses_, end - begin);

    double reward_mean = 0;
    for (int64_t row = begin; row < end; ++row) reward_mean += rewards_[row];
    reward_mean /= n;
    mean_reward_ += reward_mean;
    double reward_square_sum = 0;
    for (int64_t row = begin; row < end; ++row) {
      rewards_[row] -= reward_mean;
      reward_square_sum += rewards_[row] * rewards_[row];
    }
    reward_scale_ += reward_square_sum / n;

    std::fill(prompt_mean.begin(), prompt_mean.end(), 0.0);
    for (int64_t row = begin; row < end; ++row) {
      for (int j = 0; j < m; ++j) prompt_mean[j] += safety_[row * m + j];
    }
    std::fill(prompt_max.begin(), prompt_max.end(), -std::numeric_limits<double>::infinity());
    for (int64_t row = begin; row < end; ++row) {
      for (int j = 0; j < m; ++j) {
        double& g = safety_[row * m + j];
        g -= prompt_mean[j] / n;
        prompt_max[j] = std::max(prompt_max[j], g);
        safety_scale_[j] += g * g / n;
      }
    }
    for (int j = 0; j < m; ++j) max_safety_improvement_[j] += prompt_max[j];
  }
  const double inverse_prompts = 1 / static_cast<double>(num_prompts);
  mean_reward_ *= inverse_prompts;
  reward_scale_ = std::sqrt(reward_scale_ * inverse_prompts);
  for (int j = 0; j < m; ++j) {
    max_safety_improvement_[j] *= inverse_prompts;
    safety_scale_[j] = std::sqrt(safety_scale_[j] * inverse_prompts);
  }
  // Scores near the top of the double range (finite, but ~1e155 and up) overflow
  // the spreads and would give infinite tolerances that any gradient meets.
  bool representable = std::isfinite(reward_scale_) && std::isfinite(mean_reward_);
  for (int j = 0; j < m; ++j) {
    representable = representable && std::isfinite(safety_scale_[j]) && std::isfinite(max_safety_improvement_[j]);
  }
  check(representable,
        "dual: the scores are too large to solve in double precision (their within-prompt spread overflows); "
        "rescale r and g (and the margins with g)");
}

DualProblem::Evaluation DualProblem::evaluate(const std::vector<double>& lambda, bool with_hessian) const {
  const int m = num_constraints_;
  check(static_cast<int>(lambda.size()) == m, "dual: lambda has {} entries for {} constraints", lambda.size(), m);
  Evaluation result;
  result.gradient.assign(m, 0);
  if (with_hessian) result.hessian.assign(static_cast<size_t>(m) * m, 0);
  std::vector<double> logits(max_responses_);   // [N_i] (r + λᵀg)/β
  std::vector<double> weights(max_responses_);  // [N_i] softmax of the logits
  std::vector<double> weighted_mean(m);         // [m] Σ_k w_k g_k of one prompt
  double log_mean_exp_sum = 0;
  const int64_t num_prompts = this->num_prompts();
  for (int64_t i = 0; i < num_prompts; ++i) {
    const int64_t begin = offsets_[i];
    const int64_t n = offsets_[i + 1] - begin;
    const double* g = safety_.data() + begin * m;
    log_mean_exp_sum +=
        tilt_prompt(rewards_.data() + begin, g, n, m, lambda.data(), 1 / beta_, logits.data(), weights.data());
    std::fill(weighted_mean.begin(), weighted_mean.end(), 0.0);
    for (int64_t k = 0; k < n; ++k) {
      for (int j = 0; j < m; ++j) weighted_mean[j] += weights[k] * g[k * m + j];
    }
    for (int j = 0; j < m; ++j) result.gradient[j] += weighted_mean[j];
    if (!with_hessian) continue;
    // Cov_w[g] with the weighted mean subtracted first (two passes, no cancellation).
    for (int64_t k = 0; k < n; ++k) {
      for (int a = 0; a < m; ++a) {
        const double centred_a = g[k * m + a] - weighted_mean[a];
        for (int b = 0; b <= a; ++b) {
          result.hessian[a * m + b] += weights[k] * centred_a * (g[k * m + b] - weighted_mean[b]);
        }
      }
    }
  }
  const double inverse_prompts = 1 / static_cast<double>(num_prompts);
  result.value = beta_ * log_mean_exp_sum * inverse_prompts + mean_reward_;
  for (int j = 0; j < m; ++j) {
    result.gradient[j] = result.gradient[j] * inverse_prompts - margins_[j];
    result.value -= lambda[j] * margins_[j];
  }
  if (with_hessian) {
    for (int a = 0; a < m; ++a) {
      for (int b = 0; b <= a; ++b) {
        result.hessian[a * m + b] *= inverse_prompts / beta_;
        result.hessian[b * m + a] = result.hessian[a * m + b];
      }
    }
  }
  return result;
}

DualPrediction DualProblem::predict(const std::vector<double>& lambda) const {
  const int m = num_constraints_;
  check(static_cast<int>(lambda.size()) == m, "dual: lambda has {} entries for {} constraints", lambda.size(), m);
  DualPrediction prediction;
  prediction.ess_min_fraction = std::numeric_limits<double>::infinity();
  std::vector<double> logits(max_responses_);
  std::vector<double> weights(max_responses_);
  const int64_t num_prompts = this->num_prompts();
  // Each prompt's improvements Σ_k w_ik x_ik (x centred within the prompt): column 0 the
  // reward, column 1 + j constraint j.
  std::vector<double> improvements(static_cast<size_t>(num_prompts * (m + 1)), 0.0);  // [M, 1 + m]
  for (int64_t i = 0; i < num_prompts; ++i) {
    const int64_t begin = offsets_[i];
    const int64_t n = offsets_[i + 1] - begin;
    const double* g = safety_.data() + begin * m;
    const double log_mean_exp =
        tilt_prompt(rewards_.data() + begin, g, n, m, lambda.data(), 1 / beta_, logits.data(), weights.data());
    double* improvement = improvements.data() + i * (m + 1);
    double kl = 0;
    double square_sum = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double w = weights[k];
      // log(N w_k) = logit_k − log mean exp, exact even where w_k underflows to 0.
      kl += w * (logits[k] - log_mean_exp);
      square_sum += w * w;
      improvement[0] += w * rewards_[begin + k];
      for (int j = 0; j < m; ++j) improvement[1 + j] += w * g[k * m + j];
    }
    prediction.kl += kl;
    const double ess_fraction = 1 / (square_sum * static_cast<double>(n));
    prediction.ess_min_fraction = std::min(prediction.ess_min_fraction, ess_fraction);
    prediction.ess_mean_fraction += ess_fraction;
  }
  const double inverse_prompts = 1 / static_cast<double>(num_prompts);
  prediction.kl *= inverse_prompts;
  prediction.ess_mean_fraction *= inverse_prompts;
  // Mean and standard error (sample standard deviation over √M) of each column.
  std::vector<double> means(m + 1), standard_errors(m + 1);
  for (int column = 0; column <= m; ++column) {
    double sum = 0;
    for (int64_t i = 0; i < num_prompts; ++i) sum += improvements[i * (m + 1) + column];
    const double mean = sum * inverse_prompts;
    double squares = 0;
    for (int64_t i = 0; i < num_prompts; ++i) {
      const double deviation = improvements[i * (m + 1) + column] - mean;
      squares += deviation * deviation;
    }
    means[column] = mean;
    standard_errors[column] = num_prompts < 2 ? std::numeric_limits<double>::quiet_NaN()
                                              : std::sqrt(squares / static_cast<double>(num_prompts - 1) *
                                                          inverse_prompts);
  }
  prediction.reward_improvement = means[0];
  prediction.reward_improvement_stderr = standard_errors[0];
  prediction.safety_improvement.assign(means.begin() + 1, means.end());
  prediction.safety_improvement_stderr.assign(standard_errors.begin() + 1, standard_errors.end());
  return prediction;
}

double DualProblem::recession_slope(const std::vector<double>& direction) const {
  const int m = num_constraints_;
  check(static_cast<int>(direction.size()) == m, "dual: direction has {} entries for {} constraints", direction.size(),
        m);
  double max_sum = 0;
  const int64_t num_prompts = this->num_prompts();
  for (int64_t i = 0; i < num_prompts; ++i) {
    double best = -std::numeric_limits<double>::infinity();
    for (int64_t row = offsets_[i]; row < offsets_[i + 1]; ++row) {
      double projection = 0;
      for (int j = 0; j < m; ++j) projection += direction[j] * safety_[row * m + j];
      best = std::max(best, projection);
    }
    max_sum += best;
  }
  double slope = max_sum / static_cast<double>(num_prompts);
  for (int j = 0; j < m; ++j) slope -= direction[j] * margins_[j];
  return slope;
}

DualPrediction predict(const OfflineScores& scores, double beta, const std::vector<double>& lambda) {
  const DualProblem problem(scores, beta, std::vector<double>(scores.num_constraints(), 0.0));
  return problem.predict(lambda);
}

}  // namespace can
