// The dual of the constrained alignment problem (docs/design.md §2), solved once from
// offline scores: λ* = argmin_{λ≥0} D̂(λ), and what the tilted policy
// π_λ ∝ π_ref·exp((r + λᵀg)/β) is predicted to achieve before any training.
//
// Units: r and g in score units, β in score units per nat, λ in r-units per
// g-unit, margins b in g units, KL in nats.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "can/offline_scores.h"

namespace can {

enum class DualSolver { kProjectedNewton, kProjectedGradient };

// "newton" or "pgd"; anything else is an error.
DualSolver parse_dual_solver(const std::string& name);
std::string dual_solver_name(DualSolver solver);

struct DualOptions {
  double beta = 0.1;
  std::vector<double> margins;  // [m] b_j, required improvement of E[g_j] over π_ref
  DualSolver solver = DualSolver::kProjectedNewton;
  // Converged when |projected gradient_j| ≤ gradient_tolerance · s_j for every constraint j, s_j the
  // within-prompt standard deviation of g_j (1 when g_j is constant within prompts).
  double gradient_tolerance = 1e-9;
  int max_iterations = 10000;
};

// What π_λ achieves on the sampled responses, estimated with the self-normalized
// importance weights w_ik = softmax_k((r_ik + λᵀg_ik)/β); every prompt weighs the same.
struct DualPrediction {
  std::vector<double> safety_improvement;  // [m] Σ w g − ḡ
  double reward_improvement = 0;           // Σ w r − r̄
  // Standard errors of the two means above over the prompts: the sample standard deviation
  // (n − 1) of the per-prompt improvements Σ_k w_ik g_ik − ḡ_i over √M; NaN for M < 2. They
  // measure how far the prediction may lie from the same λ's improvement on the prompts'
  // whole distribution (and on all of π_ref's responses, as each prompt's own N samples
  // vary too); not the bias of self-normalized weights (see the ESS) nor anything of DPO.
  std::vector<double> safety_improvement_stderr;  // [m]
  double reward_improvement_stderr = 0;
  double kl = 0;                           // KL(π_λ ‖ π_ref) in nats, mean over prompts
  double ess_min_fraction = 0;             // min over prompts of (1/Σ_k w_ik²) / N_i
  double ess_mean_fraction = 0;            // mean over prompts of the same
};

// Predictions are flagged when the mean ESS fraction falls below this.
// Self-normalized importance sampling with an effective sample size n_eff
// behaves like a plain mean over n_eff draws (Kong 1992): bias and variance grow
// like 1/n_eff. Below 5% of N (≈6 of 128 responses) π_λ sits on a few samples per
// prompt, and the samples no longer show where the tilted policy would go. The
// mean, not the min, decides: the predictions average over prompts, and with
// heavy-tailed scores some prompt has an ESS of 1 at almost any λ (the min is
// reported too).
inline constexpr double kMinReliableEssFraction = 0.05;

struct DualSolution {
  // The units of the scores it was solved on (scorer.h's k*Unit), when known: the pipelines'
  // dual stage records its scorer's; can-dual on a scores file cannot know them (empty).
  std::string reward_unit, safety_unit;
  double beta = 0;
  std::vector<double> margins;  // [m]
  DualSolver solver = DualSolver::kProjectedNewton;
  bool feasible = true;           // false: no finite λ meets the margins; lambda and predicted are then empty
  bool converged = false;         // a λ* within the gradient tolerance was found (never when infeasible)
  std::vector<double> lambda;     // [m] λ*, empty when infeasible
  double dual_value = 0;          // D̂(λ*)
  double projected_gradient = 0;  // |projected gradient|_∞ at λ, g units
  int iterations = 0;
  DualPrediction predicted;
  std::vector<double> max_safety_improvement;  // [m] largest improvement of g_j alone: mean_i max_k g_ijk − ḡ_j
  int64_t num_prompts = 0;
  std::vector<std::string> warnings;  // e.g. small effective sample size; for the caller to log
  std::string message;                // one line on the outcome (converged, infeasible, did not converge)
};

// The constraints (0-based) with λ*_j = 0: slack, met by aligning for the others
// (complementary slackness); none when infeasible.
std::vector<int> slack_constraints(const DualSolution& solution);

// The empirical dual D̂ for fixed scores, β and margins. Holds per-prompt
// centred copies of the scores, so per-prompt constants in r or g cancel exactly.
class DualProblem {
 public:
  DualProblem(const OfflineScores& scores, double beta, std::vector<double> margins);

  struct Evaluation {
    double value = 0;              // D̂(λ)
    std::vector<double> gradient;  // [m] ∇D̂(λ) = Σ w g − ḡ − b
    std::vector<double> hessian;   // [m, m] row-major (1/β) E_x Cov_w[g]; empty unless asked for
  };
  Evaluation evaluate(const std::vector<double>& lambda, bool with_hessian) const;
  DualPrediction predict(const std::vector<double>& lambda) const;

  // Recession slope h(d) = lim_{t→∞} D̂(t·d)/t = mean_i max_k dᵀg_ik − dᵀ(ḡ + b).
  // h(d) < 0 for some d ≥ 0 proves the margins infeasible.
  double recession_slope(const std::vector<double>& direction) const;

  int num_constraints() const { return num_constraints_; }
  int64_t num_prompts() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  double beta() const { return beta_; }
  const std::vector<double>& margins() const { return margins_; }
  const std::vector<double>& max_safety_improvement() const { return max_safety_improvement_; }
  // [m] sqrt(mean over prompts of the within-prompt variance of g_j).
  const std::vector<double>& safety_scale() const { return safety_scale_; }
  double reward_scale() const { return reward_scale_; }  // the same for r

 private:
  double beta_;
  std::vector<double> margins_;
  int num_constraints_;
  std::vector<int64_t> offsets_;  // [M + 1]
  std::vector<double> rewards_;   // [total] r − mean_k r of its prompt
  std::vector<double> safety_;    // [total, m] g − mean_k g of its prompt
  double mean_reward_;            // r̄, mean of per-prompt means
  int64_t max_responses_;         // max_i N_i, for scratch buffers
  std::vector<double> max_safety_improvement_;
  std::vector<double> safety_scale_;
  double reward_scale_;
};

// Newton on the free variables, gradient steps on the active bound λ_j = 0,
// Armijo backtracking along the projection arc; starts at λ = 0.
DualSolution solve_projected_newton(const DualProblem& problem, const DualOptions& options);
// The paper's method: λ₀ = 1, a constant step (1/curvature, the larger of the
// Hessian traces at 0 and λ₀), halved with a restart from λ₀ whenever a step
// raises D̂ (too long to settle). Where the paper stops after 200 iterations, this
// runs to the tolerance or max_iterations (restarted steps count).
DualSolution solve_projected_gradient(const DualProblem& problem, const DualOptions& options);
// Validates the options against the scores, builds the problem and runs options.solver.
DualSolution solve_dual(const OfflineScores& scores, const DualOptions& options);

// Predictions of π_λ for a given λ (no solve).
DualPrediction predict(const OfflineScores& scores, double beta, const std::vector<double>& lambda);

// dual.json (can-dual --json, the pipeline's dual stage): format_version
// (json_fields.h) and the fields of docs/design.md §6; lambda, dual_value,
// projected_gradient, predicted and ess are null when infeasible.
nlohmann::json to_json(const DualSolution& solution);
// The inverse of to_json; `where` names the source in errors.
DualSolution dual_solution_from_json(const nlohmann::json& json, const std::string& where);
// Writes to_json(solution) to `path` atomically; reads it back.
void write_dual_solution(const std::filesystem::path& path, const DualSolution& solution);
DualSolution read_dual_solution(const std::filesystem::path& path);

}  // namespace can
