#include "can/dual.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "assertions.h"
#include "can/dual_sweep.h"
#include "can/error.h"
#include "can/json_fields.h"
#include "can/synthetic_scores.h"

namespace can {
namespace {

using can::testing::contains;
using can::testing::error_message;

double logit(double p) { return std::log(p / (1 - p)); }
double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

DualOptions options_for(std::vector<double> margins, DualSolver solver = DualSolver::kProjectedNewton,
                        double beta = 0.1) {
  DualOptions options;
  options.beta = beta;
  options.margins = std::move(margins);
  options.solver = solver;
  return options;
}

// `count` identical prompts with two responses, (r, g) = (1, 0) and (0, 1): the
// tilt weighs response 2 by w = σ((λ − 1)/β), the safety improvement is w − ½.
OfflineScores two_response_prompts(int count) {
  std::vector<std::string> ids;
  std::vector<std::vector<double>> rewards;
  std::vector<std::vector<std::vector<double>>> safety;
  for (int i = 0; i < count; ++i) {
    ids.push_back(std::to_string(i));
    rewards.push_back({1, 0});
    safety.push_back({{0, 1}});
  }
  return OfflineScores(ids, rewards, safety);
}

OfflineScores synthetic(int constraints, int64_t prompts = 300, uint64_t seed = 11) {
  SyntheticScoresOptions options;
  options.num_prompts = prompts;
  options.min_responses = 32;
  options.max_responses = 64;
  options.num_constraints = constraints;
  options.seed = seed;
  return make_synthetic_scores(options);
}

TEST(DualSolver, GaussianCaseMatchesClosedForm) {
  // g ~ Normal(μ, σ²) independent of r under π_ref: π_λ shifts g to
  // Normal(μ + λσ²/β, σ²), so λ* = β·b/σ².
  const int64_t prompts = 1000;
  const int64_t responses = 256;
  const double beta = 0.1, mu = 3, sigma = 1, margin = 0.3;
  const double expected = beta * margin / (sigma * sigma);
  std::mt19937_64 generator(7);
  std::normal_distribution<double> safety_noise(mu, sigma);
  std::normal_distribution<double> reward_noise(0.0, 0.01);  // r/β has spread 0.1: a negligible tilt
  std::vector<std::string> ids;
  std::vector<std::vector<double>> rewards(prompts, std::vector<double>(responses));
  std::vector<std::vector<std::vector<double>>> safety(prompts, {std::vector<double>(responses)});
  for (int64_t i = 0; i < prompts; ++i) {
    ids.push_back(std::to_string(i));
    for (int64_t k = 0; k < responses; ++k) {
      rewards[i][k] = reward_noise(generator);
      safety[i][0][k] = safety_noise(generator);
    }
  }
  const OfflineScores scores(ids, rewards, safety);
  const DualSolution solution = solve_dual(scores, options_for({margin}));
  ASSERT_TRUE(solution.converged) << solution.message;

  // λ̂ solves mean_i[Σ_k w_ik g_ik − ḡ_i] = b. With t = λσ/β (the tilt in standard
  // deviations) and importance ratio ρ(z) = exp(tz − t²/2), z ~ N(0, 1):
  // - per-prompt self-normalization bias of the improvement: −E[ρ²(g − μ_λ)]/N =
  //   −σ·t·e^{t²}/N, which moves λ̂ by the relative amount e^{t²}/N (0.43% here);
  // - variance of one response's contribution ρ(z)σ(z − t) − σz is
  //   σ²(e^{t²}(1 + t²) − 1); over M·N responses, with slope dE/dλ = σ²/β, the
  //   relative standard error of λ̂ is sqrt(e^{t²}(1 + t²) − 1)/(t·sqrt(MN)) (0.29%).
  // Allow the bias plus four standard errors (1.6%); a wrong weighting, a pooled
  // mean or a missing 1/β is off by far more.
  const double t = expected * sigma / beta;
  const double relative_bias = std::exp(t * t) / responses;
  const double relative_standard_error =
      std::sqrt(std::exp(t * t) * (1 + t * t) - 1) / (t * std::sqrt(static_cast<double>(prompts * responses)));
  const double tolerance = relative_bias + 4 * relative_standard_error;
  EXPECT_NEAR(solution.lambda[0], expected, tolerance * expected);
  EXPECT_NEAR(solution.predicted.safety_improvement[0], margin, 1e-9);
  // π_λ tilts g by t and, independently, r by t_r = σ_r/β = 0.1 standard deviations:
  // KL = (t² + t_r²)/2. The estimate shares λ̂'s relative error twice over in the
  // t² part (KL ∝ λ²) and the self-normalization bias.
  const double t_reward = 0.01 / beta;
  const double kl = (t * t + t_reward * t_reward) / 2;
  EXPECT_NEAR(solution.predicted.kl, kl, 2 * tolerance * t * t / 2 + kl * relative_bias);
  // For Gaussian tilts the population ESS fraction is e^{−(t² + t_r²)}; the mean
  // over 1000 prompts of 256 responses is within 1% of it.
  EXPECT_NEAR(solution.predicted.ess_mean_fraction, std::exp(-(t * t + t_reward * t_reward)), 0.01);
}

TEST(DualSolver, TwoResponsesPerPromptMatchHandSolution) {
  const double beta = 0.1, margin = 0.3;
  const OfflineScores scores = two_response_prompts(3);
  // σ((λ − 1)/β) − ½ = b  ⇒  λ* = 1 + β·logit(½ + b).
  const double lambda = 1 + beta * logit(0.5 + margin);
  const double w = 0.5 + margin;  // weight of the safe response
  for (DualSolver solver : {DualSolver::kProjectedNewton, DualSolver::kProjectedGradient}) {
    const DualSolution solution = solve_dual(scores, options_for({margin}, solver, beta));
    ASSERT_TRUE(solution.converged) << solution.message;
    EXPECT_NEAR(solution.lambda[0], lambda, 1e-9);
    EXPECT_NEAR(solution.predicted.safety_improvement[0], margin, 1e-9);
    EXPECT_NEAR(solution.predicted.reward_improvement, (1 - w) - 0.5, 1e-9);
    EXPECT_NEAR(solution.predicted.kl, (1 - w) * std::log(2 * (1 - w)) + w * std::log(2 * w), 1e-9);
    const double ess_fraction = 1 / ((w * w + (1 - w) * (1 - w)) * 2);
    EXPECT_NEAR(solution.predicted.ess_min_fraction, ess_fraction, 1e-9);
    EXPECT_NEAR(solution.predicted.ess_mean_fraction, ess_fraction, 1e-9);
    // D̂ = β·log((e^{1/β} + e^{λ/β})/2) − λ(ḡ + b), ḡ = ½.
    const double dual = beta * std::log((std::exp(1 / beta) + std::exp(lambda / beta)) / 2) - lambda * (0.5 + margin);
    EXPECT_NEAR(solution.dual_value, dual, 1e-9);
    EXPECT_EQ(solution.max_safety_improvement, std::vector<double>{0.5});
  }
}

TEST(DualSolver, LogitsFarBeyondExpRangeStayFinite) {
  // (r, g) = (1000, 0) and (0, 1000), β = 0.1: logits of order 1e4, where exp
  // overflows unless the max is subtracted. w₂ = σ(1000(λ − 1)/β), improvement
  // 1000·w₂ − 500 = b  ⇒  λ* = 1 + (β/1000)·logit(½ + b/1000).
  const OfflineScores scores({"a", "b"}, {{1000, 0}, {1000, 0}}, {{{0, 1000}}, {{0, 1000}}});
  const DualSolution solution = solve_dual(scores, options_for({300}));
  ASSERT_TRUE(solution.converged) << solution.message;
  EXPECT_NEAR(solution.lambda[0], 1 + 1e-4 * logit(0.8), 1e-12);
  EXPECT_TRUE(std::isfinite(solution.dual_value));
  EXPECT_NEAR(solution.predicted.safety_improvement[0], 300, 1e-6);
}

TEST(DualSolver, SlackConstraintGivesZeroLambda) {
  // r and g agree: the reward-only tilt already improves safety by σ(1/β) − ½.
  const OfflineScores scores({"a", "b"}, {{0, 1}, {0, 1}}, {{{0, 1}}, {{0, 1}}});
  const double free_improvement = sigmoid(1 / 0.1) - 0.5;
  for (DualSolver solver : {DualSolver::kProjectedNewton, DualSolver::kProjectedGradient}) {
    for (double margin : {free_improvement - 0.1, 0.0, -1.0}) {
      const DualSolution solution = solve_dual(scores, options_for({margin}, solver));
      ASSERT_TRUE(solution.converged) << solution.message;
      EXPECT_EQ(solution.lambda[0], 0.0) << "margin " << margin;
      EXPECT_EQ(slack_constraints(solution), std::vector<int>{0});
      EXPECT_NEAR(solution.predicted.safety_improvement[0], free_improvement, 1e-12);
    }
  }
}

TEST(DualSolver, OfTwoConstraintsTheOneMetByTheOtherIsSlack) {
  // g_1 = g_0 / 2 and r = 0: meeting b_0 = 0.3 tilts towards the safer response, which
  // improves g_1 by 0.15 ≥ b_1 = 0.01, so λ*_1 = 0 and only constraint 0 binds.
  const OfflineScores scores({"a", "b"}, {{0, 0}, {0, 0}}, {{{0, 1}, {0, 0.5}}, {{0, 1}, {0, 0.5}}});
  for (DualSolver solver : {DualSolver::kProjectedNewton, DualSolver::kProjectedGradient}) {
    const DualSolution solution = solve_dual(scores, options_for({0.3, 0.01}, solver));
    ASSERT_TRUE(solution.converged) << solution.message;
    EXPECT_GT(solution.lambda[0], 0.0);
    EXPECT_EQ(solution.lambda[1], 0.0);
    EXPECT_EQ(slack_constraints(solution), std::vector<int>{1});
    EXPECT_NEAR(solution.predicted.safety_improvement[0], 0.3, 1e-8);
    EXPECT_NEAR(solution.predicted.safety_improvement[1], 0.15, 1e-8);
  }
}

TEST(DualSolver, SafetyConstantWithinPromptsMeetsOnlyMarginsUpToZero) {
  // No re-weighting changes E[g] when g is constant within each prompt: the reach is 0.
  const OfflineScores scores({"a", "b"}, {{0, 1}, {2, 0}}, {{{3, 3}}, {{-1, -1}}});
  for (DualSolver solver : {DualSolver::kProjectedNewton, DualSolver::kProjectedGradient}) {
    const DualSolution met = solve_dual(scores, options_for({0.0}, solver));
    ASSERT_TRUE(met.converged) << met.message;
    // D̂ is flat in λ here: every λ ≥ 0 is optimal (Newton stays at 0, PGD at λ₀ = 1).
    EXPECT_EQ(met.lambda[0], solver == DualSolver::kProjectedNewton ? 0.0 : 1.0);
    EXPECT_EQ(met.predicted.safety_improvement[0], 0.0);
    EXPECT_FALSE(solve_dual(scores, options_for({0.01}, solver)).feasible);
  }
}

TEST(DualProblem, PerPromptConstantsInSafetyChangeNothing) {
  const OfflineScores base = synthetic(2);
  std::vector<std::string> ids;
  std::vector<std::vector<double>> rewards;
  std::vector<std::vector<std::vector<double>>> safety;
  std::mt19937_64 generator(5);
  std::uniform_real_distribution<double> shift(-50, 50);
  for (int64_t i = 0; i < base.num_prompts(); ++i) {
    ids.push_back(base.prompt_id(i));
    rewards.emplace_back(base.rewards().begin() + base.offsets()[i], base.rewards().begin() + base.offsets()[i + 1]);
    std::vector<std::vector<double>> rows(2);
    const double shifts[2] = {shift(generator), shift(generator)};
    for (int64_t row = base.offsets()[i]; row < base.offsets()[i + 1]; ++row) {
      for (int j = 0; j < 2; ++j) rows[j].push_back(base.safety()[row * 2 + j] + shifts[j]);
    }
    safety.push_back(rows);
  }
  const OfflineScores shifted(ids, rewards, safety);
  const DualOptions options = options_for({0.05, 0.02});
  const DualSolution before = solve_dual(base, options);
  const DualSolution after = solve_dual(shifted, options);
  ASSERT_TRUE(before.converged && after.converged);
  ASSERT_GT(before.lambda[0], 0.1);  // the constraints bind, so λ* depends on g
  for (int j = 0; j < 2; ++j) {
    EXPECT_NEAR(after.lambda[j], before.lambda[j], 1e-9 * before.lambda[j]);
    EXPECT_NEAR(after.predicted.safety_improvement[j], before.predicted.safety_improvement[j], 1e-12);
    EXPECT_NEAR(after.max_safety_improvement[j], before.max_safety_improvement[j], 1e-12);
  }
  EXPECT_NEAR(after.dual_value, before.dual_value, 1e-12);
  EXPECT_NEAR(after.predicted.reward_improvement, before.predicted.reward_improvement, 1e-12);
  EXPECT_NEAR(after.predicted.kl, before.predicted.kl, 1e-10);
}

TEST(DualProblem, ValueGradientAndHessianMatchTheDesignFormulasAndFiniteDifferences) {
  const OfflineScores scores = synthetic(2, 60);
  const double beta = 0.1;
  const std::vector<double> margins{0.05, 0.02};
  const DualProblem problem(scores, beta, margins);
  const std::vector<double> lambda{0.7, 0.4};
  const DualProblem::Evaluation at = problem.evaluate(lambda, true);

  // D̂ straight from docs/design.md §2, on the raw scores, as a reference for the centred fast path.
  double log_mean_exp_sum = 0, mean_safety[2] = {0, 0};
  for (int64_t i = 0; i < scores.num_prompts(); ++i) {
    const int64_t begin = scores.offsets()[i], n = scores.num_responses(i);
    double sum = 0;
    for (int64_t row = begin; row < begin + n; ++row) {
      sum += std::exp(
          (scores.rewards()[row] + lambda[0] * scores.safety()[row * 2] + lambda[1] * scores.safety()[row * 2 + 1]) /
          beta);
      for (int j = 0; j < 2; ++j) mean_safety[j] += scores.safety()[row * 2 + j] / n;
    }
    log_mean_exp_sum += std::log(sum / n);
  }
  const double num_prompts = static_cast<double>(scores.num_prompts());
  double reference = beta * log_mean_exp_sum / num_prompts;
  for (int j = 0; j < 2; ++j) reference -= lambda[j] * (mean_safety[j] / num_prompts + margins[j]);
  EXPECT_NEAR(at.value, reference, 1e-12 * std::abs(reference));

  const double h = 1e-5;
  for (int j = 0; j < 2; ++j) {
    std::vector<double> plus = lambda, minus = lambda;
    plus[j] += h;
    minus[j] -= h;
    const auto up = problem.evaluate(plus, true);
    const auto down = problem.evaluate(minus, true);
    // Central differences: error O(h²·D''') ≈ 1e-10 here, far below the 1e-7 allowed.
    EXPECT_NEAR(at.gradient[j], (up.value - down.value) / (2 * h), 1e-7);
    for (int k = 0; k < 2; ++k) {
      EXPECT_NEAR(at.hessian[k * 2 + j], (up.gradient[k] - down.gradient[k]) / (2 * h),
                  1e-6 * std::abs(at.hessian[k * 2 + k]));
    }
  }
  EXPECT_EQ(at.hessian[1], at.hessian[2]);
  EXPECT_GT(at.hessian[0] * at.hessian[3] - at.hessian[1] * at.hessian[2], 0);  // positive definite
}

TEST(DualProblem, RaggedPromptsWeighEqually) {
  // Prompt A: two responses with g = 0, 1; prompt B: four with g = 5. Per-prompt
  // means give ḡ = (½ + 5)/2 and improvement (σ(λ/β) − ½)/2; a pooled mean over
  // the six responses (3.5) would not.
  const double beta = 0.1, margin = 0.1;
  const OfflineScores scores({"A", "B"}, {{0, 0}, {0, 0, 0, 0}}, {{{0, 1}}, {{5, 5, 5, 5}}});
  const DualSolution solution = solve_dual(scores, options_for({margin}));
  ASSERT_TRUE(solution.converged) << solution.message;
  const double p = 0.5 + 2 * margin;
  EXPECT_NEAR(solution.lambda[0], beta * logit(p), 1e-9);
  EXPECT_NEAR(solution.max_safety_improvement[0], 0.25, 1e-15);
  const double ess_a = 1 / ((p * p + (1 - p) * (1 - p)) * 2);
  EXPECT_NEAR(solution.predicted.ess_min_fraction, ess_a, 1e-9);
  EXPECT_NEAR(solution.predicted.ess_mean_fraction, (ess_a + 1) / 2, 1e-9);
  EXPECT_NEAR(solution.predicted.kl, (p * std::log(2 * p) + (1 - p) * std::log(2 * (1 - p))) / 2, 1e-9);
}

TEST(DualProblem, PredictionStandardErrorsAreThoseOfThePerPromptImprovements) {
  // β = 1, λ = ½. Prompt A: (r, g) = (0, 0), (0, 1): Δg = σ(½) − ½, Δr = 0. Prompt B: (0, 0),
  // (0, 3): Δg = 3σ(3/2) − 3/2, Δr = 0. Prompt C: (2, 0), (0, 2): logits 2 and 1, response 2
  // weighs σ(−1), so Δg = 2σ(−1) − 1 and Δr = 2(1 − σ(−1)) − 1.
  const auto sigmoid = [](double x) { return 1 / (1 + std::exp(-x)); };
  const OfflineScores scores({"A", "B", "C"}, {{0, 0}, {0, 0}, {2, 0}}, {{{0, 1}}, {{0, 3}}, {{0, 2}}});
  const std::vector<double> safety = {sigmoid(0.5) - 0.5, 3 * sigmoid(1.5) - 1.5, 2 * sigmoid(-1) - 1};
  const std::vector<double> reward = {0, 0, 2 * (1 - sigmoid(-1)) - 1};
  // Sample standard deviation (n − 1 = 2) over √3.
  const auto standard_error = [](const std::vector<double>& values) {
    const double mean = (values[0] + values[1] + values[2]) / 3;
    double squares = 0;
    for (const double value : values) squares += (value - mean) * (value - mean);
    return std::sqrt(squares / 2 / 3);
  };
  const can::DualPrediction prediction = can::predict(scores, 1.0, {0.5});
  EXPECT_NEAR(prediction.safety_improvement[0], (safety[0] + safety[1] + safety[2]) / 3, 1e-12);
  ASSERT_EQ(prediction.safety_improvement_stderr.size(), 1u);
  EXPECT_NEAR(prediction.safety_improvement_stderr[0], standard_error(safety), 1e-12);
  EXPECT_NEAR(prediction.reward_improvement_stderr, standard_error(reward), 1e-12);
  // Identical prompts: no spread, no standard error; one prompt: unknown.
  EXPECT_EQ(can::predict(two_response_prompts(4), 1.0, {0.5}).safety_improvement_stderr[0], 0.0);
  EXPECT_TRUE(std::isnan(can::predict(two_response_prompts(1), 1.0, {0.5}).safety_improvement_stderr[0]));
  EXPECT_TRUE(std::isnan(can::predict(two_response_prompts(1), 1.0, {0.5}).reward_improvement_stderr));
}

TEST(DualSolver, TwoConstraintsSatisfyKktConditions) {
  const OfflineScores scores = synthetic(2);
  const std::vector<std::vector<double>> margin_pairs{{0.05, 0.02}, {0.08, -0.5}, {-0.5, 0.05}, {-1, -1}};
  for (DualSolver solver : {DualSolver::kProjectedNewton, DualSolver::kProjectedGradient}) {
    for (const auto& margins : margin_pairs) {
      const DualSolution solution = solve_dual(scores, options_for(margins, solver));
      ASSERT_TRUE(solution.converged) << solution.message;
      const DualProblem problem(scores, 0.1, margins);
      const auto at = problem.evaluate(solution.lambda, false);
      for (int j = 0; j < 2; ++j) {
        const double tolerance = 1e-9 * problem.safety_scale()[j];
        const double slack = solution.predicted.safety_improvement[j] - margins[j];
        EXPECT_GE(solution.lambda[j], 0.0);
        EXPECT_GE(slack, -tolerance);                                                   // primal feasibility
        EXPECT_LE(solution.lambda[j] > 0 ? std::abs(at.gradient[j]) : 0.0, tolerance);  // stationarity
        EXPECT_LE(std::abs(solution.lambda[j] * slack), 1e-8);                          // complementary slackness
      }
    }
  }
  // The second margin is slack at (0.08, −0.5): only the first constraint binds.
  const DualSolution one_active = solve_dual(scores, options_for({0.08, -0.5}));
  EXPECT_GT(one_active.lambda[0], 0.0);
  EXPECT_EQ(one_active.lambda[1], 0.0);
}

// Each constraint is met to its own precision: g₁ spreads over ±1e3, g₂ over ±1e-3,
// and r is constant, so π_0 = π_ref and the gradient at λ = 0 is −b. With one
// tolerance from the larger scale (about 1e-9·1e3 = 1e-6) the component −b₂ = −5e-7
// would pass as converged at λ = 0 with the second margin unmet. (Newton only: PGD's
// one constant step, set by the largest curvature, barely moves λ₂ on such a problem.)
TEST(DualSolver, AConstraintOnASmallScaleIsMetToItsOwnTolerance) {
  std::vector<std::string> ids;
  std::vector<std::vector<double>> rewards;
  std::vector<std::vector<std::vector<double>>> safety;
  for (int i = 0; i < 20; ++i) {
    ids.push_back(std::to_string(i));
    rewards.push_back({0, 0, 0, 0});
    safety.push_back({{1e3, -1e3, 5e2, -5e2}, {-1e-3, 1e-3, 2e-3 * ((i % 2) - 0.5), 0}});
  }
  const OfflineScores scores(ids, rewards, safety);
  const std::vector<double> margins = {-1e9, 5e-7};
  const DualSolution solution = solve_dual(scores, options_for(margins, DualSolver::kProjectedNewton, 1.0));
  ASSERT_TRUE(solution.converged) << solution.message;
  const DualProblem problem(scores, 1.0, margins);
  EXPECT_EQ(solution.lambda[0], 0.0);
  EXPECT_GT(solution.lambda[1], 0.0);
  EXPECT_NEAR(solution.predicted.safety_improvement[1], margins[1], 1e-9 * problem.safety_scale()[1]);
}

TEST(DualSolver, ProjectedGradientAgreesWithNewton) {
  for (int constraints : {1, 2}) {
    const OfflineScores scores = synthetic(constraints);
    const std::vector<double> margins = constraints == 1 ? std::vector<double>{0.1} : std::vector<double>{0.06, 0.04};
    const DualSolution newton = solve_dual(scores, options_for(margins, DualSolver::kProjectedNewton));
    const DualSolution gradient = solve_dual(scores, options_for(margins, DualSolver::kProjectedGradient));
    ASSERT_TRUE(newton.converged && gradient.converged) << newton.message << " / " << gradient.message;
    EXPECT_LE(newton.iterations, 10);
    for (int j = 0; j < constraints; ++j) EXPECT_NEAR(gradient.lambda[j], newton.lambda[j], 1e-7 * newton.lambda[j]);
    EXPECT_NEAR(gradient.dual_value, newton.dual_value, 1e-12);
    EXPECT_NEAR(gradient.predicted.reward_improvement, newton.predicted.reward_improvement, 1e-9);
  }
}

TEST(DualSolver, CurvatureFarFromTheStartIsHandledByBothSolvers) {
  // r = (10, 0), g = (0, 1), β = 1: w₂ = σ(λ − 10), so the curvature w₂(1 − w₂) is
  // ~1e-4 at λ = 0 and 1 but ¼ at λ* = 10 + logit(½ + b). PGD's first constant
  // step is ~2500× too long and must be halved; Newton's first step overshoots.
  const OfflineScores scores({"a", "b"}, {{10, 0}, {10, 0}}, {{{0, 1}}, {{0, 1}}});
  for (DualSolver solver : {DualSolver::kProjectedNewton, DualSolver::kProjectedGradient}) {
    const DualSolution solution = solve_dual(scores, options_for({0.2}, solver, 1.0));
    ASSERT_TRUE(solution.converged) << solution.message;
    EXPECT_NEAR(solution.lambda[0], 10 + logit(0.7), 1e-8);
  }
}

TEST(DualSolver, MarginBeyondReachIsInfeasible) {
  const OfflineScores scores = two_response_prompts(4);  // at most all weight on g = 1: improvement ½
  for (DualSolver solver : {DualSolver::kProjectedNewton, DualSolver::kProjectedGradient}) {
    for (double margin : {0.6, 0.5}) {
      const DualSolution solution = solve_dual(scores, options_for({margin}, solver));
      EXPECT_FALSE(solution.feasible);
      EXPECT_FALSE(solution.converged);
      EXPECT_TRUE(solution.lambda.empty());
      EXPECT_EQ(solution.max_safety_improvement, std::vector<double>{0.5});
      EXPECT_TRUE(contains(solution.message, "infeasible"));
    }
    // Just inside the reach λ* is large but finite.
    const DualSolution near_edge = solve_dual(scores, options_for({0.49}, solver));
    ASSERT_TRUE(near_edge.converged) << near_edge.message;
    EXPECT_NEAR(near_edge.lambda[0], 1 + 0.1 * logit(0.99), 1e-8);
  }
}

TEST(DualSolver, JointlyUnreachableMarginsAreInfeasible) {
  // Responses (g1, g2) = (1, 0) and (0, 1): each margin alone reaches ½, but
  // improving g2 by 0.1 needs w₂ ≥ 0.6 and improving g1 by 0.1 needs w₂ ≤ 0.4.
  const OfflineScores scores({"a", "b"}, {{0, 0}, {0.5, 0}}, {{{1, 0}, {0, 1}}, {{1, 0}, {0, 1}}});
  for (DualSolver solver : {DualSolver::kProjectedNewton, DualSolver::kProjectedGradient}) {
    const DualSolution solution = solve_dual(scores, options_for({0.1, 0.1}, solver));
    EXPECT_FALSE(solution.feasible) << solution.message;
    EXPECT_TRUE(contains(solution.message, "infeasible: the margins of constraints 0 (margin 0.1) and 1 (margin 0.1) "
                                           "cannot be met together"))
        << solution.message;
    EXPECT_LT(solution.iterations, 1000);
    EXPECT_EQ(solution.max_safety_improvement, (std::vector<double>{0.5, 0.5}));
  }
}

TEST(DualSolver, IterationLimitIsReportedAsNotConverged) {
  DualOptions options = options_for({0.1}, DualSolver::kProjectedGradient);
  options.max_iterations = 2;
  const DualSolution solution = solve_dual(synthetic(1), options);
  EXPECT_TRUE(solution.feasible);
  EXPECT_FALSE(solution.converged);
  EXPECT_EQ(solution.iterations, 2);
  EXPECT_TRUE(contains(solution.message, "did not converge"));
}

TEST(DualSolver, SmallEffectiveSampleSizeIsFlagged) {
  const OfflineScores scores = synthetic(1);
  const DualProblem problem(scores, 0.1, {0});
  const double reach = problem.max_safety_improvement()[0];
  const DualSolution modest = solve_dual(scores, options_for({0.2 * reach}));
  EXPECT_TRUE(modest.warnings.empty());
  const DualSolution extreme = solve_dual(scores, options_for({0.97 * reach}));
  ASSERT_TRUE(extreme.converged) << extreme.message;
  EXPECT_LT(extreme.predicted.ess_mean_fraction, kMinReliableEssFraction);
  ASSERT_EQ(extreme.warnings.size(), 1u);
  EXPECT_TRUE(contains(extreme.warnings[0], "effective sample size"));
}

TEST(DualSolver, OptionsAreValidated) {
  const OfflineScores scores = synthetic(2, 10);
  EXPECT_TRUE(contains(error_message([&] { solve_dual(scores, options_for({0.1})); }),
                       "1 margin(s) given but the scores have 2 constraint(s)"));
  EXPECT_TRUE(contains(error_message([&] {
                         solve_dual(scores, options_for({0.1, 0.1}, DualSolver::kProjectedNewton, 0));
                       }),
                       "beta must be a positive number"));
  EXPECT_TRUE(contains(error_message([] { parse_dual_solver("adam"); }), "unknown dual solver 'adam'"));
}

TEST(DualSolution, ScoresTooLargeForDoublePrecisionAreAnErrorNotAConvergedSolve) {
  // Found by a probe: scores of ~1e155 overflowed the spread, and an infinite
  // tolerance reported "converged in 0 iterations" with predictions far off.
  for (const double huge : {1e155, 1e300}) {
    const OfflineScores scores({"a", "b"}, {{0.0, huge}, {huge, 0.0}}, {{{0.0, huge}}, {{-huge, 0.0}}});
    EXPECT_TRUE(contains(error_message([&] { solve_dual(scores, options_for({0.1})); }),
                         "the scores are too large to solve in double precision"))
        << huge;
  }
}

TEST(DualSolution, JsonCarriesTheDesignFields) {
  const OfflineScores scores = two_response_prompts(2);
  const nlohmann::json solved = to_json(solve_dual(scores, options_for({0.3})));
  for (const char* key : {"beta", "margins", "lambda", "dual_value", "iterations", "converged", "feasible", "predicted",
                          "ess", "num_prompts", "warnings", "max_safety_improvement"}) {
    EXPECT_TRUE(solved.contains(key)) << key;
  }
  EXPECT_NEAR(solved["lambda"][0].get<double>(), 1 + 0.1 * logit(0.8), 1e-9);
  EXPECT_NEAR(solved["predicted"]["safety_improvement"][0].get<double>(), 0.3, 1e-9);
  EXPECT_TRUE(solved["predicted"].contains("reward_improvement"));
  EXPECT_TRUE(solved["predicted"].contains("kl"));
  EXPECT_EQ(solved["predicted"]["safety_improvement_stderr"][0], 0.0);  // identical prompts
  EXPECT_EQ(solved["predicted"]["reward_improvement_stderr"], 0.0);
  EXPECT_TRUE(solved["ess"].contains("min") && solved["ess"].contains("mean"));
  EXPECT_EQ(solved["num_prompts"], 2);
  EXPECT_EQ(solved["feasible"], true);

  const nlohmann::json infeasible = to_json(solve_dual(scores, options_for({0.7})));
  EXPECT_EQ(infeasible["feasible"], false);
  EXPECT_TRUE(infeasible["lambda"].is_null());
  EXPECT_TRUE(infeasible["predicted"].is_null());
  EXPECT_EQ(infeasible["max_safety_improvement"][0], 0.5);
}

TEST(DualSolution, JsonReadsBackToTheSameSolutionAndChecksItsFormatVersion) {
  const OfflineScores scores = two_response_prompts(2);
  for (const double margin : {0.3, 0.7}) {  // feasible, infeasible
    const nlohmann::json written = to_json(solve_dual(scores, options_for({margin})));
    EXPECT_EQ(written["format_version"], can::kArtifactFormatVersion);
    EXPECT_EQ(to_json(can::dual_solution_from_json(written, "dual.json")), written) << margin;
  }
  // Units: unknown to can-dual (null), recorded by the pipelines' dual stage.
  DualSolution with_units = solve_dual(scores, options_for({0.3}));
  EXPECT_TRUE(to_json(with_units)["safety_unit"].is_null());
  EXPECT_TRUE(can::dual_solution_from_json(to_json(with_units), "dual.json").safety_unit.empty());
  with_units.reward_unit = "implicit_reward";
  with_units.safety_unit = "implicit_reward";
  EXPECT_EQ(can::dual_solution_from_json(to_json(with_units), "dual.json").safety_unit, "implicit_reward");
  nlohmann::json old = to_json(solve_dual(scores, options_for({0.3})));
  old.erase("format_version");
  EXPECT_TRUE(contains(error_message([&] { can::dual_solution_from_json(old, "old/dual.json"); }),
                       "old/dual.json: no format_version"));
  old["format_version"] = can::kArtifactFormatVersion + 1;
  EXPECT_TRUE(contains(error_message([&] { can::dual_solution_from_json(old, "new/dual.json"); }),
                       fmt::format("new/dual.json: format_version {} is not the version {} this CAN reads",
                                   can::kArtifactFormatVersion + 1, can::kArtifactFormatVersion)));
  // Versions 1 (before dual.json recorded its units) and 2 (before the predictions' standard
  // errors) are another CAN's files too.
  for (const int version : {1, 2}) {
    old["format_version"] = version;
    EXPECT_TRUE(contains(error_message([&] { can::dual_solution_from_json(old, "v/dual.json"); }),
                         fmt::format("format_version {} is not the version {}", version, can::kArtifactFormatVersion)));
  }
  // One prompt: the standard errors are unknown, null in the file and NaN read back.
  const nlohmann::json single = to_json(solve_dual(two_response_prompts(1), options_for({0.3})));
  EXPECT_TRUE(single["predicted"]["safety_improvement_stderr"][0].is_null());
  EXPECT_TRUE(std::isnan(can::dual_solution_from_json(single, "one/dual.json").predicted.reward_improvement_stderr));
  old["format_version"] = can::kArtifactFormatVersion;
  old["predicted"].erase("kl");
  EXPECT_TRUE(contains(error_message([&] { can::dual_solution_from_json(old, "x/dual.json"); }),
                       "x/dual.json: predicted: missing field 'kl'"));
}

TEST(DualSweep, ParsesEvenlySpacedMargins) {
  EXPECT_EQ(parse_margin_sweep("0:1:5").margins, (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  EXPECT_EQ(parse_margin_sweep("0:1:5").constraint, 0);
  EXPECT_EQ(parse_margin_sweep("-0.5:0.5:3").margins, (std::vector<double>{-0.5, 0, 0.5}));
  EXPECT_EQ(parse_margin_sweep("-0.1:0.2:4").margins[1], 0.0);
  EXPECT_EQ(parse_margin_sweep("0.2:0.2:1").margins, (std::vector<double>{0.2}));
  EXPECT_EQ(parse_margin_sweep("1:0:1:3").constraint, 1);
  EXPECT_EQ(parse_margin_sweep("1:0:1:3").margins, (std::vector<double>{0, 0.5, 1}));
  for (const char* bad : {"0:1", "0:1:2:3:4", "a:1:3", "0:1:0", "1:0:3", "0:1:2.5", "0:1:1", "-1:0:1:3", "0.5:0:1:3"}) {
    EXPECT_TRUE(contains(error_message([&] { parse_margin_sweep(bad); }), "margin sweep")) << bad;
  }
}

TEST(DualSweep, SolvesEachMarginAndMarksUnreachableOnes) {
  const OfflineScores scores = two_response_prompts(2);
  const std::vector<DualSolution> sweep =
      sweep_margins(scores, options_for({}), parse_margin_sweep("0.1:0.7:4"));  // 0.1, 0.3, 0.5, 0.7
  ASSERT_EQ(sweep.size(), 4u);
  EXPECT_NEAR(sweep[0].lambda[0], 1 + 0.1 * logit(0.6), 1e-9);
  EXPECT_NEAR(sweep[1].lambda[0], 1 + 0.1 * logit(0.8), 1e-9);
  EXPECT_FALSE(sweep[2].feasible);
  EXPECT_FALSE(sweep[3].feasible);
  EXPECT_TRUE(contains(error_message([] { sweep_margins(synthetic(2, 10), DualOptions{}, {1, {0.1}}); }),
                       "needs every constraint's margin"));

  const PlotFigure figure = prediction_sweep_figure(sweep, 0, "sweep");
  ASSERT_EQ(figure.panels.size(), 5u);
  EXPECT_EQ(figure.panels[0].series[0].y[1], sweep[1].lambda[0]);
  EXPECT_TRUE(std::isnan(figure.panels[0].series[0].y[2]));  // infeasible: a gap in the line
  ASSERT_EQ(figure.panels[0].vertical_lines.size(), 1u);
  EXPECT_EQ(figure.panels[0].vertical_lines[0].x, 0.5);
}

}  // namespace
}  // namespace can
