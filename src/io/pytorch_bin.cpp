#include "can/pytorch_bin.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/import_read.h>

#include <cstring>
#include <memory>

#include "can/error.h"

namespace can {

namespace {

std::unique_ptr<caffe2::serialize::PyTorchStreamReader> open_archive(const std::filesystem::path& path) {
  const std::string file = path.string();
  check(std::filesystem::is_regular_file(path), "{}: no such file", file);
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> archive;
  try {
    archive = std::make_unique<caffe2::serialize::PyTorchStreamReader>(file);
    check(archive->hasRecord("data.pkl"), "{}: a zip archive without data.pkl, so not written by torch.save", file);
    // torch.save stores its records uncompressed: one that claims more bytes than the file
    // holds is damaged, and LibTorch would allocate what it claims before reading it.
    const auto file_size = std::filesystem::file_size(path);
    for (const std::string& record : archive->getAllRecords()) {
      const size_t size = archive->getRecordSize(record);
      check(size <= file_size, "{}: record '{}' claims {} bytes in a file of {}: the file is damaged", file, record,
            size, file_size);
    }
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& error) {
    fail("{}: not a file in torch.save's zip format, or a damaged one (PyTorch >= 1.6 writes it; the older format "
         "is not read: load and save it again with a current PyTorch, or convert it to safetensors): {}",
         file, error.what_without_backtrace());
  } catch (const std::exception& error) {
    fail("{}: not a file in torch.save's zip format: {}", file, error.what());
  }
  return archive;
}

// The unpickler takes a tensor's offset, sizes and strides from the file as they are: a
// view reaching past its storage would be read out of bounds when copied into a model,
// and one with more elements than its storage holds (a stride of 0, overlapping rows) is
// no weight a checkpoint stores and would grow without bound when copied (a 2 KB file
// whose tensor claimed a billion elements over one made CAN allocate 4 GB).
void check_inside_storage(const at::Tensor& tensor, const std::string& file, const std::string& name) {
  uint64_t bytes = 0;
  check(!__builtin_mul_overflow(static_cast<uint64_t>(tensor.numel()), tensor.element_size(), &bytes) &&
            bytes <= tensor.storage().nbytes(),
        "{}: tensor '{}' of shape {} has more elements than its storage of {} bytes holds (an overlapping view): "
        "the file is damaged or not a checkpoint of weights",
        file, name, c10::str(tensor.sizes()), tensor.storage().nbytes());
  int64_t last = tensor.storage_offset();  // the last element the view reaches, in elements
  check(last >= 0, "{}: tensor '{}' has a negative storage offset", file, name);
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    check(tensor.size(d) >= 0 && tensor.stride(d) >= 0, "{}: tensor '{}' has a negative size or stride", file, name);
    if (tensor.size(d) == 0) return;  // an empty view reads nothing
    int64_t reach = 0;
    check(!__builtin_mul_overflow(tensor.size(d) - 1, tensor.stride(d), &reach) &&
              !__builtin_add_overflow(last, reach, &last),
          "{}: tensor '{}' has sizes and strides beyond any storage", file, name);
  }
  int64_t needed = 0;
  check(!__builtin_mul_overflow(last + 1, static_cast<int64_t>(tensor.element_size()), &needed),
        "{}: tensor '{}' has sizes and strides beyond any storage", file, name);
  check(static_cast<uint64_t>(needed) <= tensor.storage().nbytes(),
        "{}: tensor '{}' of shape {} reaches byte {} of a storage of {} bytes: the file is damaged", file, name,
        c10::str(tensor.sizes()), needed, tensor.storage().nbytes());
}

// Bytes of argument after each pickle opcode the walk below knows (protocols 0 to 5):
// kLine ends at '\n', kTwoLines at the second, kSized1/4/8 are a 1-, 4- or 8-byte
// little-endian length and that many bytes.
enum class Argument { kUnknown, kNone, kFixed, kLine, kTwoLines, kSized1, kSized4, kSized8 };
struct OpcodeArgument {
  Argument kind = Argument::kUnknown;
  size_t bytes = 0;  // kFixed
};

OpcodeArgument argument_of(uint8_t opcode) {
  switch (opcode) {
    case 0x80: case 'K': case 'h': case 'q': case 0x82: return {Argument::kFixed, 1};  // PROTO BININT1 BINGET BINPUT EXT1
    case 'M': case 0x83: return {Argument::kFixed, 2};                                   // BININT2 EXT2
    case 'J': case 'j': case 'r': case 0x84: return {Argument::kFixed, 4};  // BININT LONG_BINGET LONG_BINPUT EXT4
    case 'G': case 0x95: return {Argument::kFixed, 8};                      // BINFLOAT FRAME
    case 0x8c: case 'U': case 'C': case 0x8a: return {Argument::kSized1};   // SHORT_BIN{UNICODE,STRING,BYTES} LONG1
    case 'X': case 'T': case 'B': case 0x8b: return {Argument::kSized4};    // BIN{UNICODE,STRING,BYTES} LONG4
    case 0x8d: case 0x8e: case 0x96: return {Argument::kSized8};            // BINUNICODE8 BINBYTES8 BYTEARRAY8
    case 'I': case 'L': case 'S': case 'V': case 'F': case 'P': case 'g': case 'p': return {Argument::kLine};
    case 'c': case 'i': return {Argument::kTwoLines};  // GLOBAL INST
    case '(': case '.': case '0': case '1': case '2': case 'N': case 'R': case 'Q': case ']': case 'a': case 'b':
    case 'd': case '}': case 'e': case 'l': case 'o': case 's': case 't': case ')': case 'u': case 0x81: case 0x85:
    case 0x86: case 0x87: case 0x88: case 0x89: case 0x8f: case 0x90: case 0x91: case 0x92: case 0x93: case 0x94:
    case 0x97: case 0x98:
      return {Argument::kNone};
    default:
      return {};
  }
}

uint64_t little_endian(const uint8_t* bytes, size_t count) {
  uint64_t value = 0;
  for (size_t i = count; i-- > 0;) value = value << 8 | bytes[i];
  return value;
}

// LibTorch's unpickler trusts the sizes a pickle states: it grows its memo table to every
// id a PUT names (one damaged id makes it allocate up to 2^32 entries) and allocates a
// string or bytes argument at its stated length before reading it. The pickler numbers
// its memo from 0, one id per PUT, so a real id is below the pickle's length, and a real
// argument lies inside the pickle: walk the opcodes up to STOP and refuse either. The
// walk stops at an opcode it does not know; the unpickler refuses those.
void check_memo_ids(const uint8_t* pickle, size_t size, const std::string& file) {
  size_t at = 0;
  while (at < size) {
    const uint8_t opcode = pickle[at++];
    const OpcodeArgument argument = argument_of(opcode);
    if (argument.kind == Argument::kUnknown || opcode == '.') return;
    const size_t left = size - at;
    uint64_t length = 0;  // of the argument, after its own length field
    switch (argument.kind) {
      case Argument::kFixed:
        length = argument.bytes;
        break;
      case Argument::kSized1:
      case Argument::kSized4:
      case Argument::kSized8: {
        const size_t field = argument.kind == Argument::kSized1 ? 1 : argument.kind == Argument::kSized4 ? 4 : 8;
        if (left < field) return;  // truncated: the unpickler says so
        length = field + little_endian(pickle + at, field);
        break;
      }
      case Argument::kLine:
      case Argument::kTwoLines: {
        const auto* end = static_cast<const uint8_t*>(std::memchr(pickle + at, '\n', left));
        if (end != nullptr && argument.kind == Argument::kTwoLines) {
          end = static_cast<const uint8_t*>(std::memchr(end + 1, '\n', size - static_cast<size_t>(end + 1 - pickle)));
        }
        if (end == nullptr) return;
        length = static_cast<uint64_t>(end - (pickle + at)) + 1;
        break;
      }
      default:
        break;
    }
    // A length past the pickle's end: LibTorch's unpickler would allocate it before finding
    // the bytes missing (a 2 KB file whose string claimed 4 GB made it allocate 4 GB).
    check(length <= left, "{}: data.pkl's opcode at byte {} claims {} bytes where {} remain: the file is damaged",
          file, at - 1, length, left);
    if (opcode == 'q' || opcode == 'r' || opcode == 'p') {  // BINPUT, LONG_BINPUT, PUT
      const uint64_t id = opcode == 'p' ? std::strtoull(reinterpret_cast<const char*>(pickle + at), nullptr, 10)
                                        : little_endian(pickle + at, opcode == 'q' ? 1 : 4);
      check(id < size, "{}: data.pkl names memo entry {} in a pickle of {} bytes: the file is damaged", file, id,
            size);
    }
    at += static_cast<size_t>(length);
  }
}

// The dtypes a checkpoint's tensors come in (those safetensors names); the unpickler also
// builds sub-byte, quantized and complex tensors, which LibTorch cannot even copy.
bool is_weight_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: case at::kHalf: case at::kBFloat16: case at::kDouble: case at::kLong: case at::kInt:
    case at::kShort: case at::kChar: case at::kByte: case at::kBool:
      return true;
    default:
      return false;
  }
}

}  // namespace

void check_pytorch_bin_archive(const std::filesystem::path& path) { open_archive(path); }

std::map<std::string, at::Tensor> load_pytorch_bin(const std::filesystem::path& path) {
  const std::string file = path.string();
  const auto archive = open_archive(path);
  c10::IValue state;
  try {
    const auto [pickle, pickle_size] = archive->getRecord("data.pkl");
    check_memo_ids(static_cast<const uint8_t*>(pickle.get()), pickle_size, file);
    // The pickle in data.pkl, its tensors' storages in data/<key>, mapped to the CPU. No type resolver:
    // a class the unpickler does not know is an error, not a lookup.
    state = torch::jit::readArchiveAndTensors("data", /*pickle_prefix=*/"", /*tensor_prefix=*/"",
                                              /*type_resolver=*/std::nullopt, /*obj_loader=*/std::nullopt,
                                              at::Device(at::kCPU), *archive);
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& error) {
    fail("{}: refused: CAN reads only a state dict of tensors from a .bin file, and this one holds something "
         "else, or is damaged: {}",
         file, error.what_without_backtrace());
  } catch (const std::exception& error) {
    fail("{}: refused: not a readable state dict of tensors: {}", file, error.what());
  }
  check(state.isGenericDict(), "{}: holds a {}, not a state dict {{tensor name: tensor}}", file, state.tagKind());
  std::map<std::string, at::Tensor> tensors;
  for (const auto& entry : state.toGenericDict()) {
    check(entry.key().isString(), "{}: the state dict has a key of type {}, not a tensor name", file,
          entry.key().tagKind());
    const std::string name = entry.key().toStringRef();
    check(entry.value().isTensor(), "{}: entry '{}' is a {}, not a tensor", file, name, entry.value().tagKind());
    const at::Tensor tensor = entry.value().toTensor();
    check(is_weight_dtype(tensor.scalar_type()),
          "{}: tensor '{}' has dtype {}, which no Llama-family checkpoint holds (floating point, integer or bool "
          "expected): the file is damaged or not a model's",
          file, name, c10::toString(tensor.scalar_type()));
    check_inside_storage(tensor, file, name);
    tensors.emplace(name, tensor);
  }
  return tensors;
}

}  // namespace can
