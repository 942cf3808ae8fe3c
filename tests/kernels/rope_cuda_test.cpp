// RoPE's CUDA kernel against the CPU kernel (bit for bit: the same pair math) and so against the ATen reference,
// forward, backward and in place, on the strided layout the model passes. Built only with -DFREEHOLD_CUDA=ON; each
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

#include "kernels/rope.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/rope_test_util.h"

namespace freehold::kernels {
namespace {

using testing::expect_same_bits;
using testing::hf_cos_sin;
using testing::seeded_randn;
using testing::transposed_q;

// The GPU's forward, in-place and backward results on x (CPU), each equal in every bit to the CPU kernel's.
void check_against_cpu(const at::Tensor& x_cpu, const at::Tensor& cos_cpu, const at::Tensor& sin_cpu) {
  const at::Tensor x = x_cpu.cuda(), cos = cos_cpu.cuda(), sin = sin_cpu.cuda();
  const at::Tensor expected = rope_cpu(x_cpu, cos_cpu, sin_cpu);
  const at::Tensor y = rope_cuda(x, cos, sin);
  ASSERT_TRUE(y.is_cuda());
  EXPECT_EQ(y.sizes(), x.sizes());
  expect_same_bits(y, expected);
  expect_same_bits(rope(x, cos, sin), expected);  // the dispatcher picks the CUDA kernel
  expect_same_bits(rope_backward(x, cos, sin), rope_backward(x_cpu, cos_cpu, sin_cpu));
  const at::Tensor in_place = x.clone();
  rope_(in_place, cos, sin);
  expect_same_bits(in_place, expected);
}

TEST(RopeCudaTest, MatchesCpuKernelOverOddShapesAndDtypes_CUDA) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (int64_t T : {1, 7, 129}) {
      for (int64_t D : {2, 14, 258}) {  // D/2 = 1, 7, 129: warps that straddle rows
        SCOPED_TRACE(::testing::Message() << dtype << " T " << T << " D " << D);
        const auto [cos, sin] = hf_cos_sin(2, T, D, dtype);
        check_against_cpu(transposed_q(2, 7, T, D, dtype, ++seed), cos, sin);
        check_against_cpu(seeded_randn({2, 7, T, D}, dtype, ++seed), cos, sin);
      }
    }
    SCOPED_TRACE(::testing::Message() << dtype << " D 8194");
    const auto [cos, sin] = hf_cos_sin(1, 3, 8194, dtype);
    check_against_cpu(transposed_q(1, 2, 3, 8194, dtype, ++seed), cos, sin);
  }
}

TEST(RopeCudaTest, StridedAndBroadcastInputs_CUDA) {
  SKIP_WITHOUT_GPU();
  const auto [cos, sin] = hf_cos_sin(2, 7, 14, at::kBFloat16);
  check_against_cpu(seeded_randn({2, 3, 7, 28}, at::kBFloat16, 201).slice(3, 0, 28, 2), cos, sin);  // D stride 2
  check_against_cpu(seeded_randn({14, 7, 3, 2}, at::kBFloat16, 202).permute({3, 2, 1, 0}), cos, sin);
  check_against_cpu(transposed_q(2, 3, 7, 14, at::kBFloat16, 203), cos.narrow(0, 0, 1), sin.narrow(0, 0, 1));
}

TEST(RopeCudaTest, GridStrideLoopCoversMoreThanOneGrid_CUDA) {
  // 2 · 32 · 4100 · 64 = 16.8M pairs, more than the 2^16 blocks × 256 threads of one grid pass.
  SKIP_WITHOUT_GPU();
  const auto [cos, sin] = hf_cos_sin(2, 4100, 128, at::kBFloat16);
  const at::Tensor x = transposed_q(2, 32, 4100, 128, at::kBFloat16, 301);
  expect_same_bits(rope_cuda(x.cuda(), cos.cuda(), sin.cuda()), rope_cpu(x, cos, sin));
}

TEST(RopeCudaTest, GradientMatchesCpu_CUDA) {
  SKIP_WITHOUT_GPU();
  const auto [cos, sin] = hf_cos_sin(2, 129, 258, at::kBFloat16);
  const at::Tensor x0 = transposed_q(2, 3, 129, 258, at::kBFloat16, 401);
  const at::Tensor dy = transposed_q(2, 3, 129, 258, at::kBFloat16, 402);
  at::Tensor x_cpu = x0.clone().requires_grad_(), x_gpu = x0.cuda().requires_grad_();
  rope(x_cpu, cos, sin).backward(dy);
  rope(x_gpu, cos.cuda(), sin.cuda()).backward(dy.cuda());
  expect_same_bits(x_gpu.grad(), x_cpu.grad());
}

TEST(RopeCudaTest, RunsOnTheCurrentStream_CUDA) {
  SKIP_WITHOUT_GPU();
  const auto [cos_cpu, sin_cpu] = hf_cos_sin(2, 1031, 128, at::kHalf);
  const at::Tensor x_cpu = transposed_q(2, 8, 1031, 128, at::kHalf, 501);
  const at::Tensor x = x_cpu.cuda(), cos = cos_cpu.cuda(), sin = sin_cpu.cuda();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  side.synchronize();
  at::Tensor y;
  {
    const c10::cuda::CUDAStreamGuard on_side(side);
    y = rope_cuda(x, cos, sin);
  }
  side.synchronize();
  expect_same_bits(y, rope_cpu(x_cpu, cos_cpu, sin_cpu));
}

TEST(RopeCudaTest, EmptyInputsLaunchNothing_CUDA) {
  SKIP_WITHOUT_GPU();
  const auto [cos, sin] = hf_cos_sin(2, 7, 14, at::kFloat);
  EXPECT_EQ(rope_cuda(at::empty({2, 0, 7, 14}, at::kCUDA), cos.cuda(), sin.cuda()).sizes(),
            (std::vector<int64_t>{2, 0, 7, 14}));
}

// Needs no GPU: the binding's device check comes before anything touches CUDA.
TEST(RopeCudaTest, RejectsCpuTensors) {
  const auto [cos, sin] = hf_cos_sin(2, 7, 14, at::kFloat);
  try {
    rope_cuda(transposed_q(2, 3, 7, 14, at::kFloat, 601), cos, sin);
    ADD_FAILURE() << "did not throw";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("rope_cuda: x must be on cuda, got x on cpu"));
  }
}

}  // namespace
}  // namespace freehold::kernels
