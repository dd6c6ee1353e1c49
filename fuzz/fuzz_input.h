// What every fuzz target shares (scripts/fuzz.sh). CAN's parsers read files, so a
// target writes the fuzzer's bytes to a file of its own scratch folder and parses
// that. The property checked: bad input ends in a can::Error, whose message names
// the file. Any other exception, a crash, a sanitizer report, a leak or a hang is
// a finding: it aborts, and libFuzzer keeps the input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <system_error>
#include <unistd.h>

#include "can/error.h"

namespace can::fuzz {

// $TMPDIR/can-fuzz-<pid>/ (TMPDIR defaults to /tmp), made on first use, removed at exit.
inline const std::filesystem::path& scratch_directory() {
  static const std::filesystem::path directory = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::filesystem::path path = std::filesystem::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") /
                                 ("can-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(scratch_directory(), ignored);
    });
    return path;
  }();
  return directory;
}

// Writes the input to scratch_directory()/relative, replacing what was there.
inline std::filesystem::path write_input(const std::filesystem::path& relative, const uint8_t* data, size_t size) {
  const std::filesystem::path path = scratch_directory() / relative;
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out.flush()) {
    std::cerr << "fuzz: cannot write the input to " << path << "\n";
    std::abort();
  }
  return path;
}

// Aborts with the message when `condition` is false: a parser accepted something
// that breaks its own contract.
inline void require(bool condition, const char* what) {
  if (!condition) {
    std::cerr << "fuzz: broken contract: " << what << "\n";
    std::abort();
  }
}

// Runs `parse`. A can::Error (bad input, said clearly) is the expected outcome;
// any other exception aborts so that libFuzzer records the input.
template <typename Parse>
void expect_clear_error(Parse&& parse) {
  try {
    parse();
  } catch (const can::Error&) {
  } catch (const std::exception& error) {
    std::cerr << "fuzz: not a can::Error: " << error.what() << "\n";
    std::abort();
  }
}

}  // namespace can::fuzz
