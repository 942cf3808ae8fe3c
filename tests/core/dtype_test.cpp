#include "core/dtype.h"

#include <gtest/gtest.h>

namespace freehold::core {
namespace {

TEST(DTypeTest, RoundTripsEverySupportedName) {
  for (DType d : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32, DType::kI16,
                  DType::kI8, DType::kU8, DType::kBool}) {
    auto parsed = parse_dtype(dtype_name(d));
    ASSERT_TRUE(parsed.has_value()) << dtype_name(d);
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(dtype_size(DType::kBF16), 2);
  EXPECT_EQ(dtype_size(DType::kI64), 8);
}

TEST(DTypeTest, NamesAreCaseSensitiveAndFp8IsKnownButUnsupported) {
  EXPECT_FALSE(parse_dtype("f32").has_value());
  EXPECT_FALSE(parse_dtype("F31").has_value());
  EXPECT_FALSE(parse_dtype("F8_E8M0").has_value());
  EXPECT_TRUE(is_known_unsupported_safetensors_dtype("F8_E8M0"));
  EXPECT_FALSE(is_known_unsupported_safetensors_dtype("F31"));
}

}  // namespace
}  // namespace freehold::core
