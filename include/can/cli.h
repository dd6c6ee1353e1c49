// What every can-* program shares on its command line: one exit status for usage
// errors, and number checks whose messages print the bound as it was written
// (CLI11's own print a double's every digit).
#pragma once

#include <CLI/CLI.hpp>

#include <optional>

namespace can {

// Exit status of every program for a usage error (an unknown option, a missing or
// malformed value): the message and "Run with --help" are on stderr.
constexpr int kExitUsage = 2;

// Parses the arguments. Returns the exit status when the program ends here (0 after
// --help, kExitUsage after a usage error, CLI11's message printed), nullopt to go on.
std::optional<int> parse_arguments(CLI::App& app, int argc, char** argv);

// A finite number >= bound, > bound, or within [low, high].
CLI::Validator number_at_least(double bound);
CLI::Validator number_above(double bound);
CLI::Validator number_within(double low, double high);

// A decimal integer in [0, 2^64 - 1], for seeds: CLI11 alone wraps -1 and 2^64 around
// to 2^64 - 1, and two different seeds typed would give the same run.
CLI::Validator seed_number();

}  // namespace can
