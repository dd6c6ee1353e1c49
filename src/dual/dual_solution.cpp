// The entry point the CLI and the pipeline call, and the JSON of docs/design.md §6.
#include <nlohmann/json.hpp>

#include "can/atomic_file.h"
#include "can/dual.h"
#include "can/error.h"
#include "can/json_fields.h"

namespace can {

DualSolver parse_dual_solver(const std::string& name) {
  if (name == "newton") return DualSolver::kProjectedNewton;
  if (name == "pgd") return DualSolver::kProjectedGradient;
  fail("unknown dual solver '{}' (expected newton or pgd)", name);
}

std::string dual_solver_name(DualSolver solver) { return solver == DualSolver::kProjectedNewton ? "newton" : "pgd"; }

std::vector<int> slack_constraints(const DualSolution& solution) {
  std::vector<int> slack;
  if (!solution.feasible) return slack;
  for (size_t j = 0; j < solution.lambda.size(); ++j) {
    if (solution.lambda[j] == 0) slack.push_back(static_cast<int>(j));
  }
  return slack;
}

DualSolution solve_dual(const OfflineScores& scores, const DualOptions& options) {
  const DualProblem problem(scores, options.beta, options.margins);
  return options.solver == DualSolver::kProjectedNewton ? solve_projected_newton(problem, options)
                                                        : solve_projected_gradient(problem, options);
}

nlohmann::json to_json(const DualSolution& solution) {
  using nlohmann::json;
  json result;
  result["format_version"] = kArtifactFormatVersion;
  result["reward_unit"] = solution.reward_unit.empty() ? json(nullptr) : json(solution.reward_unit);
  result["safety_unit"] = solution.safety_unit.empty() ? json(nullptr) : json(solution.safety_unit);
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
                         {"safety_improvement_stderr", numbers_or_nulls(solution.predicted.safety_improvement_stderr)},
                         {"reward_improvement", solution.predicted.reward_improvement},
                         {"reward_improvement_stderr", number_or_null(solution.predicted.reward_improvement_stderr)},
                         {"kl", solution.predicted.kl}};
  result["ess"] = {{"min", solution.predicted.ess_min_fraction}, {"mean", solution.predicted.ess_mean_fraction}};
  return result;
}

DualSolution dual_solution_from_json(const nlohmann::json& json, const std::string& where) {
  check(!json.is_array(), "{}: holds an array (a can-dual sweep?); give one solution (can-dual --margin B --json)",
        where);
  check_format_version(json, where);
  DualSolution solution;
  for (auto [field, unit] : {std::pair{"reward_unit", &solution.reward_unit}, {"safety_unit", &solution.safety_unit}}) {
    if (!required_field(json, field, where).is_null()) *unit = string_field(json, field, where);
  }
  solution.beta = number_field(json, "beta", where);
  solution.margins = numbers_field(json, "margins", where);
  check(!solution.margins.empty(), "{}: field 'margins' is empty", where);
  solution.solver = parse_dual_solver(string_field(json, "solver", where));
  solution.feasible = bool_field(json, "feasible", where);
  solution.converged = bool_field(json, "converged", where);
  solution.iterations = static_cast<int>(integer_field(json, "iterations", where));
  solution.num_prompts = integer_field(json, "num_prompts", where);
  solution.max_safety_improvement = numbers_field(json, "max_safety_improvement", where);
  solution.warnings = strings_field(json, "warnings", where);
  solution.message = string_field(json, "message", where);
  if (!solution.feasible) return solution;
  solution.lambda = numbers_field(json, "lambda", where);
  check(solution.lambda.size() == solution.margins.size(), "{}: {} lambda value(s) for {} margin(s)", where,
        solution.lambda.size(), solution.margins.size());
  solution.dual_value = number_field(json, "dual_value", where);
  solution.projected_gradient = number_field(json, "projected_gradient", where);
  const std::string predicted_where = where + ": predicted";
  const nlohmann::json& predicted = required_field(json, "predicted", where);
  solution.predicted.safety_improvement = numbers_field(predicted, "safety_improvement", predicted_where);
  check(solution.predicted.safety_improvement.size() == solution.margins.size(),
        "{}: {} safety_improvement value(s) for {} margin(s)", predicted_where,
        solution.predicted.safety_improvement.size(), solution.margins.size());
  solution.predicted.safety_improvement_stderr =
      numbers_or_nulls_field(predicted, "safety_improvement_stderr", predicted_where);
  check(solution.predicted.safety_improvement_stderr.size() == solution.margins.size(),
        "{}: {} safety_improvement_stderr value(s) for {} margin(s)", predicted_where,
        solution.predicted.safety_improvement_stderr.size(), solution.margins.size());
  solution.predicted.reward_improvement = number_field(predicted, "reward_improvement", predicted_where);
  solution.predicted.reward_improvement_stderr =
      number_or_nan_field(predicted, "reward_improvement_stderr", predicted_where);
  solution.predicted.kl = number_field(predicted, "kl", predicted_where);
  const nlohmann::json& ess = required_field(json, "ess", where);
  solution.predicted.ess_min_fraction = number_field(ess, "min", where + ": ess");
  solution.predicted.ess_mean_fraction = number_field(ess, "mean", where + ": ess");
  return solution;
}

void write_dual_solution(const std::filesystem::path& path, const DualSolution& solution) {
  write_text_atomically(path, to_json(solution).dump(2) + "\n");
}

DualSolution read_dual_solution(const std::filesystem::path& path) {
  return dual_solution_from_json(read_json_file(path), path.string());
}

}  // namespace can
