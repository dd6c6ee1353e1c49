#include "can/metrics_writer.h"

#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "can/atomic_file.h"
#include "can/error.h"

namespace can {

MetricsWriter::MetricsWriter(const std::filesystem::path& path, int64_t resumed_step) : path_(path) {
  if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
  if (std::filesystem::exists(path_)) {
    std::istringstream lines(read_text_file(path_));
    std::string kept, line;
    while (std::getline(lines, line)) {
      const nlohmann::json parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      const bool complete = parsed.is_object() && parsed.contains("step") && parsed.at("step").is_number_integer();
      if (complete && parsed.at("step").get<int64_t>() <= resumed_step) kept += line + "\n";
    }
    write_text_atomically(path_, kept);
  }
  out_.open(path_, std::ios::app);
  check(out_.good(), "cannot open '{}' for appending metrics", path_.string());
}

void MetricsWriter::write(const std::string& stage, int64_t step, const std::map<std::string, double>& values) {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  nlohmann::json line = {{"stage", stage}, {"step", step}, {"time", std::chrono::duration<double>(now).count()}};
  for (const auto& [name, value] : values) {
    check(!line.contains(name), "metric name '{}' is reserved in '{}' (stage, step and time are written for you)", name,
          path_.string());
    line[name] = value;
  }
  out_ << line.dump() << '\n';
  out_.flush();
  check(out_.good(), "writing metrics to '{}' failed (disk full?)", path_.string());
}

}  // namespace can
