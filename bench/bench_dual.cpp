// Benchmark of the dual: parse time of the offline-scores file and solve time
// (iterations, wall and CPU time; parsing excluded) of projected Newton and PGD on
// synthetic scores of 1,000 × 128 and 10,000 × 128 responses, one and two
// constraints. Prints a Markdown table (bench/results/dual-cpu.md records one).
//
//   build/bench_dual [REPEATS]     REPEATS: timed runs per cell, median reported (default 5)
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "can/atomic_file.h"
#include "can/dual.h"
#include "can/offline_scores.h"
#include "can/synthetic_scores.h"

namespace {

namespace fs = std::filesystem;

struct Timing {
  double wall_ms;  // median wall-clock time
  double cpu_ms;   // median process CPU time: less sensitive to other load on a shared machine
};

template <typename Action>
Timing median_timing(int repeats, Action action) {
  std::vector<double> wall, cpu;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    const std::clock_t cpu_start = std::clock();
    action();
    cpu.push_back(1000.0 * static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC);
    wall.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(wall.begin(), wall.end());
  std::sort(cpu.begin(), cpu.end());
  return {wall[wall.size() / 2], cpu[cpu.size() / 2]};
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(1, std::stoi(argv[1])) : 5;
  const fs::path directory = fs::temp_directory_path() / fmt::format("can_bench_dual_{}", getpid());
  fs::create_directories(directory);

  std::cout << "| prompts × responses | constraints | margin / reach | file MB | parse ms (wall / CPU) | solver | "
               "iterations | solve ms (wall / CPU) | λ* |\n"
            << "|---|---|---|---|---|---|---|---|---|\n";
  for (int64_t prompts : {1000, 10000}) {
    for (int constraints : {1, 2}) {
      can::SyntheticScoresOptions synthetic;
      synthetic.num_prompts = prompts;
      synthetic.num_constraints = constraints;
      synthetic.seed = 2024;
      const fs::path path = directory / fmt::format("scores_{}_{}.jsonl", prompts, constraints);
      can::make_synthetic_scores(synthetic).save(path);
      const double megabytes = static_cast<double>(fs::file_size(path)) / 1e6;

      can::OfflineScores scores = can::OfflineScores::load(path);
      const Timing parse = median_timing(repeats, [&] { scores = can::OfflineScores::load(path); });

      // Margins as fractions of each constraint's reach (mean_i max_k g − ḡ): a
      // moderate one, and for one constraint also one near the reach, where
      // the ESS is small and λ* large (the hard case for a constant step).
      const can::DualProblem reach(scores, 0.1, std::vector<double>(constraints, 0.0));
      const std::vector<double> fractions =
          constraints == 1 ? std::vector<double>{0.6, 0.95} : std::vector<double>{0.3};
      for (double fraction : fractions) {
        can::DualOptions options;
        for (int j = 0; j < constraints; ++j) options.margins.push_back(fraction * reach.max_safety_improvement()[j]);
        for (can::DualSolver solver : {can::DualSolver::kProjectedNewton, can::DualSolver::kProjectedGradient}) {
          options.solver = solver;
          can::DualSolution solution = can::solve_dual(scores, options);
          const Timing solve = median_timing(repeats, [&] { solution = can::solve_dual(scores, options); });
          if (!solution.converged) std::cerr << "bench_dual: " << solution.message << '\n';
          std::cout << fmt::format(
              "| {} × 128 | {} | {:.0f}% | {:.1f} | {:.0f} / {:.0f} | {} | {} | {:.2f} / {:.2f} | {:.6f} |\n", prompts,
              constraints, 100 * fraction, megabytes, parse.wall_ms, parse.cpu_ms, can::dual_solver_name(solver),
              solution.iterations, solve.wall_ms, solve.cpu_ms, fmt::join(solution.lambda, ", "));
        }
      }
    }
  }
  can::remove_tree(directory);
  return 0;
}
