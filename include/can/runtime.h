// Process-wide runtime choices and facts: device, threads, seeds, resident memory.
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

// Resident memory of this process in bytes (Linux's VmRSS), and its peak (VmHWM)
// since start or since the last reset_peak_resident_memory(); -1 where /proc cannot
// be read. The reset (Linux ≥ 4.0: 5 written to /proc/self/clear_refs) returns false
// where it is refused; the peak then covers everything before as well.
int64_t resident_bytes();
int64_t peak_resident_bytes();
bool reset_peak_resident_memory();

}  // namespace can
