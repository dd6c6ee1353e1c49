// The entry point the CLI and the pipeline call, and the JSON of docs/design.md §6.
#include <nlohmann/json.hpp>

#include "can/dual.h"
#include "can/error.h"

namespace can {

DualSolver parse_dual_solver(const std::string& name) {
  if (name == "newton") return DualSolver::kProjectedNewton;
  if (name == "pgd") return DualSolver::kProjectedGradient;
  fail("unknown dual solver '{}' (expected newton or pgd)", name);
}

std::string dual_solver_name(DualSolver solver) { return solver == DualSolver::kProjectedNewton ? "newton" : "pgd"; }

DualSolution solve_dual(const OfflineScores& scores, const DualOptions& options) {
  const DualProblem problem(scores, options.beta, options.margins);
  return options.solver == DualSolver::kProjectedNewton ? solve_projected_newton(problem, options)
                                                        : solve_projected_gradient(problem, options);
}

nlohmann::json to_json(const DualSolution& solution) {
  using nlohmann::json;
  json result;
  result["beta"] = solution.beta;
  result["margins"] = solution.margins;
  result["solver"] = dual_solver_name(solution.solver);
  result["feasible"] = solution.feasible;
  result["converged"] = solution.converged;
  result["iterations"] = solution.iterations;
  result["num_prompts"] = solution.num_prompts;
  result["max_safety_improvement"] = solution.max_safety_improvement;
  result["warnings"] = solution.warnings;
  result["message"] = solution.message;
  if (!solution.feasible) {
    for (const char* key : {"lambda", "dual_value", "projected_gradient", "predicted", "ess"}) result[key] = nullptr;
    return result;
  }
  result["lambda"] = solution.lambda;
  result["dual_value"] = solution.dual_value;
  result["projected_gradient"] = solution.projected_gradient;
  result["predicted"] = {{"safety_improvement", solution.predicted.safety_improvement},
                         {"reward_improvement", solution.predicted.reward_improvement},
                         {"kl", solution.predicted.kl}};
  result["ess"] = {{"min", solution.predicted.ess_min_fraction}, {"mean", solution.predicted.ess_mean_fraction}};
  return result;
}

}  // namespace can
