// Safetensors files: header length, JSON header, data (src/io/safetensors.cpp).
#include "can/safetensors.h"

#include <ATen/ATen.h>

#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = can::fuzz::write_input("model.safetensors", data, size);
  can::fuzz::expect_clear_error([&] {
    const can::SafetensorsFile file = can::SafetensorsFile::open(path);
    for (const std::string& name : file.names()) {
      const at::Tensor tensor = file.tensor(name);
      can::fuzz::require(tensor.sizes().vec() == file.shape(name), "a tensor's shape differs from its header entry");
      can::fuzz::require(tensor.is_contiguous(), "a tensor read from the file is not contiguous");
    }
  });
  return 0;
}
