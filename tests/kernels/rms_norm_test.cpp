// RMSNorm: the CPU kernel against the ATen reference over odd shapes and dtypes, exact cases, strided inputs,
// bad arguments, and which path rms_norm() picks. The CUDA kernel's tests are in rms_norm_cuda_test.cpp.
#include "kernels/rms_norm.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/zeros.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "kernels/rms_norm_math.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/rms_norm_test_util.h"

namespace freehold::kernels {
namespace {

using testing::count_bit_differences;
using testing::count_not_close;
using testing::expect_matches_reference;
using testing::kAtol;
using testing::kEps;
using testing::make_weight;
using testing::mismatch_budget;
using testing::rtol_for;
using testing::seeded_randn;

const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kBFloat16, at::kHalf};

TEST(RmsNormCpuTest, MatchesReferenceOverOddShapesAndDtypes) {
  uint64_t seed = 1;
  for (at::ScalarType dtype : kDtypes) {
    for (int64_t rows : {1, 19, 111}) {
      for (int64_t C : {7, 64, 989, 4096}) {
        SCOPED_TRACE(::testing::Message() << dtype << " rows " << rows << " C " << C);
        const at::Tensor x = seeded_randn({rows, C}, dtype, ++seed);
        const at::Tensor weight = make_weight(C, dtype, ++seed);
        const at::Tensor y = rms_norm_cpu(x, weight, kEps);
        EXPECT_TRUE(y.is_contiguous());
        expect_matches_reference(y, rms_norm_reference(x, weight, kEps));
      }
    }
  }
}

TEST(RmsNormCpuTest, WeightMultiplyBeforeRoundingWouldExceedTheBudget) {
  // transformers rounds the normalized row to bf16 and then multiplies by the weight. A kernel that skipped that
  // rounding (weight * normed in fp32, one rounding at the end) stays inside the bf16 tolerance, so only the
  // bit budget catches it; this checks that it does.
  const at::Tensor x = seeded_randn({111, 989}, at::kBFloat16, 7);
  const at::Tensor weight = make_weight(989, at::kBFloat16, 8);
  const at::Tensor reference = rms_norm_reference(x, weight, kEps);
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor one_rounding =
      (weight.to(at::kFloat) * x32 * at::rsqrt(x32.pow(2).mean(-1, true) + kEps)).to(at::kBFloat16);
  std::string where;
  EXPECT_EQ(count_not_close(one_rounding, reference, rtol_for(at::kBFloat16), kAtol, &where), 0) << where;
  EXPECT_GT(count_bit_differences(one_rounding, reference), mismatch_budget(reference));
  EXPECT_LE(count_bit_differences(rms_norm_cpu(x, weight, kEps), reference), mismatch_budget(reference));
}

TEST(RmsNormCpuTest, ConstantPowerOfTwoRowsGiveTheWeightExactly) {
  // With eps = 0 a row of +-2^k has rms 2^k exactly, so every step is exact and y = sign * weight, bit for bit.
  for (at::ScalarType dtype : kDtypes) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const int64_t C = 37;
    const at::Tensor weight = make_weight(C, dtype, 3);
    at::Tensor x = at::empty({3, C}, at::TensorOptions().dtype(dtype));
    x[0].fill_(1.0);
    x[1].fill_(-8.0);
    x[2].fill_(0.0078125);  // 2^-7
    at::Tensor expected = at::empty({3, C}, at::TensorOptions().dtype(dtype));
    expected[0] = weight;
    expected[1] = -weight;
    expected[2] = weight;
    EXPECT_TRUE(at::equal(rms_norm_cpu(x, weight, 0.0), expected));
    EXPECT_TRUE(at::equal(rms_norm_reference(x, weight, 0.0), expected));
  }
}

TEST(RmsNormCpuTest, ZeroRowsGiveZeroAndEpsIsAdded) {
  // A zero row with eps > 0 is 0 * rsqrt(eps) = 0; eps = 1 on a row of ones gives 1 / sqrt(2).
  const at::Tensor weight = at::ones({5});
  EXPECT_TRUE(at::equal(rms_norm_cpu(at::zeros({2, 5}), weight, kEps), at::zeros({2, 5})));
  const at::Tensor y = rms_norm_cpu(at::ones({1, 5}), weight, 1.0);
  EXPECT_FLOAT_EQ(y[0][3].item<float>(), 1.0f / std::sqrt(2.0f));
}

TEST(RmsNormCpuTest, KeepsLeadingDimensionsAndHandlesEmptyTensors) {
  const at::Tensor x = seeded_randn({2, 3, 64}, at::kBFloat16, 11);
  const at::Tensor weight = make_weight(64, at::kBFloat16, 12);
  const at::Tensor y = rms_norm_cpu(x, weight, kEps);
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_TRUE(at::equal(y.reshape({6, 64}), rms_norm_cpu(x.reshape({6, 64}), weight, kEps)));
  EXPECT_TRUE(at::equal(rms_norm_cpu(x[1][2], weight, kEps), y[1][2]));  // a 1-d x is one row

  EXPECT_EQ(rms_norm_cpu(at::empty({0, 64}, x.options()), weight, kEps).sizes(), (std::vector<int64_t>{0, 64}));
  const at::Tensor no_columns = rms_norm_cpu(at::empty({4, 0}), at::empty({0}), kEps);
  EXPECT_EQ(no_columns.sizes(), (std::vector<int64_t>{4, 0}));
}

TEST(RmsNormCpuTest, CopiesNonContiguousInputsToContiguous) {
  // The binding makes strided x and weight contiguous (one copy) rather than refusing them.
  const int64_t C = 989;
  for (at::ScalarType dtype : kDtypes) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const at::Tensor weight = make_weight(C, dtype, 21);
    const std::vector<at::Tensor> strided_xs = {
        seeded_randn({C, 19}, dtype, 22).t(),                              // (19, C), column-major
        seeded_randn({19, 2 * C}, dtype, 23).slice(/*dim=*/1, 0, 2 * C, 2),  // every other column
        seeded_randn({C, 3, 5}, dtype, 24).permute({2, 1, 0}),              // (5, 3, C)
    };
    for (const at::Tensor& x : strided_xs) {
      ASSERT_FALSE(x.is_contiguous());
      const at::Tensor y = rms_norm_cpu(x, weight, kEps);
      EXPECT_TRUE(y.is_contiguous());
      EXPECT_EQ(y.sizes(), x.sizes());
      EXPECT_TRUE(at::equal(y, rms_norm_cpu(x.contiguous(), weight, kEps)));
      expect_matches_reference(y, rms_norm_reference(x, weight, kEps));
    }
    const at::Tensor strided_weight = make_weight(2 * C, dtype, 25).slice(0, 1, 2 * C, 2);
    ASSERT_FALSE(strided_weight.is_contiguous());
    const at::Tensor x = seeded_randn({19, C}, dtype, 26);
    EXPECT_TRUE(
        at::equal(rms_norm_cpu(x, strided_weight, kEps), rms_norm_cpu(x, strided_weight.contiguous(), kEps)));
  }
}

void expect_throws_mentioning(const std::function<void()>& call, const std::vector<std::string>& parts) {
  try {
    call();
    ADD_FAILURE() << "did not throw";
  } catch (const c10::Error& e) {
    for (const std::string& part : parts) EXPECT_THAT(e.what(), ::testing::HasSubstr(part));
  }
}

TEST(RmsNormCpuTest, RejectsBadArgumentsWithTheirValues) {
  const at::Tensor x = seeded_randn({3, 64}, at::kFloat, 31);
  const at::Tensor weight = make_weight(64, at::kFloat, 32);
  expect_throws_mentioning([&] { rms_norm_cpu(x, make_weight(63, at::kFloat, 1), kEps); },
                           {"rms_norm_cpu", "weight has 63 elements", "last dimension of x is 64", "[3, 64]"});
  expect_throws_mentioning([&] { rms_norm_cpu(x.to(at::kInt), weight, kEps); }, {"floating point", "Int"});
  expect_throws_mentioning([&] { rms_norm_cpu(x, weight.to(at::kLong), kEps); }, {"weight", "Long"});
  expect_throws_mentioning([&] { rms_norm_cpu(x.to(at::kBFloat16), weight, kEps); },
                           {"same dtype", "BFloat16", "Float"});
  expect_throws_mentioning([&] { rms_norm_cpu(x.to(at::kDouble), weight.to(at::kDouble), kEps); },
                           {"Float, BFloat16 and Half", "Double"});
  expect_throws_mentioning([&] { rms_norm_cpu(x, weight.reshape({2, 32}), kEps); }, {"shape (C)", "[2, 32]"});
  expect_throws_mentioning([&] { rms_norm_cpu(x.sum(), weight, kEps); }, {"0-d"});
  expect_throws_mentioning([&] { rms_norm_cpu(x, weight, -1.0); }, {"eps", "-1"});
  expect_throws_mentioning([&] { rms_norm_cpu(x, weight, std::nan("")); }, {"eps", "nan"});
  expect_throws_mentioning([&] { rms_norm_cpu(x.to(at::kMeta), weight.to(at::kMeta), kEps); }, {"cpu", "meta"});
  expect_throws_mentioning([&] { rms_norm_cpu(x, weight.to(at::kMeta), kEps); }, {"x is on cpu", "meta"});
  // The reference and the dispatcher check shapes too: a (1) weight would otherwise broadcast silently.
  expect_throws_mentioning([&] { rms_norm_reference(x, at::ones({1}), kEps); }, {"rms_norm_reference", "1 elements"});
  expect_throws_mentioning([&] { rms_norm(x.to(at::kInt), weight, kEps); }, {"rms_norm", "Int"});
}

TEST(RmsNormCpuTest, RefusesTensorsThatNeedGradients) {
  const at::Tensor x = seeded_randn({3, 64}, at::kFloat, 41).requires_grad_();
  const at::Tensor weight = make_weight(64, at::kFloat, 42);
  expect_throws_mentioning([&] { rms_norm_cpu(x, weight, kEps); }, {"forward-only", "requires_grad=true"});
  const at::NoGradGuard no_grad;
  EXPECT_NO_THROW(rms_norm_cpu(x, weight, kEps));
}

// A case where the CPU kernel and the reference differ in some bits (fp32, long rows), so that equality with one
// of them shows which one rms_norm() ran.
struct PathProbe {
  at::Tensor x = seeded_randn({111, 4096}, at::kFloat, 51);
  at::Tensor weight = make_weight(4096, at::kFloat, 52);
};

TEST(RmsNormTest, RunsTheCpuKernelOnTheCpu) {
  const PathProbe p;
  const at::Tensor fused = rms_norm_cpu(p.x, p.weight, kEps);
  ASSERT_FALSE(at::equal(fused, rms_norm_reference(p.x, p.weight, kEps)));
  EXPECT_TRUE(at::equal(rms_norm(p.x, p.weight, kEps), fused));
}

TEST(RmsNormTest, RunsTheFusedNodeWhenAutogradNeedsAGradient) {
  const PathProbe p;
  const at::Tensor x = p.x.clone().requires_grad_();
  const at::Tensor y = rms_norm(x, p.weight, kEps);
  EXPECT_TRUE(y.requires_grad());
  EXPECT_TRUE(at::equal(y.detach(), rms_norm_cpu(p.x, p.weight, kEps)));  // the kernel, inside an autograd node
  y.sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().sizes(), x.sizes());

  const at::NoGradGuard no_grad;  // nothing needs a gradient: the kernel alone
  EXPECT_TRUE(at::equal(rms_norm(x, p.weight, kEps), rms_norm_cpu(p.x, p.weight, kEps)));
}

TEST(RmsNormTest, RunsTheReferenceWhenFusedKernelsAreDisabled) {
  const PathProbe p;
  set_fused_kernels_enabled(false);
  const at::Tensor x = p.x.clone().requires_grad_();
  const at::Tensor y = rms_norm(x, p.weight, kEps);
  EXPECT_TRUE(at::equal(y.detach(), rms_norm_reference(p.x, p.weight, kEps)));
  {
    const at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(rms_norm(p.x, p.weight, kEps), rms_norm_reference(p.x, p.weight, kEps)));
  }
  set_fused_kernels_enabled(true);
}

TEST(RmsNormTest, RunsTheReferenceForMixedOrOtherDtypes) {
  const at::Tensor x = seeded_randn({19, 64}, at::kBFloat16, 61);
  const at::Tensor weight = make_weight(64, at::kFloat, 62);
  const at::Tensor mixed = rms_norm(x, weight, kEps);
  EXPECT_EQ(mixed.scalar_type(), at::kFloat);  // weight * y.to(bf16) promotes to fp32, as in torch
  EXPECT_TRUE(at::equal(mixed, rms_norm_reference(x, weight, kEps)));
  const at::Tensor x64 = x.to(at::kDouble);
  const at::Tensor w64 = weight.to(at::kDouble);
  EXPECT_TRUE(at::equal(rms_norm(x64, w64, kEps), rms_norm_reference(x64, w64, kEps)));
}

TEST(RmsNormTest, CudaKernelsBuiltFollowsTheBuildOption) {
  EXPECT_EQ(cuda_kernels_built(), FREEHOLD_TEST_CUDA_BUILT != 0);
}

TEST(RmsNormMathTest, CombineLanesEqualsEveryLaneOfTheWarpButterfly) {
  // The GPU's __shfl_xor_sync butterfly, simulated lane by lane, against rms_norm_combine_lanes: every lane must
  // end with the CPU's bits, or the CPU and CUDA kernels would disagree. Magnitudes spread over 2^-20..2^20 make
  // the association order visible (the precondition below).
  at::Tensor values = seeded_randn({kRmsNormLanes}, at::kFloat, 71);
  values = values * at::pow(2.0, seeded_randn({kRmsNormLanes}, at::kFloat, 72).mul(7).round().clamp(-20, 20));
  float lanes[kRmsNormLanes];
  float partial[kRmsNormLanes];
  float sequential = 0.0f;
  for (int i = 0; i < kRmsNormLanes; ++i) {
    lanes[i] = partial[i] = values[i].item<float>();
    sequential += lanes[i];
  }
  for (int offset = kRmsNormLanes / 2; offset > 0; offset /= 2) {
    float next[kRmsNormLanes];
    for (int i = 0; i < kRmsNormLanes; ++i) next[i] = add_rn(lanes[i], lanes[i ^ offset]);
    for (int i = 0; i < kRmsNormLanes; ++i) lanes[i] = next[i];
  }
  const float combined = rms_norm_combine_lanes(partial);
  ASSERT_NE(combined, sequential) << "inputs too tame to tell summation orders apart";
  for (int i = 0; i < kRmsNormLanes; ++i) EXPECT_EQ(lanes[i], combined) << "lane " << i;
}

}  // namespace
}  // namespace freehold::kernels
