// Dropout's CUDA kernels against the CPU kernels (bit for bit: the same hash, dropout_math.h), and the seed drawn
// from the GPU's generator. Built only with -DFREEHOLD_CUDA=ON; each *_CUDA test skips itself without a GPU.
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/equal.h>
#include <gtest/gtest.h>

#include <cstdint>

#include "kernels/dropout.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using testing::count_bit_differences;
using testing::seeded_randn;

TEST(DropoutKernelTest, MaskOnTheGpuEqualsTheCpu_CUDA) {
  SKIP_WITHOUT_GPU();
  const at::Device gpu(at::kCUDA, 0);
  for (int64_t n : {1, 2, 7, 70001, 1 << 22}) {
    for (double p : {0.05, 0.5}) {
      const at::Tensor got = dropout_mask({n}, 1234, p, gpu);
      ASSERT_TRUE(got.is_cuda());
      EXPECT_TRUE(at::equal(got.cpu(), dropout_mask({n}, 1234, p, at::kCPU))) << "n " << n << ", p " << p;
    }
  }
}

TEST(DropoutKernelTest, ApplyOnTheGpuEqualsTheCpu_CUDA) {
  SKIP_WITHOUT_GPU();
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const at::Tensor x = seeded_randn({33, 577}, dtype, 8);
    const at::Tensor got = dropout_apply(x.cuda(), 99, 0.1);
    ASSERT_TRUE(got.is_cuda());
    EXPECT_EQ(count_bit_differences(got.cpu(), dropout_apply(x, 99, 0.1)), 0) << dtype;
    EXPECT_EQ(count_bit_differences(dropout_reference(x.cuda(), 99, 0.1).cpu(), dropout_apply(x, 99, 0.1)), 0);
  }
}

TEST(DropoutKernelTest, SeedComesFromTheGpuGenerator_CUDA) {
  SKIP_WITHOUT_GPU();
  const at::Device gpu(at::kCUDA, 0);
  at::manual_seed(3);
  const uint64_t a = draw_dropout_seed(gpu), b = draw_dropout_seed(gpu);
  EXPECT_NE(a, b);
  at::manual_seed(3);
  EXPECT_EQ(draw_dropout_seed(gpu), a);
}

}  // namespace
}  // namespace freehold::kernels
