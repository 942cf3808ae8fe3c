#include "kernels/all_finite.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/randn.h>

#include <gtest/gtest.h>

#include <limits>

namespace freehold::kernels {
namespace {

TEST(AllFiniteTest, AgreesWithTheReferenceOnEveryFloatDtypeAndPosition) {
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()};
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf}) {
    for (int64_t n : {int64_t{1}, int64_t{19}, int64_t{111}, int64_t{200003}}) {
      at::Tensor x = (at::randn({n}) * 100).to(dtype);
      EXPECT_TRUE(all_finite(x)) << dtype << " n=" << n;
      for (int64_t at_index : {int64_t{0}, n / 2, n - 1}) {
        for (float special : specials) {
          at::Tensor y = x.clone();
          y[at_index] = special;
          EXPECT_FALSE(all_finite(y)) << dtype << " n=" << n << " at " << at_index << " " << special;
          EXPECT_EQ(all_finite(y), all_finite_reference(y));
        }
      }
    }
  }
}

TEST(AllFiniteTest, ExtremeFiniteValuesAreFinite) {
  // The largest finite values have every exponent bit set but one: they must not be mistaken for Inf.
  at::Tensor h = at::full({3}, 65504.0, at::kHalf);
  at::Tensor b = at::full({3}, 3.3895e38, at::kFloat).to(at::kBFloat16);
  EXPECT_TRUE(all_finite(h));
  EXPECT_TRUE(all_finite(b));
  EXPECT_TRUE(all_finite(at::full({2}, std::numeric_limits<float>::max())));
  EXPECT_TRUE(all_finite(at::full({2}, std::numeric_limits<float>::denorm_min())));
}

TEST(AllFiniteTest, NonContiguousAndIntegerTensors) {
  at::Tensor x = at::randn({8, 6}).t();
  ASSERT_FALSE(x.is_contiguous());
  EXPECT_TRUE(all_finite(x));
  x[2][3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(all_finite(x));
  EXPECT_TRUE(all_finite(at::arange(10)));
}

}  // namespace
}  // namespace freehold::kernels
