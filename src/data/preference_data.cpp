#include "can/preference_data.h"

#include <nlohmann/json.hpp>

#include "can/error.h"
#include "can/json_fields.h"
#include "can/json_lines.h"

namespace can {

namespace {

// A string field with something besides white space.
std::string read_text(const nlohmann::json& object, const char* field, const std::string& where) {
  std::string text = string_field(object, field, where);
  check(text.find_first_not_of(" \t\r\n") != std::string::npos, "{}: field '{}' is empty", where, field);
  return text;
}

int read_response_id(const nlohmann::json& object, const char* field, const std::string& where) {
  const int64_t id = integer_field(object, field, where);
  check(id == 0 || id == 1, "{}: field '{}' must be 0 or 1, got {}", where, field, id);
  return static_cast<int>(id);
}

}  // namespace

const std::string& PreferencePair::response(int id) const {
  check(id == 0 || id == 1, "response id must be 0 or 1, got {}", id);
  return id == 0 ? response_0 : response_1;
}

bool PreferencePair::is_response_safe(int id) const {
  check(id == 0 || id == 1, "response id must be 0 or 1, got {}", id);
  return id == 0 ? is_response_0_safe : is_response_1_safe;
}

PreferencePair PreferencePair::for_constraint(int j) const {
  check(j >= 0 && j < num_constraints(), "constraint {} of a pair labelled for {} constraints", j, num_constraints());
  PreferencePair pair = *this;
  pair.more_safety_labels.clear();
  if (j > 0) {
    const SafetyLabels& labels = more_safety_labels[static_cast<size_t>(j - 1)];
    pair.safer_response_id = labels.safer_response_id;
    pair.is_response_0_safe = labels.is_response_0_safe;
    pair.is_response_1_safe = labels.is_response_1_safe;
  }
  return pair;
}

int preferred_response_id(const PreferencePair& pair, PreferenceLabel label) {
  return label == PreferenceLabel::kBetter ? pair.better_response_id : pair.safer_response_id;
}

PreferencePair preference_pair_from_json(const nlohmann::json& value, const std::string& where) {
  check(value.is_object(), "{}: expected a JSON object with the PKU-SafeRLHF fields, got {}", where, value.type_name());
  PreferencePair pair;
  pair.prompt = read_text(value, "prompt", where);
  pair.response_0 = read_text(value, "response_0", where);
  pair.response_1 = read_text(value, "response_1", where);
  pair.better_response_id = read_response_id(value, "better_response_id", where);
  if (value.contains("better_response_probability")) {
    pair.better_probability = number_field(value, "better_response_probability", where);
    check(pair.better_probability >= 0.5 && pair.better_probability <= 1,
          "{}: better_response_probability must lie in [0.5, 1] (better_response_id names the likelier response), "
          "got {}",
          where, pair.better_probability);
  }
  pair.safer_response_id = read_response_id(value, "safer_response_id", where);
  pair.is_response_0_safe = bool_field(value, "is_response_0_safe", where);
  pair.is_response_1_safe = bool_field(value, "is_response_1_safe", where);
  if (!value.contains("safety_labels")) return pair;
  const nlohmann::json& labels = value["safety_labels"];
  check(labels.is_array() && !labels.empty(), "{}: field 'safety_labels' must be a non-empty array, got {}", where,
        labels.dump());
  for (size_t j = 0; j < labels.size(); ++j) {
    const std::string entry = fmt::format("{}: safety_labels[{}]", where, j);
    check(labels[j].is_object(), "{}: expected an object, got {}", entry, labels[j].type_name());
    const SafetyLabels read = {read_response_id(labels[j], "safer_response_id", entry),
                               bool_field(labels[j], "is_response_0_safe", entry),
                               bool_field(labels[j], "is_response_1_safe", entry)};
    if (j == 0) {
      check(read.safer_response_id == pair.safer_response_id && read.is_response_0_safe == pair.is_response_0_safe &&
                read.is_response_1_safe == pair.is_response_1_safe,
            "{}: the first constraint's labels differ from the top-level safer_response_id and is_response_*_safe",
            entry);
    } else {
      pair.more_safety_labels.push_back(read);
    }
  }
  return pair;
}

nlohmann::json preference_pair_to_json(const PreferencePair& pair) {
  nlohmann::json json = {{"prompt", pair.prompt},
                         {"response_0", pair.response_0},
                         {"response_1", pair.response_1},
                         {"better_response_id", pair.better_response_id},
                         {"safer_response_id", pair.safer_response_id},
                         {"is_response_0_safe", pair.is_response_0_safe},
                         {"is_response_1_safe", pair.is_response_1_safe}};
  if (pair.better_probability < 1) json["better_response_probability"] = pair.better_probability;
  if (pair.more_safety_labels.empty()) return json;
  auto labels_json = [](const SafetyLabels& labels) {
    return nlohmann::json{{"safer_response_id", labels.safer_response_id},
                          {"is_response_0_safe", labels.is_response_0_safe},
                          {"is_response_1_safe", labels.is_response_1_safe}};
  };
  // json::array explicitly: a braced list of one json is a copy with some compilers (clang), an array with others.
  json["safety_labels"] =
      nlohmann::json::array({labels_json({pair.safer_response_id, pair.is_response_0_safe, pair.is_response_1_safe})});
  for (const auto& labels : pair.more_safety_labels) json["safety_labels"].push_back(labels_json(labels));
  return json;
}

std::vector<PreferencePair> read_preference_pairs(const std::filesystem::path& path) {
  std::vector<PreferencePair> pairs;
  for_each_json_line(path, [&](const nlohmann::json& value, int64_t line_number) {
    const std::string where = fmt::format("{}:{}", path.string(), line_number);
    pairs.push_back(preference_pair_from_json(value, where));
    check(pairs.back().num_constraints() == pairs.front().num_constraints(),
          "{}: the pair has safety labels for {} constraints, the file's first pair for {}", where,
          pairs.back().num_constraints(), pairs.front().num_constraints());
  });
  check(!pairs.empty(), "'{}' holds no preference pairs", path.string());
  return pairs;
}

std::vector<PromptResponse> read_prompt_responses(const std::filesystem::path& path) {
  std::vector<PromptResponse> examples;
  for_each_json_line(path, [&](const nlohmann::json& value, int64_t line_number) {
    const std::string where = fmt::format("{}:{}", path.string(), line_number);
    check(value.is_object(), "{}: expected a JSON object with fields prompt and response, got {}", where,
          value.type_name());
    examples.push_back({read_text(value, "prompt", where), read_text(value, "response", where)});
  });
  check(!examples.empty(), "'{}' holds no SFT examples", path.string());
  return examples;
}

void write_preference_pairs(const std::filesystem::path& path, const std::vector<PreferencePair>& pairs) {
  std::vector<nlohmann::json> lines;
  lines.reserve(pairs.size());
  for (const auto& pair : pairs) lines.push_back(preference_pair_to_json(pair));
  write_json_lines(path, lines);
}

}  // namespace can
