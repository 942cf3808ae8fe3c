// SwiGLU: the CPU kernel against the ATen reference (at::silu(gate) * up) over odd shapes, dtypes and strided
// inputs, forward and both gradients (and the double backward); the double rounding the forward keeps; edge values;
// bad arguments; which path swiglu() picks; the self-check. The CUDA kernel's tests are in swiglu_cuda_test.cpp.
//
// Tolerances: fp32 results are within a few ulp of the reference's (the exp polynomial of swiglu_math.h against
// Sleef's), checked at rtol 1e-6; bf16 and fp16 results are the reference's bits but for at most 1 element in 10^3
// (measured: bf16 none of 1.6M, fp16 about 1 in 10^4), none more than two ulp of T away (rtol_for). Gradients
// add an absolute term relative to their largest element: dg = ds · σ · (1 + g(1 − σ)) cancels near silu's
// minimum (g ≈ −1.28), where a few fp32 ulp of σ are a large relative change of a small dg.
#include "kernels/swiglu.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/masked_select.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "kernels/rms_norm.h"  // set_fused_kernels_enabled
#include "kernels/self_check.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using testing::count_bit_differences;
using testing::count_not_close;
using testing::seeded_randn;

const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kBFloat16, at::kHalf};

// Two ulp of T relative to the value, at most: 2^-6 for bf16 (8 significant bits), 2^-9 for fp16 (11); 1e-6 for
// fp32 (a few ulp there, where the exp polynomials differ). Two, not one: where silu(g) rounds to the neighbour of
// the reference's T(silu(g)), the product with u (|u| > 1) and its own rounding can land two ulp of T away.
double rtol_for(at::ScalarType dtype) {
  return dtype == at::kFloat ? 1e-6 : dtype == at::kBFloat16 ? 1.0 / 64 : 1.0 / 512;
}

// Totals over a test, for the fraction of elements whose bits differ from the reference's.
struct BitTally {
  int64_t different = 0, total = 0;
  void add(const at::Tensor& actual, const at::Tensor& expected) {
    different += count_bit_differences(actual, expected);
    total += expected.numel();
  }
};

// actual against expected: all within rtol_for(dtype) · |expected| + atol_scale · max |expected|; in bf16/fp16 the
// bits are tallied.
void expect_close(const at::Tensor& actual, const at::Tensor& expected, double atol_scale, BitTally* tally) {
  ASSERT_EQ(actual.scalar_type(), expected.scalar_type());
  ASSERT_EQ(actual.sizes(), expected.sizes());
  const double scale = expected.numel() == 0 ? 0 : expected.abs().max().to(at::kDouble).item<double>();
  std::string where;
  EXPECT_EQ(count_not_close(actual, expected, rtol_for(expected.scalar_type()), atol_scale * scale, &where), 0)
      << where;
  if (tally != nullptr && expected.scalar_type() != at::kFloat) tally->add(actual, expected);
}

// The reference's forward and gradients for gate, up, dy.
struct Expected {
  at::Tensor y, d_gate, d_up;
};

Expected reference_with_grads(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& dy) {
  at::Tensor g = gate.detach().clone().requires_grad_(), u = up.detach().clone().requires_grad_();
  const at::Tensor y = swiglu_reference(g, u);
  y.backward(dy);
  return {y.detach(), g.grad(), u.grad()};
}

bool made_by_fused_node(const at::Tensor& y) {
  return y.grad_fn() != nullptr && y.grad_fn()->name().find("SwigluFunction") != std::string::npos;
}

TEST(SwigluCpuTest, ForwardMatchesReferenceOverOddShapesAndDtypes) {
  uint64_t seed = 1;
  for (at::ScalarType dtype : kDtypes) {
    BitTally tally;
    for (int64_t rows : {1, 7, 129}) {
      for (int64_t I : {1, 7, 129, 4097}) {
        SCOPED_TRACE(::testing::Message() << dtype << " rows " << rows << " I " << I);
        const at::Tensor gate = seeded_randn({rows, I}, dtype, ++seed) * 3, up = seeded_randn({rows, I}, dtype, ++seed);
        const at::Tensor y = swiglu_cpu(gate, up);
        EXPECT_TRUE(y.is_contiguous());
        expect_close(y, swiglu_reference(gate, up), 0, &tally);
      }
    }
    SCOPED_TRACE(::testing::Message() << dtype << " (B, T, I) = (2, 129, 4097)");
    const at::Tensor gate = seeded_randn({2, 129, 4097}, dtype, ++seed) * 3;
    const at::Tensor up = seeded_randn({2, 129, 4097}, dtype, ++seed);
    expect_close(swiglu_cpu(gate, up), swiglu_reference(gate, up), 0, &tally);
    if (dtype != at::kFloat) {
      EXPECT_GT(tally.total, 1000000);
      EXPECT_LE(tally.different * 1000, tally.total) << tally.different << " of " << tally.total << " differ";
      std::cout << dtype << " forward: " << tally.different << " of " << tally.total
                << " elements differ from the reference's bits\n";
    }
  }
}

TEST(SwigluCpuTest, KeepsTheReferencesDoubleRounding) {
  // silu(g) rounded to bf16, then the product rounded again, as ATen and transformers compute it. Rounding the fp32
  // product once would be more accurate but move a large share of the elements by an ulp; the fused kernel moves
  // almost none.
  const at::Tensor gate = seeded_randn({129, 4097}, at::kBFloat16, 11) * 3;
  const at::Tensor up = seeded_randn({129, 4097}, at::kBFloat16, 12);
  const at::Tensor reference = swiglu_reference(gate, up);
  const at::Tensor rounded_once = (at::silu(gate.to(at::kFloat)) * up.to(at::kFloat)).to(at::kBFloat16);
  const int64_t n = reference.numel();
  const int64_t once = count_bit_differences(rounded_once, reference);
  const int64_t fused = count_bit_differences(swiglu_cpu(gate, up), reference);
  std::cout << "bf16 rounded once: " << once << " of " << n << " differ; fused: " << fused << "\n";
  EXPECT_GT(once * 10, n);
  EXPECT_LE(fused * 1000, n);
}

TEST(SwigluCpuTest, ReadsRowStridedInputsInPlaceAndCopiesOtherLayouts) {
  // Every layout must give the bits of the contiguous inputs: a narrow of one (rows, 2I) projection (row stride
  // 2I, read in place), an up broadcast over rows (row stride 0), a transpose and a permuted (B, T, I) (copied).
  for (at::ScalarType dtype : kDtypes) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const int64_t rows = 129, I = 129;
    const at::Tensor gate_up = seeded_randn({rows, 2 * I}, dtype, 21) * 3;
    const at::Tensor gate = gate_up.narrow(1, 0, I), up = gate_up.narrow(1, I, I);
    ASSERT_FALSE(gate.is_contiguous());
    EXPECT_TRUE(at::equal(swiglu_cpu(gate, up), swiglu_cpu(gate.contiguous(), up.contiguous())));

    const at::Tensor up_row = seeded_randn({1, I}, dtype, 22).expand({rows, I});
    EXPECT_TRUE(at::equal(swiglu_cpu(gate, up_row), swiglu_cpu(gate.contiguous(), up_row.contiguous())));

    const at::Tensor gate_t = seeded_randn({I, rows}, dtype, 23).t(), up_t = seeded_randn({I, rows}, dtype, 24).t();
    EXPECT_TRUE(at::equal(swiglu_cpu(gate_t, up_t), swiglu_cpu(gate_t.contiguous(), up_t.contiguous())));

    const at::Tensor gate_p = seeded_randn({7, 2, 129}, dtype, 25).permute({1, 0, 2});  // (B, T, I), T outermost
    const at::Tensor up_p = seeded_randn({2, 7, 129}, dtype, 26);
    const at::Tensor y = swiglu_cpu(gate_p, up_p);
    EXPECT_EQ(y.sizes(), gate_p.sizes());
    EXPECT_TRUE(at::equal(y, swiglu_cpu(gate_p.contiguous(), up_p)));
    expect_close(y, swiglu_reference(gate_p, up_p), 0, nullptr);
  }
}

TEST(SwigluCpuTest, EdgeValuesFollowTheReference) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> g_values = {0.0f, -0.0f, 1e-30f, -1e-30f, 1.0f,  -1.0f, -1.28f, 10.0f, -10.0f,
                                       30.0f, -30.0f, 86.0f, -86.0f, 88.0f, 100.0f, -100.0f, 1e4f,  -1e4f,
                                       3e38f, -3e38f, inf,  -inf,  nan};
  std::vector<float> g_data, u_data;
  for (float g : g_values) {
    for (float u : {1.0f, -0.5f, 3.0f}) {
      g_data.push_back(g);
      u_data.push_back(u);
    }
  }
  const int64_t n = static_cast<int64_t>(g_data.size());
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const at::Tensor gate = at::tensor(g_data).to(dtype), up = at::tensor(u_data).to(dtype);
    const at::Tensor y = swiglu_cpu(gate, up), expected = swiglu_reference(gate, up);
    // NaN exactly where the reference has NaN (g = NaN, and −inf · 0 at g = −inf), the rest close.
    EXPECT_TRUE(at::equal(at::isnan(y), at::isnan(expected))) << y << expected;
    const at::Tensor finite = at::where(at::isnan(expected), at::zeros_like(expected), expected);
    const at::Tensor y_finite = at::where(at::isnan(y), at::zeros_like(y), y);
    std::string where;
    EXPECT_EQ(count_not_close(y_finite, finite, rtol_for(dtype), 1e-30, &where), 0) << where;
    // Where exp(−g) vanishes silu(g) is g itself: those products are the reference's bits.
    const at::Tensor large = gate.to(at::kFloat) >= 88.0f;
    EXPECT_TRUE(at::equal(y.masked_select(large), expected.masked_select(large)));
    EXPECT_EQ(y.to(at::kFloat).narrow(0, 0, 6).abs().sum().item<float>(), 0.0f);  // silu(±0) · u = 0

    at::Tensor dy = at::ones({n}, dtype);
    const Expected ref = reference_with_grads(gate, up, dy);
    const auto [d_gate, d_up] = swiglu_backward(gate, up, dy);
    EXPECT_TRUE(at::equal(at::isnan(d_up), at::isnan(ref.d_up)));
    EXPECT_TRUE(at::equal(at::isnan(d_gate), at::isnan(ref.d_gate))) << d_gate << ref.d_gate;
    const at::Tensor both_finite = ~(at::isnan(ref.d_gate) | at::isnan(d_gate));
    EXPECT_EQ(count_not_close(d_gate.masked_select(both_finite), ref.d_gate.masked_select(both_finite),
                              rtol_for(dtype), 1e-6, &where),
              0)
        << where;
  }
}

TEST(SwigluCpuTest, EmptyTensorsGiveEmptyResults) {
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{0, 7}, {3, 0}, {2, 0, 5}}) {
    const at::Tensor gate = at::empty(shape), up = at::empty(shape);
    EXPECT_EQ(swiglu_cpu(gate, up).sizes(), gate.sizes());
    const auto [d_gate, d_up] = swiglu_backward(gate, up, at::empty(shape));
    EXPECT_EQ(d_gate.sizes(), gate.sizes());
    EXPECT_EQ(d_up.sizes(), gate.sizes());
  }
}

// ─── backward ───────────────────────────────────────────────────────────────────────────────────────────────────

TEST(SwigluBackwardTest, GradientsMatchReferenceOverOddShapesAndDtypes) {
  uint64_t seed = 100;
  for (at::ScalarType dtype : kDtypes) {
    BitTally tally;
    for (int64_t rows : {1, 7, 129}) {
      for (int64_t I : {1, 7, 129, 4097}) {
        SCOPED_TRACE(::testing::Message() << dtype << " rows " << rows << " I " << I);
        const at::Tensor gate0 = seeded_randn({rows, I}, dtype, ++seed) * 3;
        const at::Tensor up0 = seeded_randn({rows, I}, dtype, ++seed), dy = seeded_randn({rows, I}, dtype, ++seed);
        const Expected ref = reference_with_grads(gate0, up0, dy);
        at::Tensor gate = gate0.clone().requires_grad_(), up = up0.clone().requires_grad_();
        const at::Tensor y = swiglu(gate, up);
        ASSERT_TRUE(made_by_fused_node(y));
        EXPECT_TRUE(at::equal(y.detach(), swiglu_cpu(gate0, up0)));
        y.backward(dy);
        expect_close(gate.grad(), ref.d_gate, 1e-5, &tally);
        expect_close(up.grad(), ref.d_up, 0, &tally);
        // The node's gradients are swiglu_backward's.
        const auto [d_gate, d_up] = swiglu_backward(gate0, up0, dy);
        EXPECT_TRUE(at::equal(gate.grad(), d_gate));
        EXPECT_TRUE(at::equal(up.grad(), d_up));
      }
    }
    if (dtype != at::kFloat) {
      EXPECT_LE(tally.different * 1000, tally.total) << tally.different << " of " << tally.total << " differ";
      std::cout << dtype << " backward: " << tally.different << " of " << tally.total
                << " gradient elements differ from the reference's bits\n";
    }
  }
}

TEST(SwigluBackwardTest, StridedInputsAndGradientGiveTheContiguousBits) {
  const int64_t rows = 129, I = 129;
  const at::Tensor gate_up = seeded_randn({rows, 2 * I}, at::kBFloat16, 201) * 3;
  const at::Tensor gate = gate_up.narrow(1, 0, I), up = gate_up.narrow(1, I, I);
  const at::Tensor dy_t = seeded_randn({I, rows}, at::kBFloat16, 202).t();
  const auto [dg, du] = swiglu_backward(gate, up, dy_t);
  const auto [dg_c, du_c] = swiglu_backward(gate.contiguous(), up.contiguous(), dy_t.contiguous());
  EXPECT_TRUE(at::equal(dg, dg_c));
  EXPECT_TRUE(at::equal(du, du_c));
  // The gradient of sum() arrives expanded (every stride 0).
  at::Tensor g = gate.clone().requires_grad_(), u = up.clone().requires_grad_();
  swiglu(g, u).sum().backward();
  const auto [dg_ones, du_ones] = swiglu_backward(gate, up, at::ones({rows, I}, at::kBFloat16));
  EXPECT_TRUE(at::equal(g.grad(), dg_ones));
  EXPECT_TRUE(at::equal(u.grad(), du_ones));
}

TEST(SwigluBackwardTest, OnlyTheInputsThatNeedAGradientGetOne) {
  const at::Tensor gate0 = seeded_randn({7, 129}, at::kFloat, 211), up0 = seeded_randn({7, 129}, at::kFloat, 212);
  const at::Tensor dy = seeded_randn({7, 129}, at::kFloat, 213);
  const auto [d_gate, d_up] = swiglu_backward(gate0, up0, dy);
  at::Tensor gate = gate0.clone().requires_grad_();
  swiglu(gate, up0).backward(dy);
  EXPECT_TRUE(at::equal(gate.grad(), d_gate));
  at::Tensor up = up0.clone().requires_grad_();
  swiglu(gate0, up).backward(dy);
  EXPECT_TRUE(at::equal(up.grad(), d_up));
}

TEST(SwigluBackwardTest, DoubleBackwardMatchesReference) {
  // First gradients with create_graph, then the gradient of their weighted sum: the node switches to the
  // reference's formulas in ATen, so the first gradients are the reference's bits, and the second ones are too but
  // for gate's, which sums the same two terms (through d gate and through d up's silu) in another order.
  const at::Tensor gate0 = seeded_randn({7, 129}, at::kFloat, 221) * 3, up0 = seeded_randn({7, 129}, at::kFloat, 222);
  const at::Tensor w = seeded_randn({7, 129}, at::kFloat, 223), v1 = seeded_randn({7, 129}, at::kFloat, 224);
  const at::Tensor v2 = seeded_randn({7, 129}, at::kFloat, 225);
  std::vector<at::Tensor> results;
  for (bool fused : {true, false}) {
    at::Tensor gate = gate0.clone().requires_grad_(), up = up0.clone().requires_grad_();
    const at::Tensor y = fused ? swiglu(gate, up) : swiglu_reference(gate, up);
    EXPECT_EQ(made_by_fused_node(y), fused);
    const std::vector<at::Tensor> first = torch::autograd::grad({(y * w).sum()}, {gate, up}, {},
                                                                /*retain_graph=*/true, /*create_graph=*/true);
    ((first[0] * v1).sum() + (first[1] * v2).sum()).backward();
    results.insert(results.end(), {first[0].detach(), first[1].detach(), gate.grad(), up.grad()});
  }
  EXPECT_TRUE(at::equal(results[0], results[4]));
  EXPECT_TRUE(at::equal(results[1], results[5]));
  std::string where;
  EXPECT_EQ(count_not_close(results[2], results[6], 1e-6, 1e-6, &where), 0) << where;
  EXPECT_TRUE(at::equal(results[3], results[7]));
}

TEST(SwigluBackwardTest, NodeSavesGateAndUpWithTheirVersions) {
  // The node keeps gate and up (not silu(gate)); changing one in place after the forward must be refused, as for
  // the reference, rather than giving a wrong gradient.
  const at::Tensor leaf = seeded_randn({7, 129}, at::kFloat, 231).requires_grad_();
  const at::Tensor gate = leaf * 2, up = leaf * 3;
  const at::Tensor y = swiglu(gate, up);
  ASSERT_TRUE(made_by_fused_node(y));
  {
    const at::NoGradGuard no_grad;
    gate.mul_(3);
  }
  EXPECT_THROW(y.sum().backward(), c10::Error);
}

// ─── arguments and paths ────────────────────────────────────────────────────────────────────────────────────────

void expect_throws_mentioning(const std::function<void()>& call, const std::vector<std::string>& parts) {
  try {
    call();
    ADD_FAILURE() << "did not throw";
  } catch (const c10::Error& e) {
    for (const std::string& part : parts) EXPECT_THAT(e.what(), ::testing::HasSubstr(part));
  }
}

TEST(SwigluCpuTest, RejectsBadArgumentsWithTheirValues) {
  const at::Tensor gate = seeded_randn({3, 7}, at::kFloat, 301), up = seeded_randn({3, 7}, at::kFloat, 302);
  expect_throws_mentioning([&] { swiglu(gate, up.narrow(1, 0, 6)); },
                           {"swiglu: gate and up must have one shape (..., I), got gate [3, 7] and up [3, 6]"});
  expect_throws_mentioning([&] { swiglu_reference(gate.to(at::kInt), up); },
                           {"swiglu_reference: gate and up must be floating point, got Int and Float"});
  expect_throws_mentioning([&] { swiglu_cpu(gate.to(at::kDouble), up.to(at::kDouble)); },
                           {"swiglu_cpu: supports Float, BFloat16 and Half, got Double"});
  expect_throws_mentioning([&] { swiglu_cpu(gate.to(at::kBFloat16), up); },
                           {"swiglu_cpu: gate and up must have one dtype, got gate BFloat16 and up Float"});
  const at::Tensor needs = gate.clone().requires_grad_();
  expect_throws_mentioning([&] { swiglu_cpu(needs, up); },
                           {"swiglu_cpu is forward-only, but gate (requires_grad=true)", "call swiglu()"});
  expect_throws_mentioning([&] { swiglu_backward(gate, up, up.narrow(0, 0, 2)); },
                           {"swiglu_backward: dy must match gate (shape [3, 7], Float, cpu), got shape [2, 7]"});
  expect_throws_mentioning([&] { swiglu_backward(gate, up, at::Tensor()); },
                           {"swiglu_backward: dy must be a defined tensor"});
}

TEST(SwigluTest, PicksTheFusedKernelOrTheReference) {
  const at::Tensor gate0 = seeded_randn({7, 129}, at::kBFloat16, 401), up0 = seeded_randn({7, 129}, at::kBFloat16, 402);
  // No gradient needed: the fused kernel, no node.
  const at::Tensor plain = swiglu(gate0, up0);
  EXPECT_EQ(plain.grad_fn(), nullptr);
  EXPECT_TRUE(at::equal(plain, swiglu_cpu(gate0, up0)));
  {  // Grad mode off with inputs that require grad: fused, no node.
    const at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(swiglu(gate0.clone().requires_grad_(), up0), plain));
  }
  // Fused kernels off: the reference, whose graph is ATen's.
  set_fused_kernels_enabled(false);
  at::Tensor gate = gate0.clone().requires_grad_();
  const at::Tensor off = swiglu(gate, up0);
  set_fused_kernels_enabled(true);
  ASSERT_NE(off.grad_fn(), nullptr);
  EXPECT_THAT(off.grad_fn()->name(), ::testing::HasSubstr("MulBackward"));
  EXPECT_TRUE(at::equal(off, swiglu_reference(gate0, up0)));
  // Mixed dtypes: the reference, promoted as ATen promotes.
  const at::Tensor mixed = swiglu(gate0, up0.to(at::kFloat));
  EXPECT_EQ(mixed.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(mixed, swiglu_reference(gate0, up0.to(at::kFloat))));
  // Double: no fused kernel; the reference.
  const at::Tensor d = swiglu(gate0.to(at::kDouble), up0.to(at::kDouble));
  EXPECT_TRUE(at::equal(d, swiglu_reference(gate0.to(at::kDouble), up0.to(at::kDouble))));
}

TEST(SwigluTest, SelfCheckCoversSwigluAndNamesAForcedMismatch) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const SelfCheckReport report = run_kernel_self_check(at::Device(at::kCPU), dtype);
    EXPECT_TRUE(report.passed()) << dtype << ": " << ::testing::PrintToString(report.failures);
  }
  EXPECT_THAT(run_kernel_self_check(at::Device(at::kCPU), at::kFloat, "swiglu").failures,
              ::testing::ElementsAre(::testing::HasSubstr("swiglu: max |fused - reference|")));
  EXPECT_THAT(run_kernel_self_check(at::Device(at::kCPU), at::kBFloat16, "swiglu_backward").failures,
              ::testing::ElementsAre(::testing::HasSubstr("swiglu d gate: max |fused - reference|")));
}

}  // namespace
}  // namespace freehold::kernels
