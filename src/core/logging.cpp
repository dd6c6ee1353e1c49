#include "can/logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <vector>

#include "can/error.h"

namespace can {

void setup_logging(const std::string& level, const std::string& log_file, const std::string& process) {
  const spdlog::level::level_enum parsed = spdlog::level::from_str(level);
  // from_str maps unknown names to `off`; only "off" itself may mean that.
  check(parsed != spdlog::level::off || level == "off",
        "unknown log level '{}' (expected trace, debug, info, warn, error or off)", level);
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!log_file.empty()) {
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(log_file, /*truncate=*/false));
  }
  auto logger = std::make_shared<spdlog::logger>("can", sinks.begin(), sinks.end());
  logger->set_level(parsed);
  logger->set_pattern(process.empty() ? "[%H:%M:%S.%e] [%^%l%$] %v" : "[%H:%M:%S.%e] [" + process + "] [%^%l%$] %v");
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

}  // namespace can
