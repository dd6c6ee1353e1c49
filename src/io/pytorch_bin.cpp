#include "can/pytorch_bin.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/import_read.h>

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
// view reaching past its storage would be read out of bounds when copied into a model.
void check_inside_storage(const at::Tensor& tensor, const std::string& file, const std::string& name) {
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

}  // namespace

void check_pytorch_bin_archive(const std::filesystem::path& path) { open_archive(path); }

std::map<std::string, at::Tensor> load_pytorch_bin(const std::filesystem::path& path) {
  const std::string file = path.string();
  const auto archive = open_archive(path);
  c10::IValue state;
  try {
    // The pickle in data.pkl, its tensors' storages in data/<key>, mapped to the CPU. No type resolver:
    // a class the unpickler does not know is an error, not a lookup.
    state = torch::jit::readArchiveAndTensors("data", /*pickle_prefix=*/"", /*tensor_prefix=*/"",
                                              /*type_resolver=*/std::nullopt, /*obj_loader=*/std::nullopt,
                                              at::Device(at::kCPU), *archive);
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
    check_inside_storage(tensor, file, name);
    tensors.emplace(name, tensor);
  }
  return tensors;
}

}  // namespace can
