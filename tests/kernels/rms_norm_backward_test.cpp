// RMSNorm's fused backward (rms_norm_backward, and rms_norm() under autograd) against the gradients of the ATen
// reference, judged by a float64 exact answer: over odd shapes, fp32 and bf16, strided inputs, weight with and
// without requires_grad, and bad arguments.
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/rsqrt.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "kernels/rms_norm.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using testing::seeded_randn;
constexpr double kEps = 1e-6;

struct Grads {
  at::Tensor y, dx, dw;
};

Grads run(bool fused, const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& dy) {
  at::Tensor x = x_in.detach().clone().set_requires_grad(true);
  if (!x_in.is_contiguous()) x = x_in.detach().set_requires_grad(true);
  at::Tensor w = w_in.detach().clone().set_requires_grad(true);
  const at::Tensor y = fused ? rms_norm(x, w, kEps) : rms_norm_reference(x, w, kEps);
  y.backward(dy);
  return {y.detach(), x.grad(), w.grad()};
}

// The same math in float64 from the same rounded inputs (no rounding of the normalized row).
Grads exact(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& dy) {
  at::Tensor x = x_in.detach().to(at::kDouble).set_requires_grad(true);
  at::Tensor w = w_in.detach().to(at::kDouble).set_requires_grad(true);
  const at::Tensor y = w * (x * at::rsqrt(x.pow(2).mean(-1, true) + kEps));
  y.backward(dy.to(at::kDouble));
  return {y.detach(), x.grad(), w.grad()};
}

// The fused value is no further from the exact one than twice the reference's distance, plus a floor of
// 1e-6 (fp32) or 4e-3 (bf16) of the largest exact magnitude.
void expect_as_close(const at::Tensor& fused, const at::Tensor& ref, const at::Tensor& e, at::ScalarType dtype,
                     const char* what) {
  ASSERT_EQ(fused.sizes(), e.sizes()) << what;
  EXPECT_EQ(fused.scalar_type(), ref.scalar_type()) << what;
  const double fe = (fused.to(at::kDouble) - e).abs().max().item<double>();
  const double re = (ref.to(at::kDouble) - e).abs().max().item<double>();
  const double floor = (dtype == at::kFloat ? 1e-6 : 4e-3) * e.abs().max().item<double>();
  EXPECT_LE(fe, 2 * re + floor) << what << ": fused " << fe << " from exact, reference " << re;
}

void check(const at::Tensor& x, const at::Tensor& w, uint64_t seed) {
  const at::Tensor dy = seeded_randn(x.sizes().vec(), x.scalar_type(), seed);
  const Grads f = run(true, x, w, dy), r = run(false, x, w, dy), e = exact(x, w, dy);
  expect_as_close(f.dx, r.dx, e.dx, x.scalar_type(), "dx");
  expect_as_close(f.dw, r.dw, e.dw, x.scalar_type(), "dweight");
}

TEST(RmsNormBackwardTest, MatchesReferenceOverOddShapesAndDtypes) {
  uint64_t seed = 1;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t rows : {1, 7, 129}) {
      for (int64_t C : {7, 64, 4097}) {
        SCOPED_TRACE(::testing::Message() << dtype << " rows " << rows << " C " << C);
        seed += 3;
        const at::Tensor w = (seeded_randn({C}, at::kFloat, seed) * 0.2 + 1).to(dtype);
        check(seeded_randn({rows, C}, dtype, seed + 1), w, seed + 2);
      }
    }
  }
}

TEST(RmsNormBackwardTest, BatchedAndStridedInputs) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const at::Tensor w = (seeded_randn({48}, at::kFloat, 20) * 0.2 + 1).to(dtype);
    check(seeded_randn({3, 70, 48}, dtype, 21), w, 22);  // 210 rows: four row blocks for dweight, the last short
    const at::Tensor strided = seeded_randn({48, 33}, dtype, 23).t();  // (33, 48)
    ASSERT_FALSE(strided.is_contiguous());
    check(strided, w, 24);
  }
}

TEST(RmsNormBackwardTest, FrozenWeightGetsNoGradient) {
  at::Tensor x = seeded_randn({5, 16}, at::kFloat, 30).set_requires_grad(true);
  const at::Tensor w = seeded_randn({16}, at::kFloat, 31);
  rms_norm(x, w, kEps).sum().backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
}

TEST(RmsNormBackwardTest, BadArgumentsNameTheValues) {
  const at::Tensor x = seeded_randn({5, 16}, at::kFloat, 32), w = seeded_randn({16}, at::kFloat, 33);
  try {
    (void)rms_norm_backward(x, w, x.narrow(0, 0, 4), kEps);
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), ::testing::HasSubstr("dy must match x (shape [5, 16]"));
  }
  EXPECT_THROW((void)rms_norm_backward(x, w.to(at::kBFloat16), x, kEps), c10::Error);
}

}  // namespace
}  // namespace freehold::kernels
