#include "can/cli.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>

namespace can {

namespace {

// A validator for a finite number accepted by `accept`, refused with "VALUE is not <description>".
CLI::Validator number_check(const std::string& description, std::function<bool(double)> accept) {
  return CLI::Validator(
      [description, accept](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(value) || !accept(value)) {
          return fmt::format("{} is not {}", text, description);
        }
        return {};
      },
      description);
}

}  // namespace

std::optional<int> parse_arguments(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? 0 : kExitUsage;
  }
}

CLI::Validator number_at_least(double bound) {
  return number_check(fmt::format("a number >= {}", bound), [bound](double value) { return value >= bound; });
}

CLI::Validator number_above(double bound) {
  return number_check(fmt::format("a number > {}", bound), [bound](double value) { return value > bound; });
}

CLI::Validator number_within(double low, double high) {
  return number_check(fmt::format("a number in [{}, {}]", low, high),
                      [low, high](double value) { return value >= low && value <= high; });
}

CLI::Validator seed_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        uint64_t value = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (text.empty() || error != std::errc() || end != text.data() + text.size()) {
          return fmt::format("{} is not a seed: an integer in [0, {}]", text, UINT64_MAX);
        }
        return {};
      },
      "SEED");
}

}  // namespace can
