// A job on a GPU: one rank joins with NCCL (the build's USE_C10D_NCCL) and the
// collectives carry CUDA tensors through NCCL and CPU tensors through Gloo, as
// can-train's jobs on GPUs do. Skips on a machine without CUDA.
#include <gtest/gtest.h>
#include <torch/torch.h>


#include <string>
#include <vector>

#include "can/distributed.h"
#include "free_port.h"

namespace {

using can::testing::free_port;

TEST(GpuDistributed, OneRankJobCarriesCudaTensorsOverNcclAndCpuTensorsOverGloo) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "CUDA is not available: run on a GPU machine";
  can::LaunchEnvironment launch;
  launch.master_addr = "127.0.0.1";
  launch.master_port = free_port();
  const can::ProcessGroup group = can::ProcessGroup::join(launch, std::chrono::seconds(60), /*gpus=*/true);
  const at::Tensor on_gpu = torch::arange(6, torch::dtype(torch::kFloat).device(torch::kCUDA)).reshape({2, 3});
  const at::Tensor on_cpu = torch::full({4}, 2.5, torch::kDouble);
  group.all_reduce_sum({on_gpu, on_cpu});  // one bucket per device
  EXPECT_TRUE(torch::equal(on_gpu.cpu(), torch::arange(6, torch::kFloat).reshape({2, 3})));
  EXPECT_TRUE(torch::equal(on_cpu, torch::full({4}, 2.5, torch::kDouble)));
  group.broadcast({on_gpu}, 0);
  group.reduce_sum({on_gpu}, 0);
  EXPECT_TRUE(torch::equal(on_gpu.cpu(), torch::arange(6, torch::kFloat).reshape({2, 3})));
  EXPECT_EQ(group.broadcast_bytes("nccl", 0), "nccl");
  const auto results = can::run_sharded(&group, 3, [](int64_t unit) { return std::vector<double>{unit * 1.5}; });
  EXPECT_EQ(results, (std::vector<std::vector<double>>{{0.0}, {1.5}, {3.0}}));
  group.barrier();
}

}  // namespace
