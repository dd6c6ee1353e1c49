// Process-wide runtime choices: device, threads, seeds.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace can {

// "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N". Choosing CUDA
// also allows TF32 for float32 matmuls and convolutions (process-wide).
c10::Device select_device(const std::string& name);

// Uses every core for intra-op parallelism: LibTorch picks 1 thread on small
// machines (docs/design.md §7). `threads` <= 0 means OMP_NUM_THREADS when it is set,
// else the hardware concurrency.
void configure_threads(int threads = 0);

// Seeds LibTorch's CPU and CUDA generators.
void set_seed(uint64_t seed);

}  // namespace can
