#include "can/metrics_writer.h"

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "can/atomic_file.h"
#include "can/error.h"

namespace can {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The TensorBoard scalars of a metrics line: its finite metrics under their tags.
std::map<std::string, double> tensorboard_scalars(const nlohmann::json& line) {
  std::map<std::string, double> scalars;
  for (const auto& [name, value] : line.items()) {
    if (name == "stage" || name == "step" || name == "time" || !value.is_number()) continue;
    const double number = value.get<double>();
    if (std::isfinite(number)) scalars[tensorboard_tag(name)] = number;
  }
  return scalars;
}

}  // namespace

MetricsWriter::MetricsWriter(const std::filesystem::path& path, int64_t resumed_step) : path_(path) {
  if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
  const std::filesystem::path events_path = path_.parent_path() / kEventsFileName;
  const bool resuming = std::filesystem::exists(path_);
  if (resuming) {
    // Both files keep the lines of steps up to resumed_step; the events file is rebuilt
    // from the kept metrics lines, so a record torn by a kill goes with them.
    std::istringstream lines(read_text_file(path_));
    std::string kept, line, events = tf_record(file_version_event(now_seconds()));
    while (std::getline(lines, line)) {
      const nlohmann::json parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      const bool complete = parsed.is_object() && parsed.contains("step") && parsed.at("step").is_number_integer() &&
                            parsed.contains("time") && parsed.at("time").is_number();
      if (!complete || parsed.at("step").get<int64_t>() > resumed_step) continue;
      kept += line + "\n";
      events += tf_record(
          scalar_event(parsed.at("time").get<double>(), parsed.at("step").get<int64_t>(), tensorboard_scalars(parsed)));
    }
    write_text_atomically(path_, kept);
    write_text_atomically(events_path, events);
  }
  out_.open(path_, std::ios::app);
  check(out_.good(), "cannot open '{}' for appending metrics", path_.string());
  events_ = std::make_unique<EventsWriter>(events_path, resuming, now_seconds());
}

MetricsWriter::~MetricsWriter() = default;

void MetricsWriter::write(const std::string& stage, int64_t step, const std::map<std::string, double>& values) {
  nlohmann::json line = {{"stage", stage}, {"step", step}, {"time", now_seconds()}};
  for (const auto& [name, value] : values) {
    check(!line.contains(name), "metric name '{}' is reserved in '{}' (stage, step and time are written for you)", name,
          path_.string());
    line[name] = value;
  }
  out_ << line.dump() << '\n';
  out_.flush();
  check(out_.good(), "writing metrics to '{}' failed (disk full?)", path_.string());
  events_->write(line.at("time").get<double>(), step, tensorboard_scalars(line));
}

}  // namespace can
