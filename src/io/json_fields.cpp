#include "can/json_fields.h"

#include <cmath>
#include <limits>

#include "can/atomic_file.h"
#include "can/error.h"

namespace can {

namespace {

[[noreturn]] void wrong_type(const nlohmann::json& value, const std::string& field, const std::string& expected,
                             const std::string& where) {
  fail("{}: field '{}' must be {}, got {} {}", where, field, expected, value.type_name(), value.dump());
}

}  // namespace

nlohmann::json read_json_file(const std::filesystem::path& path) {
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& error) {
    fail("{}: invalid JSON at byte {}: {}", path.string(), error.byte, error.what());
  } catch (const nlohmann::json::exception& error) {  // out_of_range: a number beyond a double, e.g. 1e999
    fail("{}: invalid JSON: {}", path.string(), error.what());
  }
}

const nlohmann::json& required_field(const nlohmann::json& object, const std::string& field,
                                     const std::string& where) {
  check(object.is_object(), "{}: expected a JSON object, got {} {}", where, object.type_name(), object.dump());
  const auto found = object.find(field);
  check(found != object.end(), "{}: missing field '{}'", where, field);
  return *found;
}

const nlohmann::json* optional_field(const nlohmann::json& object, const std::string& field) {
  const auto found = object.find(field);
  return found == object.end() || found->is_null() ? nullptr : &*found;
}

double number_field(const nlohmann::json& object, const std::string& field, const std::string& where) {
  const nlohmann::json& value = required_field(object, field, where);
  if (!value.is_number()) wrong_type(value, field, "a number", where);
  return value.get<double>();
}

int64_t integer_field(const nlohmann::json& object, const std::string& field, const std::string& where) {
  const nlohmann::json& value = required_field(object, field, where);
  if (!value.is_number_integer()) wrong_type(value, field, "an integer", where);
  return value.get<int64_t>();
}

uint64_t unsigned_field(const nlohmann::json& object, const std::string& field, const std::string& where) {
  const nlohmann::json& value = required_field(object, field, where);
  if (!value.is_number_unsigned()) wrong_type(value, field, "a non-negative integer", where);
  return value.get<uint64_t>();
}

bool bool_field(const nlohmann::json& object, const std::string& field, const std::string& where) {
  const nlohmann::json& value = required_field(object, field, where);
  if (!value.is_boolean()) wrong_type(value, field, "true or false", where);
  return value.get<bool>();
}

std::string string_field(const nlohmann::json& object, const std::string& field, const std::string& where) {
  const nlohmann::json& value = required_field(object, field, where);
  if (!value.is_string()) wrong_type(value, field, "a string", where);
  return value.get<std::string>();
}

std::vector<double> numbers_value(const nlohmann::json& value, const std::string& what, const std::string& where) {
  check(value.is_array(), "{}: {} must be an array of numbers, got {} {}", where, what, value.type_name(),
        value.dump());
  std::vector<double> numbers;
  numbers.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    check(value[i].is_number(), "{}: {}[{}] must be a number, got {} {}", where, what, i, value[i].type_name(),
          value[i].dump());
    numbers.push_back(value[i].get<double>());
  }
  return numbers;
}

std::vector<double> numbers_field(const nlohmann::json& object, const std::string& field, const std::string& where) {
  return numbers_value(required_field(object, field, where), fmt::format("field '{}'", field), where);
}

std::vector<std::string> strings_field(const nlohmann::json& object, const std::string& field,
                                       const std::string& where) {
  const nlohmann::json& value = required_field(object, field, where);
  if (!value.is_array()) wrong_type(value, field, "an array of strings", where);
  std::vector<std::string> strings;
  for (size_t i = 0; i < value.size(); ++i) {
    check(value[i].is_string(), "{}: field '{}'[{}] must be a string, got {} {}", where, field, i,
          value[i].type_name(), value[i].dump());
    strings.push_back(value[i].get<std::string>());
  }
  return strings;
}

std::vector<double> numbers_or_nulls_field(const nlohmann::json& object, const std::string& field,
                                           const std::string& where) {
  const nlohmann::json& value = required_field(object, field, where);
  if (!value.is_array()) wrong_type(value, field, "an array of numbers and nulls", where);
  std::vector<double> numbers;
  for (size_t i = 0; i < value.size(); ++i) {
    check(value[i].is_number() || value[i].is_null(), "{}: field '{}'[{}] must be a number or null, got {} {}", where,
          field, i, value[i].type_name(), value[i].dump());
    numbers.push_back(value[i].is_null() ? std::numeric_limits<double>::quiet_NaN() : value[i].get<double>());
  }
  return numbers;
}

double number_or_nan_field(const nlohmann::json& object, const std::string& field, const std::string& where) {
  return required_field(object, field, where).is_null() ? std::numeric_limits<double>::quiet_NaN()
                                                        : number_field(object, field, where);
}

nlohmann::json number_or_null(double value) {
  return std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
}

nlohmann::json numbers_or_nulls(const std::vector<double>& values) {
  nlohmann::json result = nlohmann::json::array();
  for (double value : values) result.push_back(number_or_null(value));
  return result;
}

std::string prompt_id_field(const nlohmann::json& object, const std::string& where) {
  const nlohmann::json& value = required_field(object, "prompt_id", where);
  if (value.is_string()) return value.get<std::string>();
  if (!value.is_number_integer()) wrong_type(value, "prompt_id", "a string or an integer", where);
  return value.dump();
}

void check_format_version(const nlohmann::json& object, const std::string& where) {
  check(object.is_object() && object.contains("format_version"),
        "{}: no format_version: written by a CAN older than this one (which reads version {}); run the stage that "
        "writes it again",
        where, kArtifactFormatVersion);
  const int64_t version = integer_field(object, "format_version", where);
  check(version == kArtifactFormatVersion, "{}: format_version {} is not the version {} this CAN reads", where,
        version, kArtifactFormatVersion);
}

}  // namespace can
