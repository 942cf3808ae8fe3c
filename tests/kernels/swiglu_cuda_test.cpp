// SwiGLU's CUDA kernels against the CPU kernels (bit for bit: the same element math, swiglu_math.h) and so against
// the ATen reference, forward and backward, contiguous and row-strided. Built only with -DFREEHOLD_CUDA=ON; each
// *_CUDA test skips itself without a GPU.
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/swiglu.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using testing::count_bit_differences;
using testing::seeded_randn;

void expect_same_bits(const at::Tensor& actual, const at::Tensor& expected) {
  ASSERT_EQ(actual.scalar_type(), expected.scalar_type());
  ASSERT_EQ(actual.sizes(), expected.sizes());
  EXPECT_EQ(count_bit_differences(actual.cpu(), expected.cpu()), 0);
}

// The GPU's forward and backward on (CPU) gate, up, dy, each equal in every bit to the CPU kernels'.
void check_against_cpu(const at::Tensor& gate_cpu, const at::Tensor& up_cpu, const at::Tensor& dy_cpu) {
  const at::Tensor gate = gate_cpu.cuda(), up = up_cpu.cuda(), dy = dy_cpu.cuda();
  const at::Tensor expected = swiglu_cpu(gate_cpu, up_cpu);
  const at::Tensor y = swiglu_cuda(gate, up);
  ASSERT_TRUE(y.is_cuda());
  expect_same_bits(y, expected);
  expect_same_bits(swiglu(gate, up), expected);  // the dispatcher picks the CUDA kernel
  const auto [dg_cpu, du_cpu] = swiglu_backward(gate_cpu, up_cpu, dy_cpu);
  const auto [dg, du] = swiglu_backward(gate, up, dy);
  expect_same_bits(dg, dg_cpu);
  expect_same_bits(du, du_cpu);
}

TEST(SwigluCudaTest, MatchesCpuKernelOverOddShapesAndDtypes_CUDA) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (int64_t rows : {1, 7, 129}) {
      for (int64_t I : {1, 7, 129, 4097}) {
        SCOPED_TRACE(::testing::Message() << dtype << " rows " << rows << " I " << I);
        seed += 3;
        check_against_cpu(seeded_randn({rows, I}, dtype, seed) * 3, seeded_randn({rows, I}, dtype, seed + 1),
                          seeded_randn({rows, I}, dtype, seed + 2));
      }
    }
  }
}

TEST(SwigluCudaTest, RowStridedAndCopiedLayouts_CUDA) {
  SKIP_WITHOUT_GPU();
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(::testing::Message() << dtype);
    // A narrow of one (rows, 2I) projection, read in place with row stride 2I; more rows than gridDim.y's 65535.
    const int64_t rows = 70001, I = 129;
    const at::Tensor gate_up = seeded_randn({rows, 2 * I}, dtype, 201) * 3;
    const at::Tensor dy = seeded_randn({rows, I}, dtype, 202);
    check_against_cpu(gate_up.narrow(1, 0, I), gate_up.narrow(1, I, I), dy);
    // A transpose (copied) and an up broadcast over rows (row stride 0).
    check_against_cpu(seeded_randn({129, 7}, dtype, 203).t(), seeded_randn({1, 129}, dtype, 204).expand({7, 129}),
                      seeded_randn({129, 7}, dtype, 205).t());
  }
}

TEST(SwigluCudaTest, GridStrideLoopCoversMoreThanOneGrid_CUDA) {
  // One contiguous row of 2 · 4100 · 2100 = 17.2M elements: more than the 2^16 blocks × 256 threads of one pass.
  SKIP_WITHOUT_GPU();
  const at::Tensor gate = seeded_randn({2, 4100, 2100}, at::kBFloat16, 301) * 3;
  const at::Tensor up = seeded_randn({2, 4100, 2100}, at::kBFloat16, 302);
  expect_same_bits(swiglu_cuda(gate.cuda(), up.cuda()), swiglu_cpu(gate, up));
}

TEST(SwigluCudaTest, GradientsThroughTheNodeMatchCpu_CUDA) {
  SKIP_WITHOUT_GPU();
  const at::Tensor gate0 = seeded_randn({2, 129, 4097}, at::kBFloat16, 401) * 3;
  const at::Tensor up0 = seeded_randn({2, 129, 4097}, at::kBFloat16, 402);
  const at::Tensor dy = seeded_randn({2, 129, 4097}, at::kBFloat16, 403);
  at::Tensor g_cpu = gate0.clone().requires_grad_(), u_cpu = up0.clone().requires_grad_();
  at::Tensor g_gpu = gate0.cuda().requires_grad_(), u_gpu = up0.cuda().requires_grad_();
  swiglu(g_cpu, u_cpu).backward(dy);
  swiglu(g_gpu, u_gpu).backward(dy.cuda());
  expect_same_bits(g_gpu.grad(), g_cpu.grad());
  expect_same_bits(u_gpu.grad(), u_cpu.grad());
}

TEST(SwigluCudaTest, RunsOnTheCurrentStream_CUDA) {
  SKIP_WITHOUT_GPU();
  const at::Tensor gate_cpu = seeded_randn({1031, 4097}, at::kHalf, 501);
  const at::Tensor up_cpu = seeded_randn({1031, 4097}, at::kHalf, 502);
  const at::Tensor gate = gate_cpu.cuda(), up = up_cpu.cuda();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  side.synchronize();
  at::Tensor y;
  {
    const c10::cuda::CUDAStreamGuard on_side(side);
    y = swiglu_cuda(gate, up);
  }
  side.synchronize();
  expect_same_bits(y, swiglu_cpu(gate_cpu, up_cpu));
}

TEST(SwigluCudaTest, EmptyInputsLaunchNothing_CUDA) {
  SKIP_WITHOUT_GPU();
  const at::Tensor empty = at::empty({0, 129}, at::TensorOptions().device(at::kCUDA));
  EXPECT_EQ(swiglu_cuda(empty, empty).sizes(), (std::vector<int64_t>{0, 129}));
  EXPECT_EQ(swiglu_backward(empty, empty, empty).first.sizes(), (std::vector<int64_t>{0, 129}));
}

// Needs no GPU: the binding's device check comes before anything touches CUDA.
TEST(SwigluCudaTest, RejectsCpuTensors) {
  const at::Tensor gate = seeded_randn({3, 7}, at::kFloat, 601);
  try {
    swiglu_cuda(gate, gate);
    ADD_FAILURE() << "did not throw";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("swiglu_cuda: gate must be on cuda, got gate on cpu"));
  }
}

}  // namespace
}  // namespace freehold::kernels
