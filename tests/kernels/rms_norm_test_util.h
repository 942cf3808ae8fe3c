// What the RMSNorm tests share: how close a fused kernel must be to the reference, and why; seeded weights.
#pragma once

#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels::testing {

constexpr double kEps = 1e-6;

// How far the fused kernels may be from the reference, and why. Both compute the same fp32 formula; they differ only
// in the order in which the sum of squares is added up. Its terms are nonnegative, so either order is within
// (n - 1) * 2^-24 relative of the exact sum, n the longest chain of additions: 128 + 5 for our 32 lanes at
// C = 4096, less for ATen's blocked sum. inv_rms = (sum / C + eps)^-1/2 halves that and adds a few roundings, so
// the two inv_rms differ by d < 1e-5 relative at worst (typically ~1e-7).
//  - fp32 output: rtol 1e-5 bounds the whole difference.
//  - bf16 / fp16: the normalized value is then rounded to 8 / 11 significant bits. A nudge of d flips that
//    rounding for a fraction of about d * 2^8 / d * 2^11 of the elements (typically < 0.05%), by one unit in the
//    last place (relative <= 2^-7 / 2^-10); the weight multiply's rounding can add as much again. Hence rtol 2^-6
//    for bf16 and 2^-9 for fp16. A tolerance that wide would not notice a kernel that rounds at the wrong point
//    (WeightMultiplyBeforeRoundingWouldExceedTheBudget shows it), so the count of elements whose bits differ is
//    bounded too: at most kMismatchPercent of them, twenty times what the typical d gives.
inline double rtol_for(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16:
      return 1.0 / 64;
    case at::kHalf:
      return 1.0 / 512;
    default:
      return 1e-5;
  }
}
constexpr double kAtol = 1e-6;  // only for outputs near zero (fp16 subnormals are 6e-8 apart)
constexpr int64_t kMismatchPercent = 1;

inline int64_t mismatch_budget(const at::Tensor& t) { return t.numel() * kMismatchPercent / 100 + 1; }

inline void expect_matches_reference(const at::Tensor& fused, const at::Tensor& reference) {
  ASSERT_EQ(fused.scalar_type(), reference.scalar_type());
  ASSERT_EQ(fused.sizes(), reference.sizes());
  std::string where;
  EXPECT_EQ(count_not_close(fused, reference, rtol_for(fused.scalar_type()), kAtol, &where), 0) << where;
  if (fused.scalar_type() != at::kFloat) {
    EXPECT_LE(count_bit_differences(fused, reference), mismatch_budget(fused));
  }
}

// Weights around 1 as trained norms have them, with spread so that the weight multiply's rounding matters.
inline at::Tensor make_weight(int64_t C, at::ScalarType dtype, uint64_t seed) {
  return (seeded_randn({C}, at::kFloat, seed) * 0.5 + 1.0).to(dtype);
}

}  // namespace freehold::kernels::testing
