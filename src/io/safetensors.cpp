#include "can/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "can/atomic_file.h"
#include "can/error.h"

// The format stores little-endian bytes, which are copied into tensors as they are.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace can {

namespace fs = std::filesystem;

namespace {

// The reference implementation refuses headers above 100 MB: parsing a huge JSON is a denial of service.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16}, {"F64", at::kDouble}, {"I64", at::kLong},
    {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},       {"U8", at::kByte},    {"BOOL", at::kBool},
};

const char* dtype_name(at::ScalarType type) {
  for (const auto& dtype : kDtypes) {
    if (dtype.type == type) return dtype.name;
  }
  return nullptr;
}

std::string format_shape(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

struct FileDescriptor {
  explicit FileDescriptor(int value) : value(value) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (value >= 0) ::close(value);
  }
  const int value;
};

// One tensor's header entry; offsets are relative to the data buffer.
struct TensorEntry {
  std::string dtype_name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

// Parses the header, rejecting a repeated key in any object: nlohmann would silently keep the last one, and two
// entries for one tensor name are how a file shows different contents to different readers.
nlohmann::json parse_header(const char* begin, const char* end, const std::string& file) {
  std::vector<std::set<std::string>> keys_of_open_objects;
  const nlohmann::json::parser_callback_t reject_duplicate_keys = [&](int, nlohmann::json::parse_event_t event,
                                                                      nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (event == Event::object_start) {
      keys_of_open_objects.emplace_back();
    } else if (event == Event::object_end) {
      keys_of_open_objects.pop_back();
    } else if (event == Event::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!keys_of_open_objects.back().insert(key).second) {
        if (keys_of_open_objects.size() == 1) fail("{}: duplicate tensor name '{}' in the header", file, key);
        fail("{}: duplicate key '{}' in a header object", file, key);
      }
    }
    return true;
  };
  try {
    return nlohmann::json::parse(begin, end, reject_duplicate_keys);
  } catch (const nlohmann::json::parse_error& error) {
    fail("{}: header is not valid JSON (byte {} of the header): {}", file, error.byte, error.what());
  } catch (const nlohmann::json::exception& error) {  // out_of_range: a number beyond a double, e.g. 1e999
    fail("{}: header is not valid JSON: {}", file, error.what());
  }
}

TensorEntry parse_entry(const std::string& file, const std::string& name, const nlohmann::json& entry,
                        uint64_t buffer_bytes) {
  const std::string where = fmt::format("{}: tensor '{}'", file, name);
  check(entry.is_object(), "{}: header entry is a JSON {}, not an object", where, entry.type_name());
  // Other keys are ignored, as the reference reader does.
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    check(entry.contains(key), "{}: header entry has no '{}'", where, key);
  }

  TensorEntry result;
  const auto& dtype = entry.at("dtype");
  check(dtype.is_string(), "{}: dtype is {}, not a string", where, dtype.dump());
  result.dtype_name = dtype.get<std::string>();
  const auto known = std::find_if(std::begin(kDtypes), std::end(kDtypes),
                                  [&](const DtypeName& candidate) { return result.dtype_name == candidate.name; });
  check(known != std::end(kDtypes),
        "{}: unknown dtype '{}' (supported: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL)", where,
        result.dtype_name);
  result.dtype = known->type;

  const auto& shape = entry.at("shape");
  check(shape.is_array(), "{}: shape is {}, not an array", where, shape.dump());
  // numel × itemsize is folded with overflow checks, dimension by dimension, as the reference reader does.
  uint64_t expected_bytes = c10::elementSize(result.dtype);
  for (size_t dim = 0; dim < shape.size(); ++dim) {
    const auto& size = shape[dim];
    check(
        size.is_number_unsigned() && size.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
        "{}: shape {} has entry {} = {}, not a non-negative integer", where, shape.dump(), dim, size.dump());
    result.shape.push_back(size.get<int64_t>());
    check(!__builtin_mul_overflow(expected_bytes, size.get<uint64_t>(), &expected_bytes),
          "{}: shape {} of {} overflows 64-bit byte counts", where, shape.dump(), result.dtype_name);
  }

  const auto& offsets = entry.at("data_offsets");
  check(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() && offsets[1].is_number_unsigned(),
        "{}: data_offsets is {}, not two non-negative integers [begin, end]", where, offsets.dump());
  result.begin = offsets[0].get<uint64_t>();
  result.end = offsets[1].get<uint64_t>();
  check(result.begin <= result.end, "{}: data_offsets [{}, {}) have begin > end", where, result.begin, result.end);
  check(result.end <= buffer_bytes,
        "{}: data_offsets [{}, {}) extend past the end of the {}-byte data buffer (truncated file?)", where,
        result.begin, result.end, buffer_bytes);
  check(result.end - result.begin == expected_bytes,
        "{}: data_offsets [{}, {}) hold {} bytes but shape {} of {} needs {}", where, result.begin, result.end,
        result.end - result.begin, format_shape(result.shape), result.dtype_name, expected_bytes);
  return result;
}

}  // namespace

struct SafetensorsFile::Mapping {
  fs::path path;
  const uint8_t* file_bytes = nullptr;  // the whole file, mapped read-only
  size_t file_size = 0;
  const uint8_t* buffer = nullptr;  // the data buffer that the offsets are relative to
  std::map<std::string, TensorEntry> entries;
  std::vector<std::string> names_in_file_order;
  std::map<std::string, std::string> metadata;

  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (file_bytes != nullptr) munmap(const_cast<uint8_t*>(file_bytes), file_size);
  }

  const TensorEntry& entry(const std::string& name) const {
    const auto found = entries.find(name);
    check(found != entries.end(), "{}: no tensor named '{}'", path.string(), name);
    return found->second;
  }
};

SafetensorsFile SafetensorsFile::open(const fs::path& path) {
  auto mapping = std::make_shared<Mapping>();
  mapping->path = path;
  const std::string file = path.string();

  const FileDescriptor descriptor(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  check(descriptor.value >= 0, "cannot open '{}' for reading: {}", file, std::strerror(errno));
  struct stat status {};
  const bool stat_failed = fstat(descriptor.value, &status) != 0;
  check(!stat_failed, "cannot stat '{}': {}", file, std::strerror(errno));
  check(S_ISREG(status.st_mode), "{}: not a regular file", file);
  check(status.st_size >= 8, "{}: file is {} bytes, shorter than the 8-byte header length", file,
        static_cast<int64_t>(status.st_size));
  mapping->file_size = static_cast<size_t>(status.st_size);
  // The mapping stays valid after the descriptor is closed.
  void* address = mmap(nullptr, mapping->file_size, PROT_READ, MAP_PRIVATE, descriptor.value, 0);
  check(address != MAP_FAILED, "cannot map '{}': {}", file, std::strerror(errno));
  mapping->file_bytes = static_cast<const uint8_t*>(address);

  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, mapping->file_bytes, 8);
  check(header_bytes <= kMaxHeaderBytes, "{}: header length {} exceeds the {}-byte limit (not a safetensors file?)",
        file, header_bytes, kMaxHeaderBytes);
  check(header_bytes <= mapping->file_size - 8,
        "{}: header length {} exceeds the {} bytes that follow it (truncated file?)", file, header_bytes,
        mapping->file_size - 8);
  const char* header_begin = reinterpret_cast<const char*>(mapping->file_bytes + 8);
  const nlohmann::json header = parse_header(header_begin, header_begin + header_bytes, file);
  check(header.is_object(), "{}: header is a JSON {}, not an object", file, header.type_name());
  mapping->buffer = mapping->file_bytes + 8 + header_bytes;
  const uint64_t buffer_bytes = mapping->file_size - 8 - header_bytes;

  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      check(value.is_object(), "{}: {} is a JSON {}, not an object of strings", file, kMetadataKey, value.type_name());
      for (const auto& [key, text] : value.items()) {
        check(text.is_string(), "{}: {} value of '{}' is {}, not a string", file, kMetadataKey, key, text.dump());
        mapping->metadata.emplace(key, text.get<std::string>());
      }
      continue;
    }
    mapping->entries.emplace(name, parse_entry(file, name, value, buffer_bytes));
    mapping->names_in_file_order.push_back(name);
  }

  // The reference reader (huggingface/safetensors, Metadata::validate) requires the ranges, sorted by offset, to
  // tile the data buffer exactly, and so does this one: no overlap (one byte read as two tensors), no hole and no
  // trailing bytes (data that no tensor accounts for, which is how polyglot files hide a second payload).
  auto& names = mapping->names_in_file_order;
  std::sort(names.begin(), names.end(), [&](const std::string& left, const std::string& right) {
    const TensorEntry& a = mapping->entries.at(left);
    const TensorEntry& b = mapping->entries.at(right);
    return std::tie(a.begin, a.end, left) < std::tie(b.begin, b.end, right);
  });
  uint64_t covered_until = 0;
  const std::string* previous = nullptr;
  for (const auto& name : names) {
    const TensorEntry& entry = mapping->entries.at(name);
    if (entry.begin < covered_until) {
      const TensorEntry& other = mapping->entries.at(*previous);
      fail("{}: tensor '{}': data_offsets [{}, {}) overlap those of tensor '{}' [{}, {})", file, name, entry.begin,
           entry.end, *previous, other.begin, other.end);
    }
    check(entry.begin == covered_until,
          "{}: bytes [{}, {}) of the data buffer belong to no tensor (the format allows no holes)", file, covered_until,
          entry.begin);
    covered_until = entry.end;
    previous = &name;
  }
  check(covered_until == buffer_bytes,
        "{}: the data buffer has {} bytes but its tensors end at byte {} (trailing bytes belong to no tensor)", file,
        buffer_bytes, covered_until);

  SafetensorsFile result;
  result.mapping_ = std::move(mapping);
  return result;
}

const fs::path& SafetensorsFile::path() const { return mapping_->path; }

std::vector<std::string> SafetensorsFile::names() const { return mapping_->names_in_file_order; }

bool SafetensorsFile::contains(const std::string& name) const { return mapping_->entries.count(name) > 0; }

std::vector<int64_t> SafetensorsFile::shape(const std::string& name) const { return mapping_->entry(name).shape; }

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorEntry& entry = mapping_->entry(name);
  const uint8_t* source = mapping_->buffer + entry.begin;
  const uint64_t bytes = entry.end - entry.begin;
  if (entry.dtype == at::kBool) {
    // Any other byte would be undefined behaviour as a C++ bool.
    const uint8_t* invalid = std::find_if(source, source + bytes, [](uint8_t byte) { return byte > 1; });
    if (invalid != source + bytes) {
      fail("{}: tensor '{}': BOOL element {} has byte value {}, not 0 or 1", mapping_->path.string(), name,
           invalid - source, static_cast<int>(*invalid));
    }
  }
  at::Tensor result = at::empty(entry.shape, at::TensorOptions().dtype(entry.dtype));
  if (bytes > 0) std::memcpy(result.data_ptr(), source, bytes);
  return result;
}

const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return mapping_->metadata; }

void save_safetensors(const fs::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string file = path.string();
  // ordered_json keeps the header's entries in data order, as the reference writer does.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    check(name != kMetadataKey, "{}: '{}' is reserved and cannot name a tensor", file, name);
    check(seen.insert(name).second, "{}: tensor name '{}' is given twice", file, name);
    check(tensor.defined(), "{}: tensor '{}' is undefined", file, name);
    check(tensor.layout() == at::kStrided, "{}: tensor '{}' is not dense ({} layout)", file, name,
          c10::str(tensor.layout()));
    const char* dtype = dtype_name(tensor.scalar_type());
    check(dtype != nullptr,
          "{}: tensor '{}' has dtype {}, which safetensors files here cannot hold (supported: "
          "float32, float16, bfloat16, float64, int64, int32, int16, int8, uint8, bool)",
          file, name, c10::toString(tensor.scalar_type()));
    const uint64_t bytes = static_cast<uint64_t>(tensor.numel()) * tensor.element_size();
    header[name] = {{"dtype", dtype},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", nlohmann::ordered_json::array({offset, offset + bytes})}};
    offset += bytes;
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::type_error& error) {
    fail("{}: cannot write the header (tensor names and metadata must be UTF-8): {}", file, error.what());
  }
  // Spaces pad the header so that the data buffer starts 8-byte aligned, as the reference writer does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  const uint64_t header_bytes = header_text.size();

  write_file_atomically(path, [&](std::ostream& out) {
    out.write(reinterpret_cast<const char*>(&header_bytes), sizeof(header_bytes));
    out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
    // One tensor at a time on the CPU, so a model on the GPU is never copied whole.
    for (const auto& [name, tensor] : tensors) {
      const at::Tensor host = tensor.detach().to(at::kCPU).contiguous();
      const auto bytes = static_cast<std::streamsize>(host.numel() * host.element_size());
      if (bytes > 0) out.write(static_cast<const char*>(host.data_ptr()), bytes);
    }
  });
}

}  // namespace can
