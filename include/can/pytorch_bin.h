// pytorch_model.bin: a state dict written by Python's torch.save, read natively
// through LibTorch's loader for torch.save's zip format (PyTorch >= 1.6).
//
// Only a plain state dict is accepted: a dict (or OrderedDict) of tensor name to
// tensor. The file's pickle is decoded by LibTorch's TorchScript unpickler, which
// knows tensors, storages and containers and nothing else: any other Python object
// or callable in the file (a class instance, os.system, ...) is refused with an
// error naming the file, and never executed.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <string>

namespace can {

// Every tensor of the state dict in `path`, on the CPU, in its stored dtype.
std::map<std::string, at::Tensor> load_pytorch_bin(const std::filesystem::path& path);

// Opens the archive and checks it holds data.pkl, reading no tensor: what a dry run
// can afford on a 10 GB shard. The same errors as load_pytorch_bin for a file that is
// not in torch.save's zip format.
void check_pytorch_bin_archive(const std::filesystem::path& path);

}  // namespace can
