#include "can/offline_scores.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <utility>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can/json_fields.h"
#include "can/json_lines.h"

namespace can {
namespace {

using nlohmann::json;

// One safety row (`[N numbers]`) or m rows (`[[N numbers], ...]`).
std::vector<std::vector<double>> read_safety_rows(const json& record, const std::string& where) {
  const json& value = required_field(record, "safety", where);
  check(value.is_array() && !value.empty(),
        "{}: field 'safety' must be a non-empty array of numbers or of arrays, got {}", where,
        value.is_array() ? "an empty array" : value.type_name());
  if (!value.front().is_array()) return {numbers_field(record, "safety", where)};
  std::vector<std::vector<double>> rows;
  for (size_t j = 0; j < value.size(); ++j) {
    rows.push_back(numbers_value(value[j], fmt::format("field 'safety'[{}]", j), where));
  }
  return rows;
}

}  // namespace

OfflineScores::OfflineScores(std::vector<std::string> prompt_ids, const std::vector<std::vector<double>>& rewards,
                             const std::vector<std::vector<std::vector<double>>>& safety) {
  check(prompt_ids.size() == rewards.size() && rewards.size() == safety.size(),
        "offline scores: {} prompt ids, {} reward rows and {} safety entries; expected one of each per prompt",
        prompt_ids.size(), rewards.size(), safety.size());
  check(!prompt_ids.empty(), "offline scores: no prompts");
  std::unordered_map<std::string, size_t> first_index;
  for (size_t i = 0; i < prompt_ids.size(); ++i) {
    const std::string where = fmt::format("offline scores, prompt {} (id '{}')", i, prompt_ids[i]);
    const auto [previous, inserted] = first_index.emplace(prompt_ids[i], i);
    check(inserted, "{}: duplicate prompt_id (first at prompt {})", where, previous->second);
    append(std::move(prompt_ids[i]), rewards[i], safety[i], where);
  }
}

OfflineScores OfflineScores::load(const std::filesystem::path& path) {
  OfflineScores scores;
  std::unordered_map<std::string, int64_t> first_line;
  for_each_json_line(path, [&](const json& record, int64_t line_number) {
    const std::string where = fmt::format("{}:{}", path.string(), line_number);
    check(record.is_object(), "{}: expected a JSON object with prompt_id, reward and safety, got {}", where,
          record.type_name());
    std::string prompt_id = prompt_id_field(record, where);
    const auto [previous, inserted] = first_line.emplace(prompt_id, line_number);
    check(inserted, "{}: duplicate prompt_id '{}' (first on line {})", where, prompt_id, previous->second);
    const std::vector<double> reward = numbers_field(record, "reward", where);
    const std::vector<std::vector<double>> safety = read_safety_rows(record, where);
    scores.append(std::move(prompt_id), reward, safety, where);
  });
  check(!scores.prompt_ids_.empty(), "{}: no prompts (the file is empty)", path.string());
  return scores;
}

void OfflineScores::append(std::string prompt_id, const std::vector<double>& reward,
                           const std::vector<std::vector<double>>& safety, const std::string& where) {
  check(!reward.empty(), "{}: 'reward' is empty; every prompt needs at least one response", where);
  check(!safety.empty(), "{}: 'safety' has no rows", where);
  if (prompt_ids_.empty()) {
    num_constraints_ = static_cast<int>(safety.size());
  } else {
    check(static_cast<int>(safety.size()) == num_constraints_,
          "{}: {} safety rows (constraints), but the first prompt has {}; every prompt needs the same constraints",
          where, safety.size(), num_constraints_);
  }
  const size_t n = reward.size();
  for (size_t k = 0; k < n; ++k) {
    check(std::isfinite(reward[k]), "{}: 'reward'[{}] is not finite ({})", where, k, reward[k]);
  }
  for (size_t j = 0; j < safety.size(); ++j) {
    check(safety[j].size() == n, "{}: 'safety' row {} has {} numbers but 'reward' has {}", where, j, safety[j].size(),
          n);
    for (size_t k = 0; k < n; ++k) {
      check(std::isfinite(safety[j][k]), "{}: 'safety' row {}, entry {} is not finite ({})", where, j, k, safety[j][k]);
    }
  }
  prompt_ids_.push_back(std::move(prompt_id));
  rewards_.insert(rewards_.end(), reward.begin(), reward.end());
  for (size_t k = 0; k < n; ++k) {
    for (const auto& row : safety) safety_.push_back(row[k]);
  }
  offsets_.push_back(offsets_.back() + static_cast<int64_t>(n));
}

void OfflineScores::save(const std::filesystem::path& path) const {
  write_file_atomically(path, [&](std::ostream& out) {
    const int m = num_constraints_;
    for (int64_t i = 0; i < num_prompts(); ++i) {
      const int64_t begin = offsets_[i];
      const int64_t end = offsets_[i + 1];
      json rows = json::array();
      for (int j = 0; j < m; ++j) {
        json row = json::array();
        for (int64_t row_index = begin; row_index < end; ++row_index) row.push_back(safety_[row_index * m + j]);
        rows.push_back(std::move(row));
      }
      json record;
      record["prompt_id"] = prompt_ids_[i];
      record["reward"] = std::vector<double>(rewards_.begin() + begin, rewards_.begin() + end);
      record["safety"] = m == 1 ? std::move(rows[0]) : std::move(rows);
      out << record.dump() << '\n';
    }
  });
}

}  // namespace can
