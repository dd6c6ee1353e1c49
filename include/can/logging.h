// Logging set-up: spdlog to stderr, and optionally to a file in the run directory.
#pragma once

#include <string>

namespace can {

// level: trace, debug, info, warn, error, off. log_file: empty for none; the file
// is appended to, so resumed runs keep one log. process: names the process in every
// line ("rank 1" in a job of several); empty: nothing.
void setup_logging(const std::string& level, const std::string& log_file = "", const std::string& process = "");

}  // namespace can
