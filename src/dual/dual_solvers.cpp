// Projected Newton and projected gradient descent for λ* = argmin_{λ≥0} D̂(λ),
// with the infeasibility checks both share.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>

#include "can/dual.h"
#include "can/error.h"

namespace can {
namespace {

using Evaluation = DualProblem::Evaluation;

// Armijo sufficient-decrease fraction of the line searches.
constexpr double kArmijoFraction = 1e-4;
constexpr int kMaxBacktracks = 60;
// Beyond λ_j·s_j = kLambdaCap·(β + s_r) the tilt by g_j outweighs the
// temperature and the whole spread of r by ten orders of magnitude: π_λ is the
// argmax of g to double precision, and a larger λ changes nothing we can compute.
constexpr double kLambdaCap = 1e10;

// Component j of the projected gradient: at a bound λ_j = 0 only a negative gradient counts.
double projected_component(const std::vector<double>& lambda, const std::vector<double>& gradient, size_t j) {
  return lambda[j] > 0 ? gradient[j] : std::min(gradient[j], 0.0);
}

// |projected gradient|_∞.
double projected_gradient_norm(const std::vector<double>& lambda, const std::vector<double>& gradient) {
  double result = 0;
  for (size_t j = 0; j < lambda.size(); ++j) result = std::max(result, std::abs(projected_component(lambda, gradient, j)));
  return result;
}

// Rounding slack for comparing two values of D̂: without it the line search
// rejects steps whose true decrease is below the rounding of D̂ near λ*.
double comparison_slack(double value_before, double value_after, double beta) {
  return 1e-12 * std::max({std::abs(value_before), std::abs(value_after), beta});
}

// Solver-independent bookkeeping: tolerances, infeasibility, the result.
class SolverRun {
 public:
  SolverRun(const DualProblem& problem, const DualOptions& options, DualSolver solver) : problem_(problem) {
    check(std::isfinite(options.gradient_tolerance) && options.gradient_tolerance > 0,
          "dual: gradient_tolerance must be positive, got {}", options.gradient_tolerance);
    check(options.max_iterations > 0, "dual: max_iterations must be positive, got {}", options.max_iterations);
    const int m = problem.num_constraints();
    // Component j of the gradient is in g_j's unit, so each constraint has its own tolerance: one
    // constraint on a scale far below another's is still met to its own precision.
    // Hessian scale at λ = 0 is s²/β; a floor far below it keeps divisions finite.
    tolerance_.resize(m);
    curvature_floor_.resize(m);
    for (int j = 0; j < m; ++j) {
      const double s = problem.safety_scale()[j] > 0 ? problem.safety_scale()[j] : 1.0;
      tolerance_[j] = options.gradient_tolerance * s;
      curvature_floor_[j] = 1e-12 * s * s / problem.beta();
    }
    solution_.beta = problem.beta();
    solution_.margins = problem.margins();
    solution_.solver = solver;
    solution_.max_safety_improvement = problem.max_safety_improvement();
    solution_.num_prompts = problem.num_prompts();
  }

  // The largest |projected gradient_j| / tolerance_j: converged when at most 1.
  double tolerance_ratio(const std::vector<double>& lambda, const std::vector<double>& gradient) const {
    double result = 0;
    for (size_t j = 0; j < lambda.size(); ++j) {
      result = std::max(result, std::abs(projected_component(lambda, gradient, j)) / tolerance_[j]);
    }
    return result;
  }
  bool converged(const std::vector<double>& lambda, const Evaluation& at) const {
    return tolerance_ratio(lambda, at.gradient) <= 1;
  }
  const std::vector<double>& curvature_floor() const { return curvature_floor_; }

  // A margin no re-weighting of the samples reaches, even for one constraint alone:
  // b_j ≥ mean_i max_k g_ijk − ḡ_j. At equality λ*_j would be infinite, unless g_j
  // is constant within every prompt (reach 0), where every λ meets b_j = 0.
  std::optional<std::string> unreachable_margin() const {
    for (int j = 0; j < problem_.num_constraints(); ++j) {
      const double reachable = problem_.max_safety_improvement()[j];
      const double margin = problem_.margins()[j];
      const double tolerance = tolerance_[j];
      if (margin > reachable + tolerance || (margin >= reachable - tolerance && reachable > tolerance)) {
        return fmt::format(
            "infeasible: margin {} of constraint {} is not below {:.6g}, the largest safety improvement that "
            "re-weighting the sampled responses can reach (all weight on each prompt's safest response)",
            problem_.margins()[j], j, reachable);
      }
    }
    return std::nullopt;
  }

  // Called after every accepted step. λ can only run away when D̂ is unbounded
  // below or its infimum is at infinity; a direction d = λ/|λ|₁ with recession
  // slope h(d) < 0 proves it (no distribution over the samples meets all margins
  // then). Checked each time |λ|₁ doubles, so at most ~log₂(cap) times.
  std::optional<std::string> divergence(const std::vector<double>& lambda) {
    const double norm = std::accumulate(lambda.begin(), lambda.end(), 0.0);
    if (norm <= 0) return std::nullopt;
    if (norm >= next_certificate_norm_) {
      next_certificate_norm_ = 2 * norm;
      std::vector<double> direction = lambda;
      for (double& value : direction) value /= norm;
      const double slope = problem_.recession_slope(direction);
      double tolerance = 0;  // the slope is Σ_j d_j·(a gradient in g_j's unit)
      for (size_t j = 0; j < direction.size(); ++j) tolerance += direction[j] * tolerance_[j];
      if (slope < -tolerance) {
        // The constraints the certificate weighs are the ones that conflict.
        const double largest = *std::max_element(direction.begin(), direction.end());
        std::vector<std::string> conflicting;
        for (size_t j = 0; j < direction.size(); ++j) {
          if (direction[j] > 1e-6 * largest) conflicting.push_back(fmt::format("{} (margin {})", j, problem_.margins()[j]));
        }
        if (conflicting.size() < 2) {
          return fmt::format(
              "infeasible: the margin of constraint {} cannot be met: along λ ∝ [{:.4g}] the dual decreases without "
              "bound (slope {:.4g}), so no re-weighting of the sampled responses reaches it",
              conflicting.empty() ? std::string("?") : conflicting.front(), fmt::join(direction, ", "), slope);
        }
        return fmt::format(
            "infeasible: the margins of constraints {} cannot be met together; along λ ∝ [{:.4g}] the dual decreases "
            "without bound (slope {:.4g}), so no re-weighting of the sampled responses reaches them all",
            fmt::join(conflicting, " and "), fmt::join(direction, ", "), slope);
      }
    }
    for (int j = 0; j < problem_.num_constraints(); ++j) {
      const double s = problem_.safety_scale()[j];
      if (s > 0 && lambda[j] * s >= kLambdaCap * (problem_.beta() + problem_.reward_scale())) {
        return fmt::format(
            "infeasible: λ_{} of constraint {} diverges ({:.4g}); the margins lie at the edge of what re-weighting the "
            "sampled responses can reach, where λ* is infinite",
            j, j, lambda[j]);
      }
    }
    return std::nullopt;
  }

  DualSolution infeasible(std::string message, int iterations) {
    solution_.feasible = false;
    solution_.converged = false;
    solution_.iterations = iterations;
    solution_.message = std::move(message);
    solution_.predicted = DualPrediction{};
    return solution_;
  }

  DualSolution finish(const std::vector<double>& lambda, const Evaluation& at, int iterations, bool converged,
                      std::string message) {
    solution_.feasible = true;
    solution_.converged = converged;
    solution_.lambda = lambda;
    solution_.dual_value = at.value;
    solution_.projected_gradient = projected_gradient_norm(lambda, at.gradient);
    solution_.iterations = iterations;
    solution_.predicted = problem_.predict(lambda);
    solution_.message = std::move(message);
    bool finite = std::isfinite(solution_.dual_value) && std::isfinite(solution_.projected_gradient) &&
                  std::isfinite(solution_.predicted.reward_improvement) && std::isfinite(solution_.predicted.kl);
    for (const double value : solution_.predicted.safety_improvement) finite = finite && std::isfinite(value);
    for (const double value : lambda) finite = finite && std::isfinite(value);
    check(finite, "dual: the solve reached non-finite values (λ {}, dual value {}, predicted KL {}); the scores are "
          "too large or too spread for double precision: rescale them", fmt::join(lambda, ", "), solution_.dual_value,
          solution_.predicted.kl);
    if (solution_.predicted.ess_mean_fraction < kMinReliableEssFraction) {
      solution_.warnings.push_back(fmt::format(
          "the effective sample size is small (mean {:.3f}, min {:.3f} of N): π_λ rests on a few responses per "
          "prompt, so the predicted improvements are unreliable; sample more responses or lower the margin",
          solution_.predicted.ess_mean_fraction, solution_.predicted.ess_min_fraction));
    }
    return solution_;
  }

  DualSolution not_converged(const std::vector<double>& lambda, const Evaluation& at, int iterations,
                             const std::string& reason) {
    return finish(lambda, at, iterations, false,
                  fmt::format("did not converge: {} after {} iterations (|projected gradient| {:.3g}; the largest "
                              "|projected gradient_j| / tolerance_j is {:.3g} > 1)",
                              reason, iterations, projected_gradient_norm(lambda, at.gradient),
                              tolerance_ratio(lambda, at.gradient)));
  }

  std::string converged_message(const std::vector<double>& lambda, const Evaluation& at, int iterations) const {
    return fmt::format("converged in {} iterations (|projected gradient| {:.3g}; the largest |projected gradient_j| "
                       "/ tolerance_j is {:.3g} <= 1)",
                       iterations, projected_gradient_norm(lambda, at.gradient), tolerance_ratio(lambda, at.gradient));
  }

 private:
  const DualProblem& problem_;
  std::vector<double> tolerance_;  // [m] gradient_tolerance · s_j
  std::vector<double> curvature_floor_;
  double next_certificate_norm_ = 0;
  DualSolution solution_;
};

struct Step {
  std::vector<double> lambda;
  Evaluation evaluation;
};

// Armijo backtracking along the projection arc λ(α) = max(0, λ + α·d):
// accepts D̂(λ(α)) ≤ D̂(λ) + σ·∇ᵀ(λ(α) − λ). Empty when the arc is no descent.
std::optional<Step> projected_line_search(const DualProblem& problem, const std::vector<double>& lambda,
                                          const Evaluation& current, const std::vector<double>& direction) {
  const int m = problem.num_constraints();
  double alpha = 1;
  for (int backtrack = 0; backtrack < kMaxBacktracks; ++backtrack, alpha /= 2) {
    Step trial;
    trial.lambda.resize(m);
    double predicted_change = 0;
    for (int j = 0; j < m; ++j) {
      trial.lambda[j] = std::max(0.0, lambda[j] + alpha * direction[j]);
      predicted_change += current.gradient[j] * (trial.lambda[j] - lambda[j]);
    }
    if (!(predicted_change < 0)) return std::nullopt;
    trial.evaluation = problem.evaluate(trial.lambda, /*with_hessian=*/true);
    const double slack = comparison_slack(current.value, trial.evaluation.value, problem.beta());
    if (trial.evaluation.value <= current.value + kArmijoFraction * predicted_change + slack) return trial;
  }
  return std::nullopt;
}

// Solves A x = b for a small symmetric positive definite A ([n, n] row-major) by
// Cholesky; empty when A is not numerically positive definite.
std::optional<std::vector<double>> solve_positive_definite(std::vector<double> a, std::vector<double> b, int n) {
  for (int col = 0; col < n; ++col) {
    double pivot = a[col * n + col];
    for (int k = 0; k < col; ++k) pivot -= a[col * n + k] * a[col * n + k];
    if (!(pivot > 0)) return std::nullopt;
    a[col * n + col] = std::sqrt(pivot);
    for (int row = col + 1; row < n; ++row) {
      double value = a[row * n + col];
      for (int k = 0; k < col; ++k) value -= a[row * n + k] * a[col * n + k];
      a[row * n + col] = value / a[col * n + col];
    }
  }
  for (int row = 0; row < n; ++row) {  // L y = b
    for (int k = 0; k < row; ++k) b[row] -= a[row * n + k] * b[k];
    b[row] /= a[row * n + row];
  }
  for (int row = n - 1; row >= 0; --row) {  // Lᵀ x = y
    for (int k = row + 1; k < n; ++k) b[row] -= a[k * n + row] * b[k];
    b[row] /= a[row * n + row];
  }
  return b;
}

// Newton direction on the free variables (λ_j > 0 or ∇_j ≤ 0); variables held at
// the bound by a positive gradient stay there. A relative ridge of 1e-12 keeps a
// singular Hessian (all weight on one response, or collinear constraints) solvable.
std::optional<std::vector<double>> newton_direction(const std::vector<double>& lambda, const Evaluation& at,
                                                    const std::vector<double>& curvature_floor) {
  const int m = static_cast<int>(lambda.size());
  std::vector<int> free;
  for (int j = 0; j < m; ++j) {
    if (lambda[j] > 0 || at.gradient[j] <= 0) free.push_back(j);
  }
  std::vector<double> direction(m, 0.0);
  const int n = static_cast<int>(free.size());
  if (n == 0) return direction;
  std::vector<double> hessian(static_cast<size_t>(n) * n);
  std::vector<double> negative_gradient(n);
  double trace = 0;
  for (int a = 0; a < n; ++a) {
    negative_gradient[a] = -at.gradient[free[a]];
    trace += at.hessian[free[a] * m + free[a]];
    for (int b = 0; b < n; ++b) hessian[a * n + b] = at.hessian[free[a] * m + free[b]];
  }
  for (int a = 0; a < n; ++a) hessian[a * n + a] += std::max(1e-12 * trace, curvature_floor[free[a]]);
  const auto solved = solve_positive_definite(std::move(hessian), std::move(negative_gradient), n);
  if (!solved) return std::nullopt;
  for (int a = 0; a < n; ++a) direction[free[a]] = (*solved)[a];
  return direction;
}

// −∇ scaled by the inverse diagonal curvature: a descent along the projection arc
// whenever λ is not optimal.
std::vector<double> scaled_gradient_direction(const Evaluation& at, const std::vector<double>& curvature_floor) {
  const int m = static_cast<int>(at.gradient.size());
  std::vector<double> direction(m);
  for (int j = 0; j < m; ++j) {
    direction[j] = -at.gradient[j] / std::max(at.hessian[j * m + j], curvature_floor[j]);
  }
  return direction;
}

double trace(const std::vector<double>& matrix, int m) {
  double result = 0;
  for (int j = 0; j < m; ++j) result += matrix[j * m + j];
  return result;
}

}  // namespace

DualSolution solve_projected_newton(const DualProblem& problem, const DualOptions& options) {
  SolverRun run(problem, options, DualSolver::kProjectedNewton);
  if (auto reason = run.unreachable_margin()) return run.infeasible(*reason, 0);
  std::vector<double> lambda(problem.num_constraints(), 0.0);
  Evaluation current = problem.evaluate(lambda, /*with_hessian=*/true);
  for (int iteration = 0;; ++iteration) {
    if (run.converged(lambda, current)) {
      return run.finish(lambda, current, iteration, true, run.converged_message(lambda, current, iteration));
    }
    if (iteration == options.max_iterations) {
      return run.not_converged(lambda, current, iteration, "iteration limit reached");
    }
    std::optional<Step> step;
    if (auto direction = newton_direction(lambda, current, run.curvature_floor())) {
      step = projected_line_search(problem, lambda, current, *direction);
    }
    if (!step) {
      step = projected_line_search(problem, lambda, current, scaled_gradient_direction(current, run.curvature_floor()));
    }
    if (!step) return run.not_converged(lambda, current, iteration + 1, "the line search found no decrease");
    lambda = std::move(step->lambda);
    current = std::move(step->evaluation);
    if (auto reason = run.divergence(lambda)) return run.infeasible(*reason, iteration + 1);
  }
}

DualSolution solve_projected_gradient(const DualProblem& problem, const DualOptions& options) {
  SolverRun run(problem, options, DualSolver::kProjectedGradient);
  if (auto reason = run.unreachable_margin()) return run.infeasible(*reason, 0);
  const int m = problem.num_constraints();
  const std::vector<double> initial_lambda(m, 1.0);  // the paper's λ₀ = 1
  // A constant step of 1/curvature, the larger of the curvatures at 0 and at λ₀
  // (the trace bounds the largest eigenvalue of the m×m Hessian).
  const double curvature_at_zero = trace(problem.evaluate(std::vector<double>(m, 0.0), true).hessian, m);
  Evaluation current = problem.evaluate(initial_lambda, /*with_hessian=*/true);
  const double curvature_scale = std::accumulate(run.curvature_floor().begin(), run.curvature_floor().end(), 0.0);
  double step = 1 / std::max({curvature_at_zero, trace(current.hessian, m), curvature_scale});
  std::vector<double> lambda = initial_lambda;
  std::vector<double> trial(m);
  for (int iteration = 0;; ++iteration) {
    if (run.converged(lambda, current)) {
      return run.finish(lambda, current, iteration, true, run.converged_message(lambda, current, iteration));
    }
    if (iteration == options.max_iterations) {
      return run.not_converged(lambda, current, iteration, "iteration limit reached");
    }
    for (int j = 0; j < m; ++j) trial[j] = std::max(0.0, lambda[j] - step * current.gradient[j]);
    Evaluation next = problem.evaluate(trial, /*with_hessian=*/false);
    if (next.value > current.value + comparison_slack(current.value, next.value, problem.beta())) {
      // On a smooth convex function a constant step that raises D̂ is too long to
      // settle (it oscillates or diverges): halve it and start again from λ₀.
      step /= 2;
      lambda = initial_lambda;
      current = problem.evaluate(lambda, /*with_hessian=*/false);
      continue;
    }
    lambda = trial;
    current = std::move(next);
    if (auto reason = run.divergence(lambda)) return run.infeasible(*reason, iteration + 1);
  }
}

}  // namespace can
