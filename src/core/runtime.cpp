#include "can/runtime.h"

#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "can/error.h"

namespace can {

namespace {

// float32 matmuls and convolutions on CUDA may use TF32 tensor cores (10-bit
// mantissa inputs, float32 accumulation): several times faster on Ampere and
// later, and well inside what training and sampling need. Parity checks that
// compare float32 CUDA logits with the CPU turn it off again.
c10::Device allow_tf32(c10::Device device) {
  at::globalContext().setAllowTF32CuBLAS(true);
  at::globalContext().setAllowTF32CuDNN(true);
  return device;
}

// A "<key>:   <n> kB" line of /proc/self/status in bytes; -1 when absent.
int64_t proc_status_bytes(const std::string& key) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  }
  return -1;
}

}  // namespace

c10::Device select_device(const std::string& name) {
  if (name == "auto") {
    return torch::cuda::is_available() ? allow_tf32(c10::Device(c10::kCUDA, 0)) : c10::Device(c10::kCPU);
  }
  if (name == "cpu") return c10::Device(c10::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    check(torch::cuda::is_available(), "device '{}' was asked for but CUDA is not available in this build or machine",
          name);
    c10::Device device(c10::kCPU);
    try {
      device = c10::Device(name);
    } catch (const std::exception&) {
      fail("invalid device '{}' (expected auto, cpu, cuda or cuda:N)", name);
    }
    return allow_tf32(device);
  }
  fail("invalid device '{}' (expected auto, cpu, cuda or cuda:N)", name);
}

void configure_threads(int threads) {
  if (threads <= 0) {
    // OMP_NUM_THREADS, when set, wins: several processes sharing the cores (the
    // test suite runs two at a time) must not each spin one thread per core.
    const char* from_environment = std::getenv("OMP_NUM_THREADS");
    threads = from_environment != nullptr ? std::atoi(from_environment) : 0;
  }
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads);
}

void set_seed(uint64_t seed) { torch::manual_seed(seed); }

int64_t resident_bytes() { return proc_status_bytes("VmRSS"); }

int64_t peak_resident_bytes() { return proc_status_bytes("VmHWM"); }

bool reset_peak_resident_memory() {
  std::ofstream clear_refs("/proc/self/clear_refs");
  clear_refs << "5";
  clear_refs.flush();
  return static_cast<bool>(clear_refs);
}

}  // namespace can
