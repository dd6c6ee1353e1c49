#include "can/tensorboard.h"

#include <array>
#include <cstring>

#include "can/error.h"

namespace can {

namespace {

// Protocol-buffer wire format: a key is (field number << 3) | wire type.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, (field << 3) | type); }

template <typename T>
void put_little_endian(std::string& out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

void put_double(std::string& out, uint32_t field, double value) {
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  put_key(out, field, kFixed64);
  put_little_endian(out, bits);
}

void put_float(std::string& out, uint32_t field, float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  put_key(out, field, kFixed32);
  put_little_endian(out, bits);
}

void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// The reflected CRC-32C table (polynomial 0x82F63B78).
std::array<uint32_t, 256> crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? 0x82F63B78u : 0u);
    table[i] = crc;
  }
  return table;
}

}  // namespace

uint32_t crc32c(const uint8_t* data, size_t size) {
  static const std::array<uint32_t, 256> table = crc32c_table();
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const uint8_t* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string scalar_event(double wall_time, int64_t step, const std::map<std::string, double>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string entry;
    put_bytes(entry, 1, tag);
    put_float(entry, 2, static_cast<float>(value));
    put_bytes(summary, 1, entry);
  }
  std::string event;
  put_double(event, 1, wall_time);
  put_key(event, 2, kVarint);
  put_varint(event, static_cast<uint64_t>(step));
  put_bytes(event, 5, summary);
  return event;
}

std::string file_version_event(double wall_time) {
  std::string event;
  put_double(event, 1, wall_time);
  put_bytes(event, 3, "brain.Event:2");
  return event;
}

std::string tf_record(const std::string& message) {
  std::string length;
  put_little_endian(length, static_cast<uint64_t>(message.size()));
  const auto* bytes = reinterpret_cast<const uint8_t*>(message.data());
  std::string record = length;
  put_little_endian(record, masked_crc32c(reinterpret_cast<const uint8_t*>(length.data()), length.size()));
  record += message;
  put_little_endian(record, masked_crc32c(bytes, message.size()));
  return record;
}

EventsWriter::EventsWriter(const std::filesystem::path& path, bool append, double wall_time) : path_(path) {
  const bool fresh = !append || !std::filesystem::exists(path_);
  out_.open(path_, fresh ? std::ios::binary | std::ios::trunc : std::ios::binary | std::ios::app);
  check(out_.good(), "cannot open '{}' for writing TensorBoard events", path_.string());
  if (fresh) {
    out_ << tf_record(file_version_event(wall_time));
    out_.flush();
  }
}

void EventsWriter::write(double wall_time, int64_t step, const std::map<std::string, double>& scalars) {
  out_ << tf_record(scalar_event(wall_time, step, scalars));
  out_.flush();
  check(out_.good(), "writing TensorBoard events to '{}' failed (disk full?)", path_.string());
}

std::string tensorboard_tag(const std::string& metric) {
  if (metric.rfind("eval_", 0) == 0) return "eval/" + metric.substr(5);
  return "train/" + metric;
}

}  // namespace can
