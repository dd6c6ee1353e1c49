#include "can/json_lines.h"

#include <nlohmann/json.hpp>

#include "can/atomic_file.h"
#include "can/compressed_input.h"
#include "can/error.h"

namespace can {

namespace {

// Reads the next line into `line`, without its '\n'; false at the end of the file.
bool read_line(std::streambuf& in, std::string& line, const std::filesystem::path& path, int64_t line_number) {
  line.clear();
  int c = in.sbumpc();
  if (c == std::char_traits<char>::eof()) return false;
  for (; c != std::char_traits<char>::eof() && c != '\n'; c = in.sbumpc()) {
    check(line.size() < kMaxJsonLineBytes, "{}:{}: the line is longer than {} MiB; is this a JSON Lines file?",
          path.string(), line_number, kMaxJsonLineBytes >> 20);
    line.push_back(static_cast<char>(c));
  }
  return true;
}

}  // namespace

void for_each_json_line(const std::filesystem::path& path,
                        const std::function<void(const nlohmann::json& value, int64_t line_number)>& visit) {
  check(!std::filesystem::is_directory(path), "'{}' is a directory, not a JSON Lines file", path.string());
  const std::unique_ptr<std::streambuf> in = open_decompressed(path);
  std::string line;
  int64_t line_number = 0;
  while (read_line(*in, line, path, line_number + 1)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json value;
    try {
      value = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& error) {  // parse_error, or out_of_range for 1e999
      fail("{}:{}: invalid JSON: {}", path.string(), line_number, error.what());
    }
    visit(value, line_number);
  }
}

void write_json_lines(const std::filesystem::path& path, const std::vector<nlohmann::json>& values) {
  write_file_atomically(path, [&](std::ostream& out) {
    for (const auto& value : values) out << value.dump() << '\n';
  });
}

}  // namespace can
