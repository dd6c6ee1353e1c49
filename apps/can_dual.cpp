// can-dual: solve the dual of docs/design.md §2 from an offline scores file, or sweep
// the margin of one constraint, and predict what the aligned policy achieves.
//
//   can-dual --scores FILE [--beta 0.1] --margin B [--margin B2 ...] [--solver newton|pgd] [--json]
//   can-dual --scores FILE [--beta 0.1] --sweep LO:HI:COUNT [--solver newton|pgd] [--json] [--plot FILE.svg]
//   can-dual --scores FILE [--beta 0.1] --margin B0 --margin B1 ... --sweep J:LO:HI:COUNT [...]  (m > 1: sweeps
//            constraint J, the others at their --margin)
//   can-dual --scores FILE [--beta 0.1] --margin B [...] --subsample-prompts LIST --subsample-responses LIST
//            [--repeats K] [--seed S] [--solver newton|pgd] [--json] [--plot FILE.svg]
//   can-dual --scores FILE [--beta 0.1] --landscape B1,B2,... [--json] [--plot FILE.svg]
//
// The third form solves on K random subsets per size pair (the paper's Figure 4) and
// prints the mean and spread of λ* per size (dual_subsample.h). The fourth draws where
// λ* comes from for each margin (the paper's Figure 1, dual_landscape.h).
//
// Exit status: 0 solved; 1 bad input; 2 a usage error; 3 infeasible margins (a single
// solve); 4 the solver did not converge (a single solve, any point of a sweep, any subset).
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "can/cli.h"
#include "can/dual.h"
#include "can/dual_landscape.h"
#include "can/dual_subsample.h"
#include "can/dual_sweep.h"
#include "can/error.h"
#include "can/logging.h"
#include "can/offline_scores.h"
#include "can/svg_plot.h"

namespace {

constexpr int kExitInfeasible = 3;
constexpr int kExitNotConverged = 4;

std::string describe_scores(const std::string& path, const can::OfflineScores& scores) {
  int64_t fewest = scores.num_responses(0);
  int64_t most = fewest;
  for (int64_t i = 1; i < scores.num_prompts(); ++i) {
    fewest = std::min(fewest, scores.num_responses(i));
    most = std::max(most, scores.num_responses(i));
  }
  const std::string responses = fewest == most ? fmt::format("{}", most) : fmt::format("{}-{}", fewest, most);
  return fmt::format("{}: {} prompts, {} responses each, {} constraint{}", path, scores.num_prompts(), responses,
                     scores.num_constraints(), scores.num_constraints() == 1 ? "" : "s");
}

void print_solution(const can::DualSolution& solution) {
  const size_t m = solution.margins.size();
  auto row = [&](const std::string& name, auto value_of) {
    std::string line = fmt::format("  {:<30}", name);
    for (size_t j = 0; j < m; ++j) line += fmt::format("{:>14}", value_of(j));
    std::cout << line << '\n';
  };
  std::string header = fmt::format("  {:<30}", "");
  for (size_t j = 0; j < m; ++j) header += fmt::format("{:>14}", fmt::format("constraint {}", j));
  std::cout << header << '\n';
  row("margin b", [&](size_t j) { return fmt::format("{:.6g}", solution.margins[j]); });
  row("max reachable improvement", [&](size_t j) { return fmt::format("{:.6g}", solution.max_safety_improvement[j]); });
  if (!solution.feasible) {
    std::cout << "\n  " << solution.message << '\n';
    return;
  }
  row("lambda*", [&](size_t j) { return fmt::format("{:.6g}", solution.lambda[j]); });
  row("predicted safety improvement",
      [&](size_t j) { return fmt::format("{:.6g}", solution.predicted.safety_improvement[j]); });
  row("  standard error (prompts)",
      [&](size_t j) { return fmt::format("{:.3g}", solution.predicted.safety_improvement_stderr[j]); });
  std::cout << fmt::format("  {:<30}{:>14.6g}\n", "predicted reward improvement", solution.predicted.reward_improvement)
            << fmt::format("  {:<30}{:>14.3g}\n", "  standard error (prompts)",
                           solution.predicted.reward_improvement_stderr)
            << fmt::format("  {:<30}{:>14.6g} nats\n", "KL(pi_lambda || pi_ref)", solution.predicted.kl)
            << fmt::format("  {:<30}{:>14}\n", "effective sample size / N",
                           fmt::format("min {:.3f}, mean {:.3f}", solution.predicted.ess_min_fraction,
                                       solution.predicted.ess_mean_fraction))
            << fmt::format("  {:<30}{:>14.10g}\n", "dual value", solution.dual_value) << "\n  "
            << dual_solver_name(solution.solver) << ": " << solution.message << '\n';
}

// One row per margin of constraint `swept`: λ* and the predicted safety improvement of every constraint.
void print_sweep(const std::vector<can::DualSolution>& sweep, int swept) {
  const size_t m = sweep.front().margins.size();
  const auto named = [m](const char* name, size_t j) { return m == 1 ? std::string(name) : fmt::format("{}_{}", name, j); };
  std::string header = fmt::format("  {:>10}", m == 1 ? "margin" : fmt::format("margin_{}", swept));
  for (size_t j = 0; j < m; ++j) header += fmt::format(" {:>12} {:>12}", named("lambda*", j), named("d_safety", j));
  std::cout << header
            << fmt::format(" {:>12} {:>10} {:>8} {:>8} {:>6}  {}\n", "d_reward", "KL/nats", "ESS min", "ESS mean",
                           "iters", "status");
  for (const can::DualSolution& solution : sweep) {
    std::string row = fmt::format("  {:>10.6g}", solution.margins[static_cast<size_t>(swept)]);
    if (!solution.feasible) {
      for (size_t j = 0; j < m; ++j) row += fmt::format(" {:>12} {:>12}", "-", "-");
      std::cout << row << fmt::format(" {:>12} {:>10} {:>8} {:>8} {:>6}  infeasible\n", "-", "-", "-", "-",
                                      solution.iterations);
      continue;
    }
    std::string status = solution.converged ? "ok" : "NOT CONVERGED";
    if (!solution.warnings.empty()) status += ", low ESS";
    for (size_t j = 0; j < m; ++j) {
      row += fmt::format(" {:>12.6g} {:>12.6g}", solution.lambda[j], solution.predicted.safety_improvement[j]);
    }
    std::cout << row
              << fmt::format(" {:>12.6g} {:>10.4g} {:>8.3f} {:>8.3f} {:>6}  {}\n", solution.predicted.reward_improvement,
                             solution.predicted.kl, solution.predicted.ess_min_fraction,
                             solution.predicted.ess_mean_fraction, solution.iterations, status);
  }
  std::cout << fmt::format("  largest reachable safety improvement{}: {:.6g}\n",
                           m == 1 ? "" : fmt::format(" of constraint {}", swept),
                           sweep.front().max_safety_improvement[static_cast<size_t>(swept)]);
}

void print_subsamples(const std::vector<can::SubsampleSummary>& summaries) {
  std::cout << fmt::format("  {:>8} {:>10} {:>8} {:>12} {:>12} {:>12} {:>12} {:>10} {:>13}\n", "prompts", "responses",
                           "repeats", "lambda* mean", "std", "min", "max", "infeasible", "not converged");
  for (const can::SubsampleSummary& summary : summaries) {
    for (size_t j = 0; j < summary.lambda_mean.size(); ++j) {
      const auto number = [](double value) { return std::isfinite(value) ? fmt::format("{:.6g}", value) : "-"; };
      std::cout << fmt::format("  {:>8} {:>10} {:>8} {:>12} {:>12} {:>12} {:>12} {:>10} {:>13}{}\n",
                               summary.num_prompts, summary.num_responses, summary.repeats,
                               number(summary.lambda_mean[j]), number(summary.lambda_std[j]),
                               number(summary.lambda_min[j]), number(summary.lambda_max[j]), summary.infeasible,
                               summary.not_converged,
                               summary.lambda_mean.size() == 1 ? "" : fmt::format("  (constraint {})", j));
    }
  }
}

// --json for a sweep or subsets: one array of the items' objects.
template <typename Item>
void print_json_array(const std::vector<Item>& items) {
  nlohmann::json array = nlohmann::json::array();
  for (const Item& item : items) array.push_back(can::to_json(item));
  std::cout << array.dump(2) << '\n';
}

void log_warnings(const can::DualSolution& solution) {
  for (const std::string& warning : solution.warnings) {
    spdlog::warn("margin {}: {}", fmt::join(solution.margins, ", "), warning);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Solve the CAN dual from offline scores once, and predict the safety and reward improvement, KL and "
      "effective sample size of the aligned policy before any training."};
  std::string scores_path;
  double beta = 0.1;
  std::vector<double> margins;
  std::string sweep_text;
  std::string solver_name = "newton";
  bool json_output = false;
  std::string plot_path;
  can::SubsampleOptions subsample;
  std::vector<double> landscape_margins;
  app.add_option("--scores", scores_path, "offline scores, JSON Lines (docs/design.md §5)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--beta", beta, "KL weight β of the alignment objective")
      ->check(can::number_above(0))
      ->capture_default_str();
  auto* margin_option =
      app.add_option("--margin", margins, "required safety improvement b_j; once per constraint, in file order");
  auto* sweep_option =
      app.add_option("--sweep", sweep_text,
                     "LO:HI:COUNT: solve for COUNT margins from LO to HI; J:LO:HI:COUNT sweeps constraint J of scores "
                     "with several, the others at their --margin");
  app.add_option("--solver", solver_name, "projected Newton (default) or the paper's projected gradient descent")
      ->check(CLI::IsMember({"newton", "pgd"}))
      ->capture_default_str();
  app.add_flag("--json", json_output, "print JSON (an object for a solve, an array for a sweep) instead of a table");
  auto* prompts_option =
      app.add_option("--subsample-prompts", subsample.prompt_counts,
                     "with --margin: solve on random subsets of this many prompts (a list, e.g. 25,50,100)")
          ->delimiter(',')
          ->needs(margin_option)
          ->check(can::number_at_least(1));
  auto* responses_option =
      app.add_option("--subsample-responses", subsample.response_counts,
                     "with --subsample-prompts: keep this many responses of each prompt (a list, e.g. 4,8,16)")
          ->delimiter(',')
          ->check(can::number_at_least(2));
  prompts_option->needs(responses_option);
  prompts_option->excludes(sweep_option);
  responses_option->needs(prompts_option);
  app.add_option("--repeats", subsample.repeats, "with --subsample-prompts: random subsets per size pair")
      ->needs(prompts_option)
      ->check(can::number_at_least(1))
      ->capture_default_str();
  app.add_option("--seed", subsample.seed, "with --subsample-prompts: seed of the subsets")
      ->needs(prompts_option)
      ->check(can::seed_number())
      ->capture_default_str();
  app.add_option("--landscape", landscape_margins,
                 "B1,B2,...: D̂(λ) for each margin, its λ* and the paper's PGD from λ₀ = 1 (Figure 1; "
                 "one-constraint scores)")
      ->delimiter(',')
      ->excludes(margin_option)
      ->excludes(sweep_option);
  app.add_option("--plot", plot_path,
                 "with --sweep: an SVG plot of λ* and the predictions against the margin; with --subsample-prompts: "
                 "λ* against the number of prompts and of responses; with --landscape: the scores, D̂(λ) and PGD");
  app.parse_complete_callback([&] {
    if (!plot_path.empty() && sweep_text.empty() && subsample.prompt_counts.empty() && landscape_margins.empty()) {
      throw CLI::ValidationError("--plot",
                                 "needs --sweep, --subsample-prompts or --landscape: a single solve has nothing to plot");
    }
  });
  if (const auto status = can::parse_arguments(app, argc, argv)) return *status;

  try {
    can::setup_logging("info");
    can::check(!margins.empty() || !sweep_text.empty() || !landscape_margins.empty(),
               "give --margin B (once per constraint) for a solve, --sweep LO:HI:COUNT for a sweep, or --landscape "
               "B1,B2,... for the dual's landscape");
    const bool subsampling = !subsample.prompt_counts.empty();
    can::check(plot_path.empty() || std::filesystem::path(plot_path).extension() == ".svg",
               "--plot '{}': plots are written as SVG; name the file *.svg", plot_path);
    can::DualOptions options;
    options.beta = beta;
    options.solver = can::parse_dual_solver(solver_name);
    const can::OfflineScores scores = can::OfflineScores::load(scores_path);
    if (!json_output) std::cout << describe_scores(scores_path, scores) << "; beta " << beta << "\n\n";

    if (!landscape_margins.empty()) {
      const can::DualLandscape landscape = can::dual_landscape(scores, options, landscape_margins);
      if (json_output) {
        std::cout << can::to_json(landscape).dump(2) << '\n';
      } else {
        for (const can::DualCurve& curve : landscape.curves) {
          std::cout << fmt::format("  margin {:<10.6g} {}", curve.margin,
                                   curve.solution.converged
                                       ? fmt::format("lambda* {:.6g}; PGD from 1: {} iterations shown, last {:.6g}",
                                                     curve.solution.lambda[0], curve.pgd_lambda.size() - 1,
                                                     curve.pgd_lambda.back())
                                       : curve.solution.message)
                    << '\n';
        }
      }
      if (!plot_path.empty()) {
        can::write_svg(plot_path, can::landscape_figure(
                                      landscape, fmt::format("can-dual: the dual of {} (β = {})",
                                                             std::filesystem::path(scores_path).filename().string(),
                                                             beta)));
        spdlog::info("wrote {}", plot_path);
      }
      const bool all_converged = std::all_of(landscape.curves.begin(), landscape.curves.end(), [](const auto& c) {
        return c.solution.converged || !c.solution.feasible;
      });
      if (!all_converged) {
        std::cerr << "can-dual: Newton did not converge for some margins; their curves carry no λ*\n";
        return kExitNotConverged;
      }
      return 0;
    }

    if (!margins.empty() && sweep_text.empty()) {
      can::check(static_cast<int>(margins.size()) == scores.num_constraints(),
                 "{} --margin value(s) given but '{}' has {} constraint(s); give one --margin per constraint",
                 margins.size(), scores_path, scores.num_constraints());
      options.margins = margins;
      if (subsampling) {
        const std::vector<can::SubsampleSummary> summaries = can::subsample_dual(scores, options, subsample);
        if (json_output) {
          print_json_array(summaries);
        } else {
          print_subsamples(summaries);
        }
        if (!plot_path.empty()) {
          can::write_svg(plot_path, can::subsample_figure(
                                        summaries, fmt::format("can-dual: λ* on random subsets of {} (margin {}, β = {}, "
                                                               "{} repeats)",
                                                               std::filesystem::path(scores_path).filename().string(),
                                                               fmt::join(margins, ", "), beta, subsample.repeats)));
          spdlog::info("wrote {}", plot_path);
        }
        const bool all_converged = std::all_of(summaries.begin(), summaries.end(),
                                               [](const can::SubsampleSummary& s) { return s.not_converged == 0; });
        if (!all_converged) {
          std::cerr << "can-dual: the solver did not converge on some subsets (see the not-converged column)\n";
          return kExitNotConverged;
        }
        return 0;
      }
      const can::DualSolution solution = can::solve_dual(scores, options);
      log_warnings(solution);
      if (json_output) {
        std::cout << can::to_json(solution).dump(2) << '\n';
      } else {
        print_solution(solution);
      }
      if (!solution.feasible) {
        std::cerr << "can-dual: " << solution.message << '\n';
        return kExitInfeasible;
      }
      if (!solution.converged) {
        std::cerr << "can-dual: " << solution.message << '\n';
        return kExitNotConverged;
      }
      return 0;
    }

    const can::MarginSweep margin_sweep = can::parse_margin_sweep(sweep_text);
    can::check(scores.num_constraints() > 1 || margins.empty(),
               "--margin with --sweep on one-constraint scores: the sweep gives the margin; leave --margin out");
    options.margins = margins;
    const std::vector<can::DualSolution> sweep = can::sweep_margins(scores, options, margin_sweep);
    for (const auto& solution : sweep) log_warnings(solution);
    if (json_output) {
      print_json_array(sweep);
    } else {
      print_sweep(sweep, margin_sweep.constraint);
    }
    if (!plot_path.empty()) {
      can::write_svg(plot_path, can::prediction_sweep_figure(
                                    sweep, margin_sweep.constraint,
                                    fmt::format("can-dual sweep: {} ({} prompts, β = {}, {})",
                                                std::filesystem::path(scores_path).filename().string(),
                                                scores.num_prompts(), beta, solver_name)));
      spdlog::info("wrote {}", plot_path);
    }
    const bool all_converged =
        std::all_of(sweep.begin(), sweep.end(), [](const can::DualSolution& s) { return s.converged || !s.feasible; });
    if (!all_converged) {
      std::cerr << "can-dual: the solver did not converge for some margins (see the status column)\n";
      return kExitNotConverged;
    }
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "can-dual: " << error.what() << '\n';
    return 1;
  }
}
