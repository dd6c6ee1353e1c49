// JSON Lines: one JSON value per line. Blank lines are skipped; a line that is
// not valid JSON, or longer than kMaxJsonLineBytes, is an error naming the file and
// the 1-based line number. Files named *.xz or *.gz are read decompressed
// (compressed_input.h); written files are plain.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace can {

// The longest line read: 64 MiB. One pair, or one prompt's scores, takes kilobytes; a
// longer line is a file that is not JSON Lines, and is refused before it fills memory.
constexpr size_t kMaxJsonLineBytes = size_t{64} << 20;

// Calls `visit(value, line_number)` for each non-blank line, in order. Errors
// thrown by `visit` propagate unchanged, so it can name the line itself.
void for_each_json_line(const std::filesystem::path& path,
                        const std::function<void(const nlohmann::json& value, int64_t line_number)>& visit);

// Writes one compact JSON value per line, atomically.
void write_json_lines(const std::filesystem::path& path, const std::vector<nlohmann::json>& values);

}  // namespace can
