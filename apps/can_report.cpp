// can-report: several aligned policies' evaluations side by side (the paper's Figure 3,
// right): judge win rates against the reference and judge means, overall and by class.
//
//   can-report --report LABEL=PATH [--report LABEL=PATH ...] [--plot FILE.svg] [--markdown FILE]
//
// PATH is an eval stage's directory or its report.json (can-train's eval/, can-eval's --out).
// The reports must have evaluated the same prompts with the same sampling and seed. Prints
// the comparison as Markdown.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "can/atomic_file.h"
#include "can/cli.h"
#include "can/error.h"
#include "can/logging.h"
#include "can/report_comparison.h"

int main(int argc, char** argv) {
  CLI::App app{"Set several aligned policies' evaluations side by side: judge win rates against the reference and "
               "judge means, overall and by class (the paper's Figure 3)."};
  std::vector<std::string> entries;
  std::string plot_path, markdown_path;
  app.add_option("--report", entries, "LABEL=PATH: an eval directory or its report.json; once per policy")
      ->required();
  app.add_option("--plot", plot_path, "write the win rates and judge means as an SVG plot");
  app.add_option("--markdown", markdown_path, "also write the Markdown tables to this file");
  if (const auto status = can::parse_arguments(app, argc, argv)) return *status;
  try {
    can::setup_logging("info");
    can::check(plot_path.empty() || std::filesystem::path(plot_path).extension() == ".svg",
               "--plot '{}': plots are written as SVG; name the file *.svg", plot_path);
    std::vector<can::LabelledReport> reports;
    for (const std::string& entry : entries) {
      const size_t equals = entry.find('=');
      can::check(equals != std::string::npos && equals > 0 && equals + 1 < entry.size(),
                 "--report '{}': give LABEL=PATH", entry);
      std::filesystem::path path = entry.substr(equals + 1);
      if (std::filesystem::is_directory(path)) path /= "report.json";
      reports.push_back({entry.substr(0, equals), can::read_evaluation_report(path)});
    }
    const std::string markdown = can::comparison_markdown(reports);
    if (!markdown_path.empty()) can::write_text_atomically(markdown_path, markdown);
    if (!plot_path.empty()) {
      can::write_svg(plot_path, can::comparison_figure(reports, "Aligned policies against the reference (judge)"));
      spdlog::info("wrote {}", plot_path);
    }
    std::cout << markdown;
  } catch (const std::exception& error) {
    std::cerr << "can-report: error: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
