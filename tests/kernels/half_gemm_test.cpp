// kernels/half_gemm.h: the float path computes the 16-bit GEMM's value (one rounding of an fp32-accumulated sum, as
// the native path), the native path is at::linear / at::matmul bit for bit, and the choice obeys its rules
// (environment, small row counts, fused kernels off, fp32 and non-CPU tensors).
#include "kernels/half_gemm.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "tests/kernels/kernel_test_util.h"
#include "kernels/cpu_gemm.h"
#include "kernels/rms_norm.h"

namespace freehold::kernels {
namespace {

using testing::count_bit_differences;
using testing::count_not_close;
using testing::seeded_randn;

class HalfGemmTest : public ::testing::Test {
 protected:
  void TearDown() override {
    unsetenv("FREEHOLD_HALF_GEMM");
    reset_half_gemm_paths_for_testing();
    reset_cpu_gemm_path_for_testing();
    set_fused_kernels_enabled(true);
  }
};

// |error| of a 16-bit result against the exact (fp64) product: one rounding of the result (2^-8 relative for bf16,
// 2^-11 for fp16) plus fp32 accumulation noise; both paths must meet it.
void expect_rounded_product(const at::Tensor& got, const at::Tensor& exact, at::ScalarType dtype, const char* what) {
  const double rtol = dtype == at::kBFloat16 ? 1.0 / 256 : 1.0 / 2048;
  std::string where;
  EXPECT_EQ(count_not_close(got, exact, rtol, 1e-4, &where), 0) << what << ": " << where;
}

TEST_F(HalfGemmTest, FloatPathIsTheRoundedProductForOddShapes) {
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    set_half_gemm_path(dtype, HalfGemmPath::kFloat);
    for (int64_t rows : {32, 129, 4097}) {
      for (int64_t in : {7, 129}) {
        const int64_t out = 33;
        const at::Tensor x = seeded_randn({rows, in}, dtype, 1), w = seeded_randn({out, in}, dtype, 2);
        const at::Tensor b = seeded_randn({out}, dtype, 3), dy = seeded_randn({rows, out}, dtype, 4);
        const at::Tensor y = frozen_linear(x, w, b);
        EXPECT_EQ(y.scalar_type(), dtype);
        EXPECT_EQ(y.sizes(), (at::IntArrayRef{rows, out}));
        expect_rounded_product(y, at::linear(x.to(at::kDouble), w.to(at::kDouble), b.to(at::kDouble)), dtype,
                               "frozen_linear");
        // The native result meets the same bound: the two differ by summation order only.
        expect_rounded_product(at::linear(x, w, b), at::linear(x.to(at::kDouble), w.to(at::kDouble), b.to(at::kDouble)),
                               dtype, "at::linear");
        const at::Tensor dx = frozen_linear_input_grad(dy, w);
        EXPECT_EQ(dx.sizes(), (at::IntArrayRef{rows, in}));
        expect_rounded_product(dx, at::matmul(dy.to(at::kDouble), w.to(at::kDouble)), dtype,
                               "frozen_linear_input_grad");
      }
    }
  }
}

TEST_F(HalfGemmTest, FloatPathReallyWidens) {
  // The values above cannot tell the paths apart; the bits can: on the float path, frozen_linear is the fp32 GEMM
  // of the widened operands rounded once.
  set_half_gemm_path(at::kBFloat16, HalfGemmPath::kFloat);
  set_cpu_gemm_path(CpuGemmPath::kBlas);  // the fp32 GEMM of the widened operands is at::linear's
  const at::Tensor x = seeded_randn({64, 129}, at::kBFloat16, 5), w = seeded_randn({17, 129}, at::kBFloat16, 6);
  const at::Tensor widened = at::linear(x.to(at::kFloat), w.to(at::kFloat)).to(at::kBFloat16);
  EXPECT_EQ(count_bit_differences(frozen_linear(x, w, at::Tensor()), widened), 0);
  // A caller's own widened x gives the same bits.
  EXPECT_EQ(count_bit_differences(frozen_linear(x, w, at::Tensor(), x.to(at::kFloat)), widened), 0);
}

TEST_F(HalfGemmTest, NativePathIsAtenBitForBit) {
  set_half_gemm_path(at::kBFloat16, HalfGemmPath::kNative);
  const at::Tensor x = seeded_randn({4, 50, 129}, at::kBFloat16, 7), w = seeded_randn({31, 129}, at::kBFloat16, 8);
  const at::Tensor dy = seeded_randn({4, 50, 31}, at::kBFloat16, 9);
  EXPECT_EQ(count_bit_differences(frozen_linear(x, w, at::Tensor()), at::linear(x, w)), 0);
  EXPECT_EQ(count_bit_differences(frozen_linear_input_grad(dy, w), at::matmul(dy, w)), 0);
}

TEST_F(HalfGemmTest, WhenTheFloatPathApplies) {
  set_half_gemm_path(at::kBFloat16, HalfGemmPath::kFloat);
  const at::Tensor w = seeded_randn({16, 64}, at::kBFloat16, 10);
  EXPECT_TRUE(use_float_gemm(seeded_randn({32, 64}, at::kBFloat16, 11), w, 32));
  EXPECT_FALSE(use_float_gemm(seeded_randn({31, 64}, at::kBFloat16, 11), w, 31)) << "generation-sized GEMMs";
  EXPECT_FALSE(use_float_gemm(seeded_randn({32, 64}, at::kFloat, 11), w.to(at::kFloat), 32)) << "fp32";
  EXPECT_FALSE(use_float_gemm(seeded_randn({32, 64}, at::kBFloat16, 11), w.to(at::kFloat), 32)) << "mixed dtypes";
  set_fused_kernels_enabled(false);
  EXPECT_FALSE(use_float_gemm(seeded_randn({32, 64}, at::kBFloat16, 11), w, 32)) << "model.fused_kernels: off";
  // Off, frozen_linear is at::linear exactly, whatever the chosen path.
  const at::Tensor x = seeded_randn({300, 64}, at::kBFloat16, 12);
  EXPECT_EQ(count_bit_differences(frozen_linear(x, w, at::Tensor()), at::linear(x, w)), 0);
  EXPECT_EQ(half_gemm_path(at::kFloat), HalfGemmPath::kNative);
}

TEST_F(HalfGemmTest, EnvironmentChoosesAndBadValuesAreNamed) {
  setenv("FREEHOLD_HALF_GEMM", "float", 1);
  reset_half_gemm_paths_for_testing();
  EXPECT_EQ(half_gemm_path(at::kHalf), HalfGemmPath::kFloat);
  setenv("FREEHOLD_HALF_GEMM", "native", 1);
  reset_half_gemm_paths_for_testing();
  EXPECT_EQ(half_gemm_path(at::kHalf), HalfGemmPath::kNative);
  setenv("FREEHOLD_HALF_GEMM", "fp32", 1);
  reset_half_gemm_paths_for_testing();
  try {
    half_gemm_path(at::kHalf);
    FAIL() << "FREEHOLD_HALF_GEMM=fp32 was accepted";
  } catch (const std::exception& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("FREEHOLD_HALF_GEMM=fp32"), std::string::npos) << message;
    EXPECT_NE(message.find("native"), std::string::npos) << message;
    EXPECT_NE(message.find("float"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace freehold::kernels
