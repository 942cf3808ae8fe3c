// kernels/cpu_gemm.h: the oneDNN path computes the fp32 product in fp32 (its error against the fp64 product is an
// fp32 GEMM's, far below a bf16 or tf32 shortcut's), the BLAS path is at::mm bit for bit, both are deterministic,
// transposed operands are read in place, and the choice obeys its rules (environment, dtypes, fused kernels off).
#include "kernels/cpu_gemm.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "kernels/half_gemm.h"
#include "kernels/rms_norm.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using testing::count_bit_differences;
using testing::seeded_randn;

class CpuGemmTest : public ::testing::Test {
 protected:
  void TearDown() override {
    unsetenv("FREEHOLD_FP32_GEMM");
    reset_cpu_gemm_path_for_testing();
    set_fused_kernels_enabled(true);
  }
};

// The oneDNN cases need a CPU whose libtorch oneDNN matmul takes fp32 (AVX-512); elsewhere gemm runs BLAS.
#define USE_ONEDNN_OR_SKIP()                                                                         \
  do {                                                                                               \
    if (!onednn_gemm_available()) GTEST_SKIP() << "this CPU cannot run oneDNN's fp32 matmul (AVX-512)"; \
    ASSERT_EQ(set_cpu_gemm_path(CpuGemmPath::kOneDnn), CpuGemmPath::kOneDnn);                        \
  } while (false)

// max |got − exact| / max |exact|: an fp32 GEMM stays near 1e-7·√K; bf16 operands would give ~4e-3, tf32 ~5e-4.
double relative_error(const at::Tensor& got, const at::Tensor& exact) {
  return ((got.to(at::kDouble) - exact).abs().max() / exact.abs().max()).item<double>();
}

TEST_F(CpuGemmTest, OneDnnIsAnFp32ProductForOddShapesAndLayouts) {
  USE_ONEDNN_OR_SKIP();
  for (int64_t M : {1, 7, 129, 1031}) {
    for (int64_t K : {1, 129, 1536}) {
      const int64_t N = 33;
      const at::Tensor a = seeded_randn({M, K}, at::kFloat, 1), w = seeded_randn({N, K}, at::kFloat, 2);
      const at::Tensor exact = a.to(at::kDouble).mm(w.to(at::kDouble).t());
      const at::Tensor y = gemm(a, w.t());  // the weight read transposed, in place
      ASSERT_EQ(y.sizes(), (at::IntArrayRef{M, N}));
      EXPECT_LT(relative_error(y, exact), 2e-6) << M << "x" << K << "x" << N;
      // A transposed a, and a strided one (a column slice), give the same values.
      const at::Tensor at_t = a.t().contiguous().t();
      EXPECT_LT(relative_error(gemm(at_t, w.t()), exact), 2e-6);
      const at::Tensor wide = seeded_randn({M, K + 3}, at::kFloat, 3);
      const at::Tensor sliced = wide.narrow(1, 1, K);
      EXPECT_LT(relative_error(gemm(sliced, w.t()), sliced.to(at::kDouble).mm(w.to(at::kDouble).t())), 2e-6);
      // Deterministic: a resume recomputes the same bits.
      EXPECT_EQ(count_bit_differences(gemm(a, w.t()), y), 0);
    }
  }
}

TEST_F(CpuGemmTest, OutputIsWrittenInPlaceWhateverItHeld) {
  USE_ONEDNN_OR_SKIP();
  const at::Tensor a = seeded_randn({64, 96}, at::kFloat, 4), b = seeded_randn({96, 40}, at::kFloat, 5);
  at::Tensor out = seeded_randn({64, 40}, at::kFloat, 6) * 1e6;  // beta = 0: the old contents must not leak in
  const at::Tensor& returned = gemm_out(out, a, b);
  EXPECT_TRUE(returned.is_same(out));
  EXPECT_LT(relative_error(out, a.to(at::kDouble).mm(b.to(at::kDouble))), 2e-6);
}

TEST_F(CpuGemmTest, BlasIsAtenBitForBit) {
  set_cpu_gemm_path(CpuGemmPath::kBlas);
  const at::Tensor a = seeded_randn({300, 129}, at::kFloat, 7), w = seeded_randn({65, 129}, at::kFloat, 8);
  EXPECT_EQ(count_bit_differences(gemm(a, w.t()), at::mm(a, w.t())), 0);
}

TEST_F(CpuGemmTest, OtherDtypesAndFusedOffStayOnAten) {
  USE_ONEDNN_OR_SKIP();
  const at::Tensor a = seeded_randn({40, 64}, at::kFloat, 9), b = seeded_randn({64, 24}, at::kFloat, 10);
  const at::Tensor ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  EXPECT_EQ(count_bit_differences(gemm(ad, bd), at::mm(ad, bd)), 0) << "fp64";
  const at::Tensor ah = a.to(at::kBFloat16), bh = b.to(at::kBFloat16);
  EXPECT_EQ(count_bit_differences(gemm(ah, bh), at::mm(ah, bh)), 0) << "bf16 is half_gemm.h's business";
  set_fused_kernels_enabled(false);
  EXPECT_EQ(count_bit_differences(gemm(a, b), at::mm(a, b)), 0) << "model.fused_kernels: off";
  // An empty inner dimension is a zero product, as at::mm gives.
  set_fused_kernels_enabled(true);
  const at::Tensor empty = gemm(at::empty({5, 0}), at::empty({0, 3}));
  EXPECT_TRUE(empty.equal(at::zeros({5, 3})));
}

TEST_F(CpuGemmTest, FrozenLinearTakesTheChosenLibrary) {
  const at::Tensor x = seeded_randn({2, 50, 129}, at::kFloat, 11), w = seeded_randn({31, 129}, at::kFloat, 12);
  const at::Tensor bias = seeded_randn({31}, at::kFloat, 13), dy = seeded_randn({2, 50, 31}, at::kFloat, 14);
  const at::Tensor exact = at::linear(x.to(at::kDouble), w.to(at::kDouble), bias.to(at::kDouble));
  const at::Tensor exact_dx = at::matmul(dy.to(at::kDouble), w.to(at::kDouble));
  USE_ONEDNN_OR_SKIP();
  const at::Tensor y = frozen_linear(x, w, bias), dx = frozen_linear_input_grad(dy, w);
  EXPECT_EQ(y.sizes(), (at::IntArrayRef{2, 50, 31}));
  EXPECT_EQ(dx.sizes(), x.sizes());
  EXPECT_LT(relative_error(y, exact), 2e-6);
  EXPECT_LT(relative_error(dx, exact_dx), 2e-6);
  set_cpu_gemm_path(CpuGemmPath::kBlas);
  EXPECT_LT(relative_error(frozen_linear(x, w, bias), exact), 2e-6);
  EXPECT_EQ(count_bit_differences(frozen_linear_input_grad(dy, w), gemm(dy.reshape({-1, 31}), w).view(x.sizes())), 0);
}

TEST_F(CpuGemmTest, EnvironmentChoosesAndBadValuesAreNamed) {
  setenv("FREEHOLD_FP32_GEMM", "onednn", 1);
  reset_cpu_gemm_path_for_testing();
  if (onednn_gemm_available()) {
    EXPECT_EQ(cpu_gemm_path(), CpuGemmPath::kOneDnn);
  } else {
    EXPECT_THROW(cpu_gemm_path(), std::exception) << "onednn where it cannot run must be refused, not crash later";
  }
  setenv("FREEHOLD_FP32_GEMM", "blas", 1);
  reset_cpu_gemm_path_for_testing();
  EXPECT_EQ(cpu_gemm_path(), CpuGemmPath::kBlas);
  setenv("FREEHOLD_FP32_GEMM", "mkl", 1);
  reset_cpu_gemm_path_for_testing();
  try {
    cpu_gemm_path();
    FAIL() << "FREEHOLD_FP32_GEMM=mkl was accepted";
  } catch (const std::exception& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("FREEHOLD_FP32_GEMM=mkl"), std::string::npos) << message;
    EXPECT_NE(message.find("blas"), std::string::npos) << message;
    EXPECT_NE(message.find("onednn"), std::string::npos) << message;
  }
  // auto measures, and the answer is kept.
  setenv("FREEHOLD_FP32_GEMM", "auto", 1);
  reset_cpu_gemm_path_for_testing();
  const CpuGemmPath measured = cpu_gemm_path(256);
  EXPECT_EQ(cpu_gemm_path(256), measured);
  EXPECT_EQ(cpu_gemm_path_from_name(cpu_gemm_path_name(measured)), measured);
  EXPECT_FALSE(cpu_gemm_path_from_name("BLAS").has_value());
  // Unset: oneDNN where it runs, else BLAS; no timing, so the same in every run on one machine.
  unsetenv("FREEHOLD_FP32_GEMM");
  reset_cpu_gemm_path_for_testing();
  EXPECT_EQ(cpu_gemm_path(), onednn_gemm_available() ? CpuGemmPath::kOneDnn : CpuGemmPath::kBlas);
}

}  // namespace
}  // namespace freehold::kernels
