// JSON files: parsing, typed fields of their objects, and the format version of
// CAN's JSON artifacts. Every error names `where` (a file, "file:line", or a file and
// an object inside it) and the field, e.g.
//   runs/x/dual.json: predicted: field 'kl' must be a number, got string "a"
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace can {

// Parses a JSON file; errors name the file and the parse position.
nlohmann::json read_json_file(const std::filesystem::path& path);

// The field; an error when it is absent.
const nlohmann::json& required_field(const nlohmann::json& object, const std::string& field, const std::string& where);
// The field, or nullptr when it is absent or null.
const nlohmann::json* optional_field(const nlohmann::json& object, const std::string& field);

double number_field(const nlohmann::json& object, const std::string& field, const std::string& where);
int64_t integer_field(const nlohmann::json& object, const std::string& field, const std::string& where);
uint64_t unsigned_field(const nlohmann::json& object, const std::string& field, const std::string& where);
bool bool_field(const nlohmann::json& object, const std::string& field, const std::string& where);
std::string string_field(const nlohmann::json& object, const std::string& field, const std::string& where);
std::vector<double> numbers_field(const nlohmann::json& object, const std::string& field, const std::string& where);
// An array of numbers that is not a field of its own; `what` names it ("field 'safety'[1]").
std::vector<double> numbers_value(const nlohmann::json& value, const std::string& what, const std::string& where);
std::vector<std::string> strings_field(const nlohmann::json& object, const std::string& field,
                                       const std::string& where);
// An array of numbers and nulls, null read as NaN (how CAN writes a value that does
// not exist, like a relative error against a prediction of 0).
std::vector<double> numbers_or_nulls_field(const nlohmann::json& object, const std::string& field,
                                           const std::string& where);
// A number, or null read as NaN.
double number_or_nan_field(const nlohmann::json& object, const std::string& field, const std::string& where);
// How CAN writes a number that may not exist: NaN and infinities as null, and arrays of them.
nlohmann::json number_or_null(double value);
nlohmann::json numbers_or_nulls(const std::vector<double>& values);
// "prompt_id": a string as it is, an integer in decimal.
std::string prompt_id_field(const nlohmann::json& object, const std::string& where);

// Every JSON artifact CAN writes (dual.json, report.json, sweep.json, stages.json)
// carries "format_version"; a reader accepts only the version it knows, so a
// file of another CAN version is an error that says so instead of being misread.
// Version 2: dual.json and report.json state the units of their scores, report.json
// says which prompts it evaluated and carries the model accuracy.
// Version 3: their predictions carry standard errors (predicted.*_stderr).
inline constexpr int64_t kArtifactFormatVersion = 3;
void check_format_version(const nlohmann::json& object, const std::string& where);

}  // namespace can
