// RoPE: the CPU kernel against the ATen reference over odd shapes, dtypes, strided inputs and every gradient (x's,
// and the double backward); the in-place rope_; exact cases that pin the rotate_half convention; bad arguments; and
// which path rope() picks. The CUDA kernel's tests are in rope_cuda_test.cpp.
// Tolerance: none. The kernel rounds every product and sum to the dtype as ATen does (rope_math.h), so fp32, bf16
// and fp16 results and gradients are compared bit for bit; RoundingOnceInFp32... shows such a comparison has teeth.
#include "kernels/rope.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/sqrt.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

#include <functional>
#include <string>
#include <vector>

#include "kernels/rms_norm.h"  // set_fused_kernels_enabled
#include "kernels/self_check.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/rope_test_util.h"

namespace freehold::kernels {
namespace {

using testing::count_bit_differences;
using testing::count_not_close;
using testing::expect_same_bits;
using testing::hf_cos_sin;
using testing::seeded_randn;
using testing::transposed_q;

const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kBFloat16, at::kHalf};

// Equal strides in every dimension longer than 1 (a size-1 dimension's stride means nothing).
bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  }
  return a.sizes() == b.sizes();
}

TEST(RopeCpuTest, MatchesReferenceBitForBitOverOddShapesAndDtypes) {
  // D/2 = 1, 7, 129 (odd pair counts) and 4097 (a long row); H = 1 and 7; T = 1, 7, 129.
  uint64_t seed = 1;
  for (at::ScalarType dtype : kDtypes) {
    for (int64_t T : {1, 7, 129}) {
      for (int64_t D : {2, 14, 258}) {
        for (int64_t H : {1, 7}) {
          SCOPED_TRACE(::testing::Message() << dtype << " H " << H << " T " << T << " D " << D);
          const auto [cos, sin] = hf_cos_sin(2, T, D, dtype);
          const at::Tensor x = transposed_q(2, H, T, D, dtype, ++seed);
          const at::Tensor y = rope_cpu(x, cos, sin);
          const at::Tensor ref = rope_reference(x, cos, sin);
          EXPECT_TRUE(same_layout(y, ref)) << y.strides() << " vs " << ref.strides();  // as x, too
          expect_same_bits(y, ref);
          expect_same_bits(rope_cpu(x.contiguous(), cos, sin), ref);
        }
      }
    }
    SCOPED_TRACE(::testing::Message() << dtype << " D 8194");
    const auto [cos, sin] = hf_cos_sin(1, 3, 8194, dtype);
    const at::Tensor x = transposed_q(1, 2, 3, 8194, dtype, ++seed);
    expect_same_bits(rope_cpu(x, cos, sin), rope_reference(x, cos, sin));
  }
}

TEST(RopeCpuTest, RandomCosSinWithUnequalHalvesMatchToo) {
  // The kernel does not assume RotaryEmbedding's equal halves: any cos/sin gives the reference's bits.
  for (at::ScalarType dtype : kDtypes) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const at::Tensor x = transposed_q(3, 5, 7, 14, dtype, 11);
    const at::Tensor cos = seeded_randn({3, 7, 14}, dtype, 12), sin = seeded_randn({3, 7, 14}, dtype, 13);
    expect_same_bits(rope_cpu(x, cos, sin), rope_reference(x, cos, sin));
  }
}

TEST(RopeCpuTest, RoundingOnceInFp32WouldBreakTheBitEquality) {
  // The reference rounds x·cos, rotate_half(x)·sin and their sum to bf16 separately. A kernel computing the whole
  // expression in fp32 and rounding once is within bf16 tolerance but not bit-equal: the bit comparison catches it.
  const auto [cos, sin] = hf_cos_sin(2, 129, 258, at::kBFloat16);
  const at::Tensor x = transposed_q(2, 7, 129, 258, at::kBFloat16, 21);
  const at::Tensor ref = rope_reference(x, cos, sin);
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor rotated32 = at::cat({-x32.narrow(-1, 129, 129), x32.narrow(-1, 0, 129)}, -1);
  const at::Tensor once = (x32 * cos.to(at::kFloat).unsqueeze(1) + rotated32 * sin.to(at::kFloat).unsqueeze(1))
                              .to(at::kBFloat16);
  std::string where;
  EXPECT_EQ(count_not_close(once, ref, 1.6e-2, 1e-2, &where), 0) << where;
  EXPECT_GT(count_bit_differences(once, ref), 0);
  EXPECT_EQ(count_bit_differences(rope_cpu(x, cos, sin), ref), 0);
}

TEST(RopeCpuTest, QuarterTurnIsRotateHalfExactly) {
  // cos = 0, sin = 1 (θ = π/2 for every pair) gives rotate_half(x) = [−x2, x1] in every dtype, exactly; and the
  // pairs are the halves (i, i + D/2), not adjacent elements (2i, 2i + 1).
  for (at::ScalarType dtype : kDtypes) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const at::Tensor x = at::tensor(std::vector<float>{1, 2, 3, 4}).reshape({1, 1, 1, 4}).to(dtype);
    const at::Tensor cos = at::zeros({1, 1, 4}, x.options()), sin = at::ones({1, 1, 4}, x.options());
    const at::Tensor expected = at::tensor(std::vector<float>{-3, -4, 1, 2}).reshape({1, 1, 1, 4}).to(dtype);
    EXPECT_TRUE(at::equal(rope_cpu(x, cos, sin), expected));
    EXPECT_TRUE(at::equal(rope_reference(x, cos, sin), expected));
  }
}

TEST(RopeCpuTest, RotatingBackByMinusThetaRecoversXAndKeepsPairNorms) {
  // A property of a rotation, independent of the reference: |(y_i, y_{i+h})| = |(x_i, x_{i+h})|, and rotating by −θ
  // (sin negated) undoes it, to fp32 rounding.
  const auto [cos, sin] = hf_cos_sin(2, 129, 64, at::kFloat);
  const at::Tensor x = transposed_q(2, 3, 129, 64, at::kFloat, 31);
  const at::Tensor y = rope_cpu(x, cos, sin);
  const auto pair_norms = [](const at::Tensor& t) {
    return (t.narrow(-1, 0, 32).pow(2) + t.narrow(-1, 32, 32).pow(2)).sqrt();
  };
  std::string where;
  EXPECT_EQ(count_not_close(pair_norms(y), pair_norms(x), 1e-5, 1e-6, &where), 0) << where;
  EXPECT_EQ(count_not_close(rope_cpu(y, cos, -sin), x, 1e-5, 1e-6, &where), 0) << where;
  EXPECT_FALSE(at::allclose(y, x));  // positions > 0 do rotate
}

TEST(RopeCpuTest, ReadsStridedInputsInPlaceAndCopiesOnlyAStridedD) {
  const int64_t B = 2, H = 3, T = 7, D = 14;
  for (at::ScalarType dtype : kDtypes) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const auto [cos, sin] = hf_cos_sin(B, T, D, dtype);
    const std::vector<at::Tensor> xs = {
        transposed_q(B, H, T, D, dtype, 41),                                      // the model's q.transpose(1, 2)
        seeded_randn({B, H, T, 2 * D}, dtype, 42).slice(3, 0, 2 * D, 2),           // D with stride 2
        seeded_randn({B, H, 2 * T, D}, dtype, 43).slice(2, 1, 2 * T, 2),           // every other position
        seeded_randn({D, T, H, B}, dtype, 44).permute({3, 2, 1, 0}),               // everything reversed
        seeded_randn({1, H, T, D}, dtype, 45).expand({B, H, T, D}),                // overlapping (read only)
    };
    for (const at::Tensor& x : xs) {
      ASSERT_FALSE(x.is_contiguous());
      expect_same_bits(rope_cpu(x, cos, sin), rope_reference(x, cos, sin));
    }
    const at::Tensor x = xs[0];
    // cos/sin broadcast over B, transposed, or with strides that differ from each other.
    const at::Tensor cos1 = cos.narrow(0, 0, 1), sin1 = sin.narrow(0, 0, 1);
    expect_same_bits(rope_cpu(x, cos1, sin1), rope_reference(x, cos1, sin1));
    const at::Tensor cos_t = cos.transpose(1, 2).contiguous().transpose(1, 2);
    expect_same_bits(rope_cpu(x, cos_t, sin), rope_reference(x, cos_t, sin));
    const at::Tensor sin_d = at::cat({sin, sin}, -1).slice(2, 0, 2 * D, 2);
    expect_same_bits(rope_cpu(x, cos, sin_d), rope_reference(x, cos, sin_d));
  }
}

TEST(RopeCpuTest, EmptyTensorsGiveEmptyResults) {
  const auto [cos, sin] = hf_cos_sin(2, 7, 14, at::kFloat);
  EXPECT_EQ(rope_cpu(at::empty({2, 0, 7, 14}), cos, sin).sizes(), (std::vector<int64_t>{2, 0, 7, 14}));
  EXPECT_EQ(rope_cpu(at::empty({2, 3, 0, 14}), cos.narrow(1, 0, 0), sin.narrow(1, 0, 0)).sizes(),
            (std::vector<int64_t>{2, 3, 0, 14}));
  EXPECT_EQ(rope_cpu(at::empty({2, 3, 7, 0}), cos.narrow(2, 0, 0), sin.narrow(2, 0, 0)).sizes(),
            (std::vector<int64_t>{2, 3, 7, 0}));
}

// ─── gradients ──────────────────────────────────────────────────────────────────────────────────────────────────

bool made_by_fused_node(const at::Tensor& y) {
  return y.grad_fn() != nullptr && y.grad_fn()->name().find("RopeFunction") != std::string::npos;
}

TEST(RopeBackwardTest, GradientOfXMatchesReferenceBitForBit) {
  uint64_t seed = 100;
  for (at::ScalarType dtype : kDtypes) {
    for (int64_t T : {1, 7, 129}) {
      for (int64_t D : {2, 14, 258}) {
        SCOPED_TRACE(::testing::Message() << dtype << " T " << T << " D " << D);
        const auto [cos, sin] = hf_cos_sin(2, T, D, dtype);
        const at::Tensor x0 = transposed_q(2, 7, T, D, dtype, ++seed);
        const at::Tensor dy = transposed_q(2, 7, T, D, dtype, ++seed);  // strided, as SDPA's gradients can be
        at::Tensor x = x0.detach().clone().requires_grad_(), x_ref = x0.detach().clone().requires_grad_();
        const at::Tensor y = rope(x, cos, sin);
        ASSERT_TRUE(made_by_fused_node(y));
        y.backward(dy);
        rope_reference(x_ref, cos, sin).backward(dy);
        expect_same_bits(y.detach(), rope_reference(x0, cos, sin));
        expect_same_bits(x.grad(), x_ref.grad());
        expect_same_bits(rope_backward(dy, cos, sin), x_ref.grad());
      }
    }
    SCOPED_TRACE(::testing::Message() << dtype << " D 8194");
    const auto [cos, sin] = hf_cos_sin(1, 3, 8194, dtype);
    const at::Tensor dy = transposed_q(1, 2, 3, 8194, dtype, ++seed);
    at::Tensor x = transposed_q(1, 2, 3, 8194, dtype, ++seed).detach().requires_grad_();
    rope_reference(x, cos, sin).backward(dy);
    expect_same_bits(rope_backward(dy, cos, sin), x.grad());
  }
}

TEST(RopeBackwardTest, BackwardIsTheRotationByMinusTheta) {
  // With RotaryEmbedding's cos/sin (equal halves) the transpose is rope with −sin, bit for bit.
  for (at::ScalarType dtype : kDtypes) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const auto [cos, sin] = hf_cos_sin(2, 129, 258, dtype);
    const at::Tensor dy = transposed_q(2, 3, 129, 258, dtype, 201);
    expect_same_bits(rope_backward(dy, cos, sin), rope_reference(dy, cos, -sin));
  }
}

TEST(RopeBackwardTest, UnequalHalvesGetTheTrueTranspose) {
  // For arbitrary cos/sin the gradient is not a rotation by −sin; the kernel still gives autograd's.
  for (at::ScalarType dtype : kDtypes) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const at::Tensor cos = seeded_randn({1, 7, 14}, dtype, 211), sin = seeded_randn({1, 7, 14}, dtype, 212);
    const at::Tensor dy = seeded_randn({2, 3, 7, 14}, dtype, 213);
    at::Tensor x = seeded_randn({2, 3, 7, 14}, dtype, 214).requires_grad_();
    rope_reference(x, cos, sin).backward(dy);
    expect_same_bits(rope_backward(dy, cos, sin), x.grad());
    EXPECT_GT(count_bit_differences(rope_reference(dy, cos, -sin), x.grad()), 0);
  }
}

TEST(RopeBackwardTest, DoubleBackwardMatchesReference) {
  // g = ∂(y · w)/∂x = Rᵀw keeps a graph in w (create_graph); ∂(g · u)/∂w = R u.
  const auto [cos, sin] = hf_cos_sin(2, 7, 14, at::kFloat);
  const at::Tensor x0 = transposed_q(2, 3, 7, 14, at::kFloat, 221);
  const at::Tensor w0 = seeded_randn({2, 3, 7, 14}, at::kFloat, 222), u = seeded_randn({2, 3, 7, 14}, at::kFloat, 223);
  std::vector<at::Tensor> grads;
  for (bool fused : {true, false}) {
    at::Tensor x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_();
    const at::Tensor y = fused ? rope(x, cos, sin) : rope_reference(x, cos, sin);
    const at::Tensor g = torch::autograd::grad({(y * w).sum()}, {x}, {}, /*retain_graph=*/true,
                                               /*create_graph=*/true)[0];
    (g * u).sum().backward();
    grads.push_back(g.detach());
    grads.push_back(w.grad());
  }
  expect_same_bits(grads[0], grads[2]);
  expect_same_bits(grads[1], grads[3]);
  expect_same_bits(grads[1], rope_reference(u, cos, sin));
}

TEST(RopeBackwardTest, NodeDoesNotKeepX) {
  // The node saves cos and sin only: changing x in place after the forward leaves the backward valid (a saved x
  // would make autograd refuse: "modified by an inplace operation").
  const auto [cos, sin] = hf_cos_sin(2, 7, 14, at::kFloat);
  const at::Tensor leaf = transposed_q(2, 3, 7, 14, at::kFloat, 231).detach().requires_grad_();
  const at::Tensor x = leaf * 2;  // a non-leaf, as the projection's output is
  const at::Tensor y = rope(x, cos, sin);
  ASSERT_TRUE(made_by_fused_node(y));
  {
    const at::NoGradGuard no_grad;
    x.mul_(3);
  }
  const at::Tensor dy = seeded_randn({2, 3, 7, 14}, at::kFloat, 232);
  y.backward(dy);
  expect_same_bits(leaf.grad(), rope_reference(dy, cos, -sin) * 2);
}

// ─── in place ───────────────────────────────────────────────────────────────────────────────────────────────────

TEST(RopeInPlaceTest, RotatesInPlaceWithTheReferenceBits) {
  for (at::ScalarType dtype : kDtypes) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const auto [cos, sin] = hf_cos_sin(2, 129, 258, dtype);
    const std::vector<at::Tensor> xs = {transposed_q(2, 3, 129, 258, dtype, 301),
                                        seeded_randn({2, 3, 129, 516}, dtype, 302).slice(3, 0, 516, 2)};
    for (const at::Tensor& x : xs) {
      const at::Tensor expected = rope_reference(x, cos, sin);
      const void* data = x.data_ptr();
      const auto version = x._version();
      const at::Tensor& out = rope_(x, cos, sin);
      EXPECT_EQ(out.data_ptr(), data);
      EXPECT_GT(x._version(), version);
      expect_same_bits(x, expected);
    }
  }
}

TEST(RopeInPlaceTest, ReferencePathAndMixedDtypesCopyBack) {
  const auto [cos, sin] = hf_cos_sin(2, 7, 14, at::kFloat);
  const at::Tensor x = transposed_q(2, 3, 7, 14, at::kBFloat16, 311);
  const at::Tensor expected = rope_reference(x, cos, sin).to(at::kBFloat16);  // promoted to fp32, rounded back
  rope_(x, cos, sin);
  expect_same_bits(x, expected);

  set_fused_kernels_enabled(false);
  const auto [cos16, sin16] = hf_cos_sin(2, 7, 14, at::kBFloat16);
  const at::Tensor y = transposed_q(2, 3, 7, 14, at::kBFloat16, 312);
  const at::Tensor expected16 = rope_reference(y, cos16, sin16);
  rope_(y, cos16, sin16);
  set_fused_kernels_enabled(true);
  expect_same_bits(y, expected16);
}

void expect_throws_mentioning(const std::function<void()>& call, const std::vector<std::string>& parts) {
  try {
    call();
    ADD_FAILURE() << "did not throw";
  } catch (const c10::Error& e) {
    for (const std::string& part : parts) EXPECT_THAT(e.what(), ::testing::HasSubstr(part));
  }
}

TEST(RopeInPlaceTest, RefusesXThatNeedsAGradientOrOverlaps) {
  const auto [cos, sin] = hf_cos_sin(2, 7, 14, at::kFloat);
  const at::Tensor x = transposed_q(2, 3, 7, 14, at::kFloat, 321).requires_grad_();
  expect_throws_mentioning([&] { rope_(x, cos, sin); }, {"rope_", "in place", "requires_grad", "rope()"});
  const at::Tensor expanded = seeded_randn({1, 3, 7, 14}, at::kFloat, 322).expand({2, 3, 7, 14});
  expect_throws_mentioning([&] { rope_(expanded, cos, sin); }, {"rope_", "overlap", "[2, 3, 7, 14]"});
  const at::NoGradGuard no_grad;
  EXPECT_NO_THROW(rope_(x, cos, sin));
}

// ─── arguments and paths ────────────────────────────────────────────────────────────────────────────────────────

TEST(RopeCpuTest, RejectsBadArgumentsWithTheirValues) {
  const auto [cos, sin] = hf_cos_sin(2, 7, 14, at::kFloat);
  const at::Tensor x = transposed_q(2, 3, 7, 14, at::kFloat, 401);
  expect_throws_mentioning([&] { rope_cpu(x[0], cos, sin); }, {"rope_cpu", "(B, H, T, D)", "[3, 7, 14]"});
  expect_throws_mentioning([&] { rope_cpu(at::zeros({2, 3, 7, 13}), cos.narrow(2, 0, 13), sin.narrow(2, 0, 13)); },
                           {"even", "[2, 3, 7, 13]"});
  expect_throws_mentioning([&] { rope_cpu(x, cos.narrow(1, 0, 6), sin.narrow(1, 0, 6)); },
                           {"(B, T, D) or (1, T, D)", "(2 or 1, 7, 14)", "[2, 6, 14]"});
  expect_throws_mentioning([&] { rope_cpu(x, cos, sin.narrow(0, 0, 1)); }, {"one shape", "[2, 7, 14]", "[1, 7, 14]"});
  expect_throws_mentioning([&] { rope_cpu(x.to(at::kInt), cos, sin); }, {"floating point", "Int"});
  expect_throws_mentioning([&] { rope_cpu(x, cos.to(at::kBFloat16), sin); },
                           {"one dtype", "cos BFloat16", "rope() handles mixed dtypes"});
  expect_throws_mentioning([&] { rope_cpu(x.to(at::kDouble), cos.to(at::kDouble), sin.to(at::kDouble)); },
                           {"Float, BFloat16 and Half", "Double"});
  expect_throws_mentioning([&] { rope_cpu(x, cos.to(at::kMeta), sin); }, {"x is on cpu, cos on meta"});
  expect_throws_mentioning([&] { rope_cpu(x.to(at::kMeta), cos.to(at::kMeta), sin.to(at::kMeta)); },
                           {"rope_cpu: x must be on cpu", "meta"});
  expect_throws_mentioning([&] { rope_reference(x, cos.narrow(2, 0, 12), sin.narrow(2, 0, 12)); },
                           {"rope_reference", "[2, 7, 12]"});
  expect_throws_mentioning([&] { rope(x, cos, sin.narrow(1, 0, 1)); }, {"rope:", "one shape"});
  const at::Tensor needs = x.detach().requires_grad_();
  expect_throws_mentioning([&] { rope_cpu(needs, cos, sin); }, {"forward-only", "x (requires_grad=true)"});
  const at::NoGradGuard no_grad;
  EXPECT_NO_THROW(rope_cpu(needs, cos, sin));
}

TEST(RopeTest, PicksTheFusedKernelOrTheReference) {
  const auto [cos, sin] = hf_cos_sin(2, 7, 14, at::kFloat);
  const at::Tensor x0 = transposed_q(2, 3, 7, 14, at::kFloat, 501);
  at::Tensor x = x0.clone().requires_grad_();
  EXPECT_TRUE(made_by_fused_node(rope(x, cos, sin)));
  // Without a gradient: the kernel, no node.
  EXPECT_EQ(rope(x0, cos, sin).grad_fn(), nullptr);
  // Off, mixed dtypes, or a gradient for sin: the reference (its graph ends in an add).
  set_fused_kernels_enabled(false);
  const at::Tensor off = rope(x, cos, sin);
  set_fused_kernels_enabled(true);
  EXPECT_FALSE(made_by_fused_node(off));
  ASSERT_NE(off.grad_fn(), nullptr);
  const at::Tensor mixed = rope(x, cos.to(at::kBFloat16), sin.to(at::kBFloat16));
  EXPECT_FALSE(made_by_fused_node(mixed));
  EXPECT_EQ(mixed.scalar_type(), at::kFloat);
  at::Tensor sin_param = sin.clone().requires_grad_();
  const at::Tensor y = rope(x0, cos, sin_param);
  EXPECT_FALSE(made_by_fused_node(y));
  y.sum().backward();
  EXPECT_TRUE(sin_param.grad().defined());
}

TEST(RopeTest, SelfCheckCoversRopeAndNamesAForcedMismatch) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const SelfCheckReport report = run_kernel_self_check(at::Device(at::kCPU), dtype);
    EXPECT_TRUE(report.passed()) << dtype << ": " << ::testing::PrintToString(report.failures);
  }
  EXPECT_THAT(run_kernel_self_check(at::Device(at::kCPU), at::kFloat, "rope").failures,
              ::testing::ElementsAre(::testing::HasSubstr("rope: max |fused - reference|")));
  EXPECT_THAT(run_kernel_self_check(at::Device(at::kCPU), at::kBFloat16, "rope_backward").failures,
              ::testing::ElementsAre(::testing::HasSubstr("rope dx: max |fused - reference|")));
}

}  // namespace
}  // namespace freehold::kernels
