// Init methods: shapes, the statistics PEFT's inits have, determinism, and the residual identities of
// pissa/olora. Agreement with PEFT's own pissa/olora on the same weights is checked in
// tests/conformance/peft_adapter_test.py.
#include "adapters/lora_init.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/diag.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/linalg_qr.h>
#include <ATen/ops/linalg_svd.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tril.h>

#include <cmath>

#include <gtest/gtest.h>

#include "core/error.h"

namespace freehold::adapters {
namespace {

at::Generator generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

at::Tensor random_weight(int64_t out, int64_t in, uint64_t seed) {
  at::Generator g = generator(seed);
  return at::randn({out, in}, g, at::kFloat) / std::sqrt(static_cast<double>(in));
}

LoraInitResult run(const std::string& method, const at::Tensor& w, int64_t r, double scale, uint64_t seed) {
  at::Generator g = generator(seed);
  return init_lora_weights(*parse_lora_init(method), w, r, scale, g);
}

TEST(LoraInitTest, ParsesTheMethodNames) {
  for (const char* name : {"default", "gaussian", "pissa", "olora", "pissa_niter_4", "pissa_niter_0"}) {
    ASSERT_TRUE(parse_lora_init(name)) << name;
    EXPECT_EQ(lora_init_name(*parse_lora_init(name)), name);
  }
  for (const char* name : {"", "true", "Pissa", "pissa_niter_", "pissa_niter_-1", "pissa_niter_4x", "loftq", "eva"}) {
    EXPECT_FALSE(parse_lora_init(name)) << name;
  }
}

TEST(LoraInitTest, DefaultIsKaimingUniformAndZeroB) {
  const int64_t out = 96, in = 400, r = 64;
  LoraInitResult w = run("default", random_weight(out, in, 1), r, 2.0, 7);
  ASSERT_EQ(w.lora_A.sizes(), (std::vector<int64_t>{r, in}));
  ASSERT_EQ(w.lora_B.sizes(), (std::vector<int64_t>{out, r}));
  EXPECT_FALSE(w.residual_base.defined());
  EXPECT_EQ(w.lora_B.abs().max().item<float>(), 0.0f);
  // kaiming_uniform_(a=√5) on (r, in): U(-1/√in, 1/√in), std = bound/√3. 25600 samples: the std is within 2%.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  EXPECT_LE(w.lora_A.abs().max().item<double>(), bound);
  EXPECT_GT(w.lora_A.abs().max().item<double>(), 0.99 * bound);
  EXPECT_NEAR(w.lora_A.std().item<double>(), bound / std::sqrt(3.0), 0.02 * bound / std::sqrt(3.0));
  EXPECT_NEAR(w.lora_A.mean().item<double>(), 0.0, 0.02 * bound);
}

TEST(LoraInitTest, GaussianHasStdOneOverR) {
  const int64_t r = 16;
  LoraInitResult w = run("gaussian", random_weight(64, 2000, 1), r, 2.0, 7);
  EXPECT_NEAR(w.lora_A.std().item<double>(), 1.0 / r, 0.02 / r);
  EXPECT_EQ(w.lora_B.abs().max().item<float>(), 0.0f);
}

TEST(LoraInitTest, SameSeedSameWeightsOtherSeedOthers) {
  at::Tensor weight = random_weight(32, 48, 1);
  for (const char* method : {"default", "gaussian", "pissa_niter_2"}) {
    LoraInitResult a = run(method, weight, 4, 2.0, 11), b = run(method, weight, 4, 2.0, 11), c = run(method, weight, 4, 2.0, 12);
    EXPECT_TRUE(at::equal(a.lora_A, b.lora_A)) << method;
    EXPECT_TRUE(at::equal(a.lora_B, b.lora_B)) << method;
    EXPECT_FALSE(at::equal(a.lora_A, c.lora_A)) << method;
  }
}

TEST(LoraInitTest, PissaIsTheTopSingularSubspaceAndTheResidualKeepsW) {
  const int64_t out = 40, in = 56, r = 6;
  const double scale = 16.0 / r;
  at::Tensor weight = random_weight(out, in, 3);
  LoraInitResult w = run("pissa", weight, r, scale, 0);
  ASSERT_EQ(w.lora_A.sizes(), (std::vector<int64_t>{r, in}));
  ASSERT_EQ(w.lora_B.sizes(), (std::vector<int64_t>{out, r}));
  // residual + scale·BA = W, and scale·BA is the best rank-r approximation U_r S_r V_rᵀ.
  EXPECT_TRUE(at::allclose(w.residual_base + scale * at::matmul(w.lora_B, w.lora_A), weight, 0, 1e-5));
  auto [U, S, Vh] = at::linalg_svd(weight, false);
  at::Tensor best = at::matmul(U.narrow(1, 0, r) * S.narrow(0, 0, r), Vh.narrow(0, 0, r));
  EXPECT_TRUE(at::allclose(scale * at::matmul(w.lora_B, w.lora_A), best, 0, 1e-5));
  // A's rows are orthogonal with squared norms S_i / scale; B's columns likewise: the split is symmetric.
  at::Tensor AAt = at::matmul(w.lora_A, w.lora_A.t());
  EXPECT_TRUE(at::allclose(AAt, at::diag(S.narrow(0, 0, r) / scale), 0, 1e-5));
  EXPECT_TRUE(at::allclose(at::matmul(w.lora_B.t(), w.lora_B), at::diag(S.narrow(0, 0, r) / scale), 0, 1e-5));
}

TEST(LoraInitTest, FastPissaApproachesTheExactOneOnADecayingSpectrum) {
  const int64_t out = 80, in = 64, r = 4;
  at::Generator g = generator(5);
  auto [Q1, R1] = at::linalg_qr(at::randn({out, in}, g, at::kFloat));
  auto [Q2, R2] = at::linalg_qr(at::randn({in, in}, g, at::kFloat));
  at::Tensor spectrum = at::pow(at::full({in}, 0.5, at::kFloat), at::arange(in, at::kFloat));
  at::Tensor weight = at::matmul(Q1 * spectrum, Q2.t());
  LoraInitResult exact = run("pissa", weight, r, 2.0, 0);
  LoraInitResult fast = run("pissa_niter_4", weight, r, 2.0, 9);
  at::Tensor exact_ba = at::matmul(exact.lora_B, exact.lora_A), fast_ba = at::matmul(fast.lora_B, fast.lora_A);
  EXPECT_LT((exact_ba - fast_ba).abs().max().item<double>(), 1e-4);
  EXPECT_TRUE(at::allclose(fast.residual_base + 2.0 * fast_ba, weight, 0, 1e-5));
}

TEST(LoraInitTest, OloraIsTheQrFactorisationAndTheResidualKeepsW) {
  const int64_t out = 40, in = 56, r = 5;
  const double scale = 2.0;
  at::Tensor weight = random_weight(out, in, 4);
  LoraInitResult w = run("olora", weight, r, scale, 0);
  EXPECT_TRUE(at::allclose(at::matmul(w.lora_B.t(), w.lora_B), at::eye(r, at::kFloat), 0, 1e-5));  // Q_r orthonormal
  EXPECT_TRUE(at::allclose(w.residual_base + scale * at::matmul(w.lora_B, w.lora_A), weight, 0, 1e-5));
  // A = R[:r] is upper triangular in its first r columns.
  EXPECT_EQ(at::tril(w.lora_A.narrow(1, 0, r), -1).abs().max().item<float>(), 0.0f);
}

TEST(LoraInitTest, ResidualKeepsTheWeightDtype) {
  at::Tensor weight = random_weight(32, 24, 1).to(at::kBFloat16);
  LoraInitResult w = run("olora", weight, 4, 2.0, 0);
  EXPECT_EQ(w.residual_base.scalar_type(), at::kBFloat16);
  EXPECT_EQ(w.lora_A.scalar_type(), at::kFloat);
}

TEST(LoraInitTest, RankAboveTheMatrixRankIsAnError) {
  at::Tensor weight = random_weight(8, 24, 1);
  for (const char* method : {"pissa", "olora"}) {
    try {
      run(method, weight, 9, 1.0, 0);
      ADD_FAILURE() << method;
    } catch (const core::Error& e) {
      EXPECT_NE(std::string(e.what()).find("r is 9"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace freehold::adapters
