// LoRA dropout's counter-based mask (kernels/dropout.h): the hash against SplitMix64's published first outputs, the
// CPU kernels against the scalar spec and the ATen reference bit for bit (every dtype, odd sizes, strided and
// non-finite inputs, 1 and 2 threads), the seed draw against the generator it comes from, and the distribution:
// the keep rate and the independence of neighbouring elements, of rows and of consecutive masks, within 5σ.
#include "kernels/dropout.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/isnan.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/dropout_math.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using testing::count_bit_differences;
using testing::seeded_randn;

TEST(DropoutKernelTest, HashIsSplitMix64) {
  // SplitMix64 seeded with 0 (state += 0x9E3779B97F4A7C15, then the finalizer) starts 0xE220A8397B1DCDAF,
  // 0x6E789E6AA1B965F4, 0x06C45D188009454F: the published reference outputs, so block k of seed 0 is output k.
  EXPECT_EQ(dropout_block(0, 0), 0xE220A8397B1DCDAFULL);
  EXPECT_EQ(dropout_block(0, 1), 0x6E789E6AA1B965F4ULL);
  EXPECT_EQ(dropout_block(0, 2), 0x06C45D188009454FULL);
  // Elements 2k and 2k + 1 take block k's low and high words.
  const uint64_t t = dropout_threshold(0.5);
  EXPECT_EQ(t, 1ULL << 31);
  EXPECT_EQ(dropout_keep(0, 0, t), (0xE220A8397B1DCDAFULL & 0xFFFFFFFFULL) < t);
  EXPECT_EQ(dropout_keep(0, 1, t), (0xE220A8397B1DCDAFULL >> 32) < t);
}

TEST(DropoutKernelTest, ThresholdCoversTheWholeRange) {
  EXPECT_EQ(dropout_threshold(0.0), 1ULL << 32);  // every 32-bit word is below it: all kept
  EXPECT_EQ(dropout_threshold(0.75), 1ULL << 30);
  EXPECT_GE(dropout_threshold(std::nextafter(1.0, 0.0)), 1ULL);  // never 0: p < 1 keeps something in expectation
  EXPECT_NEAR(static_cast<double>(dropout_threshold(0.05)) / 4294967296.0, 0.95, 1e-9);
}

TEST(DropoutKernelTest, MaskKernelEqualsTheSpec) {
  const int old_threads = at::get_num_threads();
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (int64_t n : {0, 1, 2, 3, 7, 1000, 70001}) {  // 70001: odd and over one parallel task
      for (double p : {0.05, 0.3, 0.5, 0.999}) {
        for (uint64_t seed : {0ULL, 1ULL, 0xFFFFFFFFFFFFFFFFULL}) {
          const at::Tensor got = dropout_mask({n}, seed, p, at::kCPU);
          const at::Tensor want = dropout_mask_reference({n}, seed, p, at::kCPU);
          ASSERT_EQ(got.scalar_type(), at::kBool);
          EXPECT_TRUE(at::equal(got, want)) << "n " << n << ", p " << p << ", seed " << seed << ", " << threads
                                            << " thread(s)";
        }
      }
    }
  }
  at::set_num_threads(old_threads);
  // The shape does not matter, only the row-major index.
  EXPECT_TRUE(at::equal(dropout_mask({3, 5, 7}, 9, 0.3, at::kCPU).reshape({-1}), dropout_mask({105}, 9, 0.3, at::kCPU)));
}

TEST(DropoutKernelTest, ApplyEqualsTheAtenReferenceBitForBit) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (double p : {0.05, 0.1, 0.3, 0.9}) {
      const at::Tensor x = seeded_randn({5, 37, 19}, dtype, 3);
      const at::Tensor got = dropout_apply(x, 77, p);
      const at::Tensor want = dropout_reference(x, 77, p);
      EXPECT_EQ(got.scalar_type(), dtype);
      EXPECT_EQ(count_bit_differences(got, want), 0) << dtype << ", p " << p;
      // A strided x (a transpose) is read in its logical order: the same as its contiguous copy.
      const at::Tensor xt = seeded_randn({19, 37}, dtype, 4).t();
      EXPECT_EQ(count_bit_differences(dropout_apply(xt, 5, p), dropout_reference(xt.contiguous(), 5, p)), 0);
      EXPECT_EQ(count_bit_differences(dropout_apply(xt, 5, p), dropout_reference(xt, 5, p).contiguous()), 0);
    }
  }
  // p = 0 is the identity; double has no kernel and takes the reference.
  const at::Tensor x = seeded_randn({4, 6}, at::kFloat, 1);
  EXPECT_TRUE(at::equal(dropout_apply(x, 3, 0.0), x));
  const at::Tensor xd = x.to(at::kDouble);
  EXPECT_TRUE(at::equal(dropout_apply(xd, 3, 0.4), dropout_reference(xd, 3, 0.4)));
}

TEST(DropoutKernelTest, NonFiniteInputsAsAten) {
  // x · noise: a dropped inf is NaN (inf · 0), a kept one inf; NaN stays NaN either way.
  at::Tensor x = at::full({64}, std::numeric_limits<float>::infinity());
  x.slice(0, 32, 64).fill_(std::numeric_limits<float>::quiet_NaN());
  const at::Tensor got = dropout_apply(x, 11, 0.5);
  const at::Tensor mask = dropout_mask({64}, 11, 0.5, at::kCPU);
  EXPECT_EQ(count_bit_differences(got, dropout_reference(x, 11, 0.5)), 0);
  EXPECT_TRUE(at::equal(at::isnan(got.slice(0, 0, 32)), ~mask.slice(0, 0, 32)));
  EXPECT_TRUE(at::isnan(got.slice(0, 32, 64)).all().item<bool>());
}

TEST(DropoutKernelTest, SeedComesFromTheDefaultGenerator) {
  at::manual_seed(5);
  const uint64_t a = draw_dropout_seed(at::kCPU), b = draw_dropout_seed(at::kCPU);
  EXPECT_NE(a, b);
  at::manual_seed(5);
  EXPECT_EQ(draw_dropout_seed(at::kCPU), a);
  // A restored generator state redraws the same seed (checkpoints, activation checkpointing's replay).
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  const at::Tensor state = gen.get_state();
  const uint64_t c = draw_dropout_seed(at::kCPU);
  gen.set_state(state);
  EXPECT_EQ(draw_dropout_seed(at::kCPU), c);
}

// |observed − expected| within 5 standard deviations of a binomial count of n trials at probability q.
void expect_binomial(int64_t count, int64_t n, double q, const std::string& what) {
  const double mean = static_cast<double>(n) * q, sigma = std::sqrt(static_cast<double>(n) * q * (1 - q));
  EXPECT_LE(std::abs(static_cast<double>(count) - mean), 5 * sigma)
      << what << ": " << count << " of " << n << ", expected " << mean << " ± " << sigma;
}

TEST(DropoutKernelTest, KeepRateAndIndependence) {
  const int64_t rows = 1024, width = 576;  // a (T, in) input of a LoRA projection
  for (double p : {0.05, 0.1, 0.5}) {
    const double q = 1 - p;
    const at::Tensor m = dropout_mask({rows, width}, 0xC0FFEE, p, at::kCPU);
    const int64_t n = m.numel();
    const std::string tag = "p " + std::to_string(p);
    expect_binomial(m.sum().item<int64_t>(), n, q, tag + ", kept");
    // Neighbours along a row (lag 1: the two words of one block, and the block boundaries), two apart, and the same
    // column of neighbouring rows: both kept with probability q².
    const at::Tensor flat = m.reshape({-1});
    for (int64_t lag : {int64_t{1}, int64_t{2}, int64_t{3}, width}) {
      const at::Tensor both = flat.slice(0, 0, n - lag) & flat.slice(0, lag, n);
      expect_binomial(both.sum().item<int64_t>(), n - lag, q * q, tag + ", lag " + std::to_string(lag));
    }
    // Consecutive seeds (consecutive masks of a step) are unrelated.
    const at::Tensor next = dropout_mask({rows, width}, 0xC0FFEE + 1, p, at::kCPU);
    expect_binomial((m & next).sum().item<int64_t>(), n, q * q, tag + ", consecutive seeds");
    // Each row keeps a binomial count: a chi-square over the rows' counts within 5σ of its mean (rows − 1 dof).
    const at::Tensor per_row = m.sum(1).to(at::kDouble);
    const double mean = width * q, var = width * q * (1 - q);
    const double chi2 = ((per_row - mean).pow(2) / var).sum().item<double>();
    EXPECT_LE(std::abs(chi2 - rows), 5 * std::sqrt(2.0 * rows)) << tag << ": chi-square of row counts " << chi2;
  }
  // The scaled mask's mean is 1: dropout keeps the expectation.
  const at::Tensor ones = at::full({1 << 20}, 1.0f);
  EXPECT_NEAR(dropout_apply(ones, 42, 0.05).to(at::kDouble).mean().item<double>(), 1.0, 5 * std::sqrt(0.05 / 0.95 / (1 << 20)));
}

TEST(DropoutKernelTest, ProbabilityOutsideTheRangeIsRefused) {
  const at::Tensor x = seeded_randn({4}, at::kFloat, 1);
  for (double p : {1.0, -0.1, std::nan("")}) {
    try {
      dropout_apply(x, 1, p);
      ADD_FAILURE() << "accepted p " << p;
    } catch (const c10::Error& e) {
      EXPECT_THAT(e.what_without_backtrace(), ::testing::HasSubstr("dropout_apply: dropout must be a probability in [0, 1), got"));
    }
  }
  EXPECT_THROW(dropout_mask({4}, 1, 1.5, at::kCPU), c10::Error);
  EXPECT_THROW(dropout_reference(x, 1, 1.0), c10::Error);
}

}  // namespace
}  // namespace freehold::kernels
