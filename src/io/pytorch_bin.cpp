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
  } catch (const c10::Error& error) {
    fail("{}: not a file in torch.save's zip format (PyTorch >= 1.6; the older format is not read: load and save "
         "it again with a current PyTorch, or convert it to safetensors): {}",
         file, error.what_without_backtrace());
  } catch (const std::exception& error) {
    fail("{}: not a file in torch.save's zip format: {}", file, error.what());
  }
  check(archive->hasRecord("data.pkl"), "{}: a zip archive without data.pkl, so not written by torch.save", file);
  return archive;
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
    tensors.emplace(name, entry.value().toTensor());
  }
  return tensors;
}

}  // namespace can
