// RMSNorm's CUDA kernel against the CPU kernel (bit for bit: same row math, same summation order) and against the
// ATen reference on the GPU. Built only with -DFREEHOLD_CUDA=ON; each *_CUDA test skips itself without a GPU.
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/rms_norm.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/rms_norm_test_util.h"

namespace freehold::kernels {
namespace {

using testing::expect_matches_reference;
using testing::kEps;
using testing::make_weight;
using testing::seeded_randn;

// Empty when this machine has a usable GPU, else why not (the test then skips). A GPU that the CUDA runtime sees
// but ATen does not is a broken build (libtorch_cuda.so not loaded), which fails the test instead.
// y = rms_norm_cuda(x on the GPU) must equal rms_norm_cpu(x) in every bit and be close to the GPU reference.
void check_against_cpu_and_reference(const at::Tensor& x_cpu, const at::Tensor& weight_cpu) {
  const at::Tensor x = x_cpu.cuda();
  const at::Tensor weight = weight_cpu.cuda();
  const at::Tensor y = rms_norm_cuda(x, weight, kEps);
  ASSERT_TRUE(y.is_cuda());
  EXPECT_TRUE(y.is_contiguous());
  EXPECT_EQ(y.sizes(), x.sizes());
  const at::Tensor y_cpu = y.cpu();
  EXPECT_TRUE(at::equal(y_cpu, rms_norm_cpu(x_cpu, weight_cpu, kEps)));
  expect_matches_reference(y_cpu, rms_norm_reference(x, weight, kEps).cpu());
  EXPECT_TRUE(at::equal(rms_norm(x, weight, kEps).cpu(), y_cpu));  // the dispatcher picks the CUDA kernel
}

TEST(RmsNormCudaTest, MatchesCpuKernelAndReferenceOverOddShapesAndDtypes_CUDA) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (int64_t rows : {1, 19, 111}) {  // 19 and 111 leave the last block's warps partly idle
      for (int64_t C : {7, 64, 989, 4096}) {
        SCOPED_TRACE(::testing::Message() << dtype << " rows " << rows << " C " << C);
        seed += 2;
        check_against_cpu_and_reference(seeded_randn({rows, C}, dtype, seed), make_weight(C, dtype, seed + 1));
      }
    }
    SCOPED_TRACE(::testing::Message() << dtype << " many rows");
    seed += 2;
    check_against_cpu_and_reference(seeded_randn({4, 5003, 128}, dtype, seed), make_weight(128, dtype, seed + 1));
  }
}

TEST(RmsNormCudaTest, CopiesNonContiguousInputsToContiguous_CUDA) {
  SKIP_WITHOUT_GPU();
  const int64_t C = 989;
  const at::Tensor weight = make_weight(C, at::kBFloat16, 201).cuda();
  const at::Tensor x = seeded_randn({C, 19}, at::kBFloat16, 202).cuda().t();  // (19, C), column-major
  ASSERT_FALSE(x.is_contiguous());
  const at::Tensor y = rms_norm_cuda(x, weight, kEps);
  EXPECT_TRUE(y.is_contiguous());
  EXPECT_TRUE(at::equal(y.cpu(), rms_norm_cpu(x.cpu(), weight.cpu(), kEps)));
}

TEST(RmsNormCudaTest, RunsOnTheCurrentStream_CUDA) {
  SKIP_WITHOUT_GPU();
  const at::Tensor x_cpu = seeded_randn({111, 4096}, at::kHalf, 301);
  const at::Tensor weight_cpu = make_weight(4096, at::kHalf, 302);
  const at::Tensor x = x_cpu.cuda();
  const at::Tensor weight = weight_cpu.cuda();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  side.synchronize();
  at::Tensor y;
  {
    const c10::cuda::CUDAStreamGuard on_side(side);
    y = rms_norm_cuda(x, weight, kEps);
  }
  side.synchronize();
  EXPECT_TRUE(at::equal(y.cpu(), rms_norm_cpu(x_cpu, weight_cpu, kEps)));
}

TEST(RmsNormCudaTest, EmptyInputsLaunchNothing_CUDA) {
  SKIP_WITHOUT_GPU();
  const at::Tensor weight = make_weight(64, at::kFloat, 401).cuda();
  EXPECT_EQ(rms_norm_cuda(at::empty({0, 64}, weight.options()), weight, kEps).sizes(), (std::vector<int64_t>{0, 64}));
}

TEST(RmsNormCudaTest, RejectsTensorsOnTwoDevices_CUDA) {
  SKIP_WITHOUT_GPU();
  const at::Tensor weight = make_weight(64, at::kFloat, 501);
  try {
    rms_norm_cuda(seeded_randn({3, 64}, at::kFloat, 502).cuda(), weight, kEps);
    ADD_FAILURE() << "did not throw";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("x is on cuda:0 but weight is on cpu"));
  }
}

// Needs no GPU: the binding's device check comes before anything touches CUDA.
TEST(RmsNormCudaTest, RejectsCpuTensors) {
  const at::Tensor weight = make_weight(64, at::kFloat, 601);
  try {
    rms_norm_cuda(seeded_randn({3, 64}, at::kFloat, 602), weight, kEps);
    ADD_FAILURE() << "did not throw";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("rms_norm_cuda: x must be on cuda, got x on cpu"));
  }
}

TEST(RmsNormCudaTest, CudaKernelsAreBuiltAndLibtorchCudaIsLoaded) {
  EXPECT_TRUE(cuda_kernels_built());
  // libtorch_cuda.so registers ATen's CUDA hooks when it is loaded; without them no tensor can live on a GPU.
  EXPECT_TRUE(at::detail::getCUDAHooks().isBuilt()) << "libtorch_cuda.so was not loaded (dropped at link time?)";
}

// The fused backward on the GPU against the CPU's: dx and dweight in every bit (same lane math, same row blocks).
TEST(RmsNormCudaTest, BackwardBitIdenticalToCpu_CUDA) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 500;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (int64_t rows : {1, 7, 129}) {
      for (int64_t C : {7, 64, 4097}) {
        SCOPED_TRACE(::testing::Message() << dtype << " rows " << rows << " C " << C);
        seed += 3;
        const at::Tensor x = seeded_randn({rows, C}, dtype, seed), dy = seeded_randn({rows, C}, dtype, seed + 1);
        const at::Tensor w = make_weight(C, dtype, seed + 2);
        const auto [dx_cpu, dw_cpu] = rms_norm_backward(x, w, dy, kEps);
        const auto [dx_gpu, dw_gpu] = rms_norm_backward(x.cuda(), w.cuda(), dy.cuda(), kEps);
        EXPECT_TRUE(at::equal(dx_gpu.cpu(), dx_cpu));
        EXPECT_TRUE(at::equal(dw_gpu.cpu(), dw_cpu));
      }
    }
  }
}

}  // namespace
}  // namespace freehold::kernels
