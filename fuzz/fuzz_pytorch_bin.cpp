// pytorch_model.bin, torch.save's zip format (src/io/pytorch_bin.cpp): the zip
// reader and the unpickler are LibTorch's, the checks on what they return CAN's.
#include "can/pytorch_bin.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = can::fuzz::write_input("pytorch_model.bin", data, size);
  can::fuzz::expect_clear_error([&] {
    for (const auto& [name, tensor] : can::load_pytorch_bin(path)) {
      can::fuzz::require(tensor.defined() && tensor.device().is_cpu(), "an accepted tensor that is not on the CPU");
      (void)tensor.clone();  // reads every element: a view past its storage is ASan's to see
    }
  });
  return 0;
}
