// Writes compressed test inputs with the libraries CAN reads them with (xz: liblzma,
// gzip: zlib), as the published files are written.
#pragma once

#include <lzma.h>
#include <zlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace can::testing {

inline void write_xz(const std::filesystem::path& path, const std::string& text) {
  std::vector<uint8_t> out(lzma_stream_buffer_bound(text.size()));
  size_t written = 0;
  if (lzma_easy_buffer_encode(6, LZMA_CHECK_CRC64, nullptr, reinterpret_cast<const uint8_t*>(text.data()),
                              text.size(), out.data(), &written, out.size()) != LZMA_OK) {
    throw std::runtime_error("lzma_easy_buffer_encode failed");
  }
  FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr || std::fwrite(out.data(), 1, written, file) != written || std::fclose(file) != 0) {
    throw std::runtime_error("cannot write " + path.string());
  }
}

inline void write_gzip(const std::filesystem::path& path, const std::string& text) {
  gzFile file = gzopen(path.c_str(), "wb");
  if (file == nullptr || gzwrite(file, text.data(), static_cast<unsigned>(text.size())) != static_cast<int>(text.size()) ||
      gzclose(file) != Z_OK) {
    throw std::runtime_error("cannot write " + path.string());
  }
}

}  // namespace can::testing
