// Test support: every value of a JSON Lines file, in order (json_lines.h reads them one at a time).
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "can/json_lines.h"

namespace can::testing {

inline std::vector<nlohmann::json> read_json_lines(const std::filesystem::path& path) {
  std::vector<nlohmann::json> values;
  for_each_json_line(path, [&](const nlohmann::json& value, int64_t) { values.push_back(value); });
  return values;
}

}  // namespace can::testing
