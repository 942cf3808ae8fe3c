// LoRA linear in one autograd node against PEFT's composition (lora_linear_reference): the forward pass bit for
// bit, the gradients of x, lora_A and lora_B, over odd shapes, fp32 and a bf16 base with an fp32 adapter, strided
// inputs, with and without a bias, and with dropout under one seed (one draw each, so the same mask).
#include "kernels/lora_linear_fused.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/equal.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <mutex>
#include <string>
#include <vector>

#include "kernels/cpu_gemm.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using testing::seeded_randn;

struct Grads {
  at::Tensor y, x, A, B;
};

Grads run(bool fused, const at::Tensor& x_in, const at::Tensor& weight, const at::Tensor& bias,
          const at::Tensor& A_in, const at::Tensor& B_in, const at::Tensor& dy, double dropout, uint64_t seed) {
  at::Tensor x = x_in.detach().clone().set_requires_grad(true);
  if (!x_in.is_contiguous()) x = x_in.detach().set_requires_grad(true);  // keep the strides
  at::Tensor A = A_in.detach().clone().set_requires_grad(true), B = B_in.detach().clone().set_requires_grad(true);
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  {
    const std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
  }
  const at::Tensor y = fused ? lora_linear_fused(x, weight, bias, A, B, 2.5, dropout, true)
                             : lora_linear_reference(x, weight, bias, A, B, 2.5, dropout, true);
  y.backward(dy);
  return {y.detach(), x.grad(), A.grad(), B.grad()};
}

// max |a − b| <= rel · max |b|
void expect_close(const at::Tensor& a, const at::Tensor& b, double rel, const char* what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_EQ(a.scalar_type(), b.scalar_type()) << what;
  const double scale = b.to(at::kDouble).abs().max().item<double>();
  const double diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  EXPECT_LE(diff, rel * scale) << what << ": max difference " << diff << ", largest element " << scale;
}

// The reference computes the base GEMM with at::linear (BLAS); the fused node with kernels/cpu_gemm.h's library. On
// BLAS the forward pass is the reference's bit for bit; on oneDNN an fp32 base GEMM sums in another order.
void check_path(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& A,
                const at::Tensor& B, const at::Tensor& dy, double dropout, uint64_t seed) {
  const at::ScalarType base = x.scalar_type();
  const Grads ref = run(false, x, weight, bias, A, B, dy, dropout, seed + 5);
  const Grads got = run(true, x, weight, bias, A, B, dy, dropout, seed + 5);
  if (cpu_gemm_path() == CpuGemmPath::kBlas || base != at::kFloat) {
    EXPECT_TRUE(at::equal(got.y, ref.y)) << "forward differs";
  } else {
    expect_close(got.y, ref.y, 1e-5, "forward");
  }
  // fp32: the same GEMMs, summed in another grouping. bf16 base: d x adds its two parts in bf16, as autograd does,
  // in possibly another order: one bf16 rounding.
  const double rel = base == at::kFloat ? 1e-5 : 1e-2;
  expect_close(got.x, ref.x, rel, "d x");
  expect_close(got.A, ref.A, 1e-5, "d lora_A");
  expect_close(got.B, ref.B, 1e-5, "d lora_B");
}

void check(const at::Tensor& x, at::ScalarType adapter_dtype, int64_t out, int64_t r, bool with_bias, double dropout,
           uint64_t seed) {
  const at::ScalarType base = x.scalar_type();
  const int64_t in = x.size(-1);
  const at::Tensor weight = seeded_randn({out, in}, base, seed);
  const at::Tensor bias = with_bias ? seeded_randn({out}, base, seed + 1) : at::Tensor();
  const at::Tensor A = seeded_randn({r, in}, adapter_dtype, seed + 2) * 0.3;
  const at::Tensor B = seeded_randn({out, r}, adapter_dtype, seed + 3) * 0.3;
  std::vector<int64_t> y_shape(x.sizes().begin(), x.sizes().end());
  y_shape.back() = out;
  const at::Tensor dy = seeded_randn(y_shape, base, seed + 4);
  for (CpuGemmPath path : {CpuGemmPath::kBlas, CpuGemmPath::kOneDnn}) {
    SCOPED_TRACE(::testing::Message() << "fp32 GEMMs " << cpu_gemm_path_name(path));
    set_cpu_gemm_path(path);
    check_path(x, weight, bias, A, B, dy, dropout, seed);
  }
  reset_cpu_gemm_path_for_testing();
}

TEST(LoraLinearFusedTest, MatchesReferenceOverOddShapes) {
  uint64_t seed = 1;
  for (at::ScalarType base : {at::kFloat, at::kBFloat16}) {
    for (int64_t N : {1, 7, 129}) {
      for (int64_t in : {7, 129}) {
        for (int64_t r : {1, 4}) {
          for (bool bias : {false, true}) {
            SCOPED_TRACE(::testing::Message() << base << " N " << N << " in " << in << " r " << r << " bias " << bias);
            seed += 10;
            check(seeded_randn({N, in}, base, seed), at::kFloat, 33, r, bias, 0.0, seed);
          }
        }
      }
    }
  }
}

TEST(LoraLinearFusedTest, DropoutUsesTheReferenceMask) {
  for (at::ScalarType base : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(::testing::Message() << base);
    check(seeded_randn({2, 9, 65}, base, 50), at::kFloat, 31, 8, true, 0.1, 51);
    check(seeded_randn({3, 5, 17}, base, 52), at::kFloat, 7, 2, false, 0.5, 53);
  }
}

TEST(LoraLinearFusedTest, NonContiguousInput) {
  const at::Tensor x = seeded_randn({40, 3, 24}, at::kFloat, 60).transpose(0, 1);  // (3, 40, 24), strided
  ASSERT_FALSE(x.is_contiguous());
  check(x, at::kFloat, 19, 4, true, 0.0, 61);
  check(x, at::kFloat, 19, 4, true, 0.2, 62);
}

TEST(LoraLinearFusedTest, NoGradientForAnInputThatNeedsNone) {
  // The first layer's input comes from the frozen embedding: no d x is computed or returned.
  const at::Tensor x = seeded_randn({5, 12}, at::kFloat, 70);
  const at::Tensor weight = seeded_randn({6, 12}, at::kFloat, 71);
  at::Tensor A = seeded_randn({2, 12}, at::kFloat, 72).set_requires_grad(true);
  at::Tensor B = seeded_randn({6, 2}, at::kFloat, 73).set_requires_grad(true);
  lora_linear_fused(x, weight, at::Tensor(), A, B, 1.0, 0.0, true).sum().backward();
  EXPECT_FALSE(x.grad().defined());
  EXPECT_TRUE(A.grad().defined());
  EXPECT_TRUE(B.grad().defined());
}

TEST(LoraLinearFusedTest, BadArgumentsNameTheShapes) {
  const at::Tensor x = seeded_randn({5, 12}, at::kFloat, 80);
  const at::Tensor weight = seeded_randn({6, 12}, at::kFloat, 81);
  const at::Tensor A = seeded_randn({2, 12}, at::kFloat, 82), B = seeded_randn({6, 2}, at::kFloat, 83);
  try {
    (void)lora_linear_fused(x, weight, at::Tensor(), A, B.t(), 1.0, 0.0, true);
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), ::testing::HasSubstr("lora_B must be (6, 2), got [2, 6]"));
  }
  try {
    (void)lora_linear_fused(x, weight, at::Tensor(), A, B, 1.0, 1.0, true);
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), ::testing::HasSubstr("lora_linear_fused: dropout must be a probability in [0, 1), got 1"));
  }
}

}  // namespace
}  // namespace freehold::kernels
