#include "can/compressed_input.h"

#include <lzma.h>
#include <zlib.h>

#include <array>
#include <fstream>
#include <string>

#include "can/error.h"

namespace can {

namespace {

constexpr size_t kChunkBytes = size_t{1} << 16;

// xz: liblzma's stream decoder, fed from the file chunk by chunk.
class XzBuffer final : public std::streambuf {
 public:
  explicit XzBuffer(const std::filesystem::path& path) : path_(path), file_(path, std::ios::binary) {
    check(file_.good(), "cannot open '{}' for reading", path.string());
    const lzma_ret status = lzma_stream_decoder(&stream_, UINT64_MAX, LZMA_CONCATENATED);
    check(status == LZMA_OK, "'{}': cannot start the xz decoder (liblzma error {})", path.string(),
          static_cast<int>(status));
  }
  ~XzBuffer() override { lzma_end(&stream_); }
  XzBuffer(const XzBuffer&) = delete;
  XzBuffer& operator=(const XzBuffer&) = delete;

 protected:
  int_type underflow() override {
    if (finished_) return traits_type::eof();
    stream_.next_out = reinterpret_cast<uint8_t*>(output_.data());
    stream_.avail_out = output_.size();
    while (stream_.avail_out == output_.size() && !finished_) {
      lzma_action action = LZMA_RUN;
      if (stream_.avail_in == 0) {
        file_.read(input_.data(), static_cast<std::streamsize>(input_.size()));
        stream_.next_in = reinterpret_cast<const uint8_t*>(input_.data());
        stream_.avail_in = static_cast<size_t>(file_.gcount());
        if (stream_.avail_in == 0) action = LZMA_FINISH;  // the end of the file: the stream must end too
      }
      const lzma_ret status = lzma_code(&stream_, action);
      if (status == LZMA_STREAM_END) {
        finished_ = true;
      } else {
        check(status == LZMA_OK, "'{}': {}", path_.string(), describe(status));
      }
    }
    const size_t produced = output_.size() - stream_.avail_out;
    if (produced == 0) return traits_type::eof();
    setg(output_.data(), output_.data(), output_.data() + produced);
    return traits_type::to_int_type(output_[0]);
  }

 private:
  static std::string describe(lzma_ret status) {
    switch (status) {
      case LZMA_FORMAT_ERROR:
        return "not an xz file";
      case LZMA_DATA_ERROR:
        return "the xz data is corrupt";
      case LZMA_BUF_ERROR:
        return "the xz data ends early (a truncated file?)";
      case LZMA_MEM_ERROR:
        return "out of memory while decompressing";
      default:
        return fmt::format("liblzma error {}", static_cast<int>(status));
    }
  }

  std::filesystem::path path_;
  std::ifstream file_;
  lzma_stream stream_ = LZMA_STREAM_INIT;
  std::array<char, kChunkBytes> input_{};
  std::array<char, kChunkBytes> output_{};
  bool finished_ = false;
};

// gzip: zlib's gzread, which also checks the trailer's CRC and length.
class GzipBuffer final : public std::streambuf {
 public:
  explicit GzipBuffer(const std::filesystem::path& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    check(file_ != nullptr, "cannot open '{}' for reading", path.string());
    // zlib reads a file without a gzip header as it is (gzdirect, known after the first
    // read); a *.gz file must be gzip.
    const int first = gzgetc(file_);
    if (first != -1) {
      const bool plain = gzdirect(file_) == 1;
      gzungetc(first, file_);
      if (plain) {
        gzclose(file_);
        fail("'{}': not a gzip file", path.string());
      }
    }
  }
  ~GzipBuffer() override { gzclose(file_); }
  GzipBuffer(const GzipBuffer&) = delete;
  GzipBuffer& operator=(const GzipBuffer&) = delete;

 protected:
  int_type underflow() override {
    const int read = gzread(file_, output_.data(), static_cast<unsigned>(output_.size()));
    if (read < 0) {
      int code = 0;
      const char* message = gzerror(file_, &code);
      fail("'{}': the gzip data is corrupt ({})", path_.string(), message);
    }
    if (read == 0) {
      // gzread returns 0 both at a clean end and at a stream cut short; only the first is an end.
      int code = 0;
      const char* message = gzerror(file_, &code);
      check(code == Z_OK || code == Z_STREAM_END, "'{}': the gzip data ends early ({})", path_.string(), message);
      return traits_type::eof();
    }
    setg(output_.data(), output_.data(), output_.data() + read);
    return traits_type::to_int_type(output_[0]);
  }

 private:
  std::filesystem::path path_;
  gzFile file_;
  std::array<char, kChunkBytes> output_{};
};

// The file as it is.
class PlainBuffer final : public std::filebuf {
 public:
  explicit PlainBuffer(const std::filesystem::path& path) {
    check(open(path, std::ios::in | std::ios::binary) != nullptr, "cannot open '{}' for reading", path.string());
  }
};

}  // namespace

std::unique_ptr<std::streambuf> open_decompressed(const std::filesystem::path& path) {
  check(!std::filesystem::is_directory(path), "'{}' is a directory, not a file", path.string());
  const std::string extension = path.extension().string();
  if (extension == ".xz") return std::make_unique<XzBuffer>(path);
  if (extension == ".gz") return std::make_unique<GzipBuffer>(path);
  return std::make_unique<PlainBuffer>(path);
}

}  // namespace can
