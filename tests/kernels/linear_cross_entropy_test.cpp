// Linear + cross-entropy: the fused chunked pass against the ATen reference (loss, d hidden, d weight) over odd
// shapes, dtypes, chunkings, ignored rows and strided inputs; the row kernel against the GPU's lane order; the
// exp/log polynomials against libm; bad arguments. The CUDA tests are in cross_entropy_cuda_test.cpp.
#include "kernels/linear_cross_entropy.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/full.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cross_entropy_cpu.h"
#include "kernels/cross_entropy_math.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using testing::count_not_close;
using testing::seeded_randn;

constexpr int64_t kIgnore = -100;

// Targets in [0, V), every third row (by a seeded draw) ignored.
at::Tensor make_targets(int64_t N, int64_t V, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor t = at::randint(V, {N}, gen, at::TensorOptions().dtype(at::kLong));
  const at::Tensor drop = at::randint(3, {N}, gen, at::TensorOptions().dtype(at::kLong)).eq(0);
  return at::where(drop, at::full({N}, kIgnore, t.options()), t);
}

// The judge is the exact answer, computed in float64 by plain ATen from the same (rounded) inputs: the fused pass must
// be no further from it than twice the reference's own distance, plus a floor of `floor_rel` of the answer's
// largest magnitude (for cases the reference happens to get exact). This scales with how hard the input is (bf16
// rounding of d logits, cancellation in d hidden when one class takes nearly all the probability) instead of a
// fixed tolerance that is either loose for easy inputs or wrong for hard ones.
double floor_rel(at::ScalarType t) { return t == at::kFloat ? 1e-6 : 2e-3; }

void expect_as_close_as_reference(const at::Tensor& fused, const at::Tensor& reference, const at::Tensor& exact,
                                  at::ScalarType dtype, const char* what) {
  ASSERT_EQ(fused.sizes(), exact.sizes()) << what;
  const at::Tensor e = exact.to(at::kDouble);
  const double fused_err = (fused.detach().to(at::kDouble) - e).abs().max().item<double>();
  const double ref_err = (reference.detach().to(at::kDouble) - e).abs().max().item<double>();
  const double limit = 2 * ref_err + floor_rel(dtype) * e.abs().max().item<double>();
  EXPECT_LE(fused_err, limit) << what << ": fused is " << fused_err << " from the exact value, the reference "
                              << ref_err;
}

struct Exact {
  at::Tensor loss, grad_hidden, grad_weight;  // float64
};

// Loss and gradients (upstream gradient `scale`) in float64 from the given inputs.
Exact exact_answer(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets, double scale) {
  at::Tensor h = hidden.detach().to(at::kDouble).set_requires_grad(true);
  at::Tensor w = weight.detach().to(at::kDouble).set_requires_grad(true);
  const at::Tensor loss =
      at::cross_entropy_loss(at::linear(h, w), targets, {}, at::Reduction::Sum, kIgnore);
  (loss * scale).backward();
  return {loss.detach(), h.grad(), w.grad()};
}

// Loss, d hidden and d weight of the fused pass against the reference, with an upstream gradient of 0.37 so that
// backward's scaling is exercised.
void check_against_reference(const at::Tensor& hidden_in, const at::Tensor& weight_in, const at::Tensor& targets,
                             int64_t chunk_bytes, bool weight_grad = true) {
  const at::ScalarType dtype = hidden_in.scalar_type();
  at::Tensor h_ref = hidden_in.detach().clone().set_requires_grad(true);
  at::Tensor w_ref = weight_in.detach().clone().set_requires_grad(weight_grad);
  // The fused inputs keep the given strides (they may be non-contiguous views).
  at::Tensor h = hidden_in.detach().set_requires_grad(true);
  at::Tensor w = weight_in.detach().set_requires_grad(weight_grad);

  const at::Tensor ref = linear_cross_entropy_reference(h_ref, w_ref, targets, kIgnore);
  const at::Tensor got = linear_cross_entropy_fused(h, w, targets, {kIgnore, chunk_bytes});
  ASSERT_EQ(got.dim(), 0);
  ASSERT_EQ(got.scalar_type(), at::kFloat);
  const Exact exact = exact_answer(hidden_in, weight_in, targets, 0.37);
  expect_as_close_as_reference(got, ref, exact.loss, dtype, "loss");

  (ref * 0.37).backward();
  (got * 0.37).backward();
  ASSERT_TRUE(h.grad().defined());
  EXPECT_EQ(h.grad().scalar_type(), dtype);
  expect_as_close_as_reference(h.grad(), h_ref.grad(), exact.grad_hidden, dtype, "d hidden");
  if (weight_grad) {
    ASSERT_TRUE(w.grad().defined());
    EXPECT_EQ(w.grad().scalar_type(), dtype);
    expect_as_close_as_reference(w.grad(), w_ref.grad(), exact.grad_weight, dtype, "d weight");
  } else {
    EXPECT_FALSE(w.grad().defined());
  }
}

void expect_close(const at::Tensor& actual, const at::Tensor& expected, double rtol, double atol, const char* what) {
  std::string where;
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  EXPECT_EQ(count_not_close(actual, expected, rtol, atol, &where), 0) << what << ": " << where;
}

TEST(LinearCrossEntropyTest, MatchesReferenceOverOddShapesDtypesAndChunks) {
  uint64_t seed = 10;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t N : {1, 7, 129}) {
      for (int64_t V : {1, 7, 129, 4097}) {
        const int64_t C = 24;
        // One row per chunk, 5 rows per chunk (a short last chunk), and everything in one chunk.
        for (int64_t rows_per_chunk : {int64_t{1}, int64_t{5}, N}) {
          if (rows_per_chunk == 1 && N * V > 10000) continue;  // 129 one-row GEMMs of V 4097 add time, not cover
          SCOPED_TRACE(::testing::Message() << dtype << " N " << N << " V " << V << " chunk " << rows_per_chunk);
          seed += 3;
          const at::Tensor hidden = seeded_randn({N, C}, dtype, seed);
          const at::Tensor weight = (seeded_randn({V, C}, at::kFloat, seed + 1) * 0.5).to(dtype);
          const int64_t elem = dtype == at::kFloat ? 4 : 2;
          check_against_reference(hidden, weight, make_targets(N, V, seed + 2), rows_per_chunk * V * elem);
        }
      }
    }
  }
}

TEST(LinearCrossEntropyTest, FrozenWeightGetsNoGradient) {
  const at::Tensor hidden = seeded_randn({33, 16}, at::kFloat, 1);
  const at::Tensor weight = seeded_randn({257, 16}, at::kFloat, 2);
  check_against_reference(hidden, weight, make_targets(33, 257, 3), 1 << 12, /*weight_grad=*/false);
}

TEST(LinearCrossEntropyTest, NonContiguousInputs) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(::testing::Message() << dtype);
    const at::Tensor hidden = seeded_randn({40, 65}, dtype, 4).t();          // (65, 40), column-major
    const at::Tensor wide = seeded_randn({300, 80}, dtype, 5);
    const at::Tensor weight = wide.narrow(1, 10, 40).narrow(0, 0, 299);       // (299, 40), row stride 80
    const at::Tensor targets = make_targets(130, 299, 6).narrow(0, 0, 130).view({65, 2}).select(1, 1);  // stride 2
    ASSERT_FALSE(hidden.is_contiguous());
    ASSERT_FALSE(weight.is_contiguous());
    ASSERT_FALSE(targets.is_contiguous());
    check_against_reference(hidden, weight, targets, 7 * 299 * hidden.element_size());
  }
}

TEST(LinearCrossEntropyTest, LargeLogitsStayFinite) {
  // Logits around ±300: exp without the max subtraction would overflow fp32.
  const at::Tensor hidden = seeded_randn({9, 8}, at::kFloat, 7) * 30;
  const at::Tensor weight = seeded_randn({1000, 8}, at::kFloat, 8) * 3;
  const at::Tensor targets = make_targets(9, 1000, 9);
  const at::Tensor got = linear_cross_entropy_fused(hidden, weight, targets);
  EXPECT_TRUE(std::isfinite(got.item<float>()));
  check_against_reference(hidden, weight, targets, 1 << 20);
}

TEST(LinearCrossEntropyTest, AllIgnoredGivesZeroLossAndZeroGradient) {
  at::Tensor hidden = seeded_randn({6, 8}, at::kFloat, 10).set_requires_grad(true);
  const at::Tensor weight = seeded_randn({50, 8}, at::kFloat, 11);
  const at::Tensor targets = at::full({6}, kIgnore, at::TensorOptions().dtype(at::kLong));
  const at::Tensor loss = linear_cross_entropy_fused(hidden, weight, targets);
  EXPECT_EQ(loss.item<float>(), 0.0f);
  loss.backward();
  EXPECT_TRUE(at::equal(hidden.grad(), at::zeros({6, 8})));
}

TEST(LinearCrossEntropyTest, NoGraphWithoutGrad) {
  at::Tensor hidden = seeded_randn({5, 8}, at::kFloat, 12).set_requires_grad(true);
  const at::Tensor weight = seeded_randn({50, 8}, at::kFloat, 13);
  const at::Tensor targets = make_targets(5, 50, 14);
  {
    at::NoGradGuard no_grad;
    const at::Tensor loss = linear_cross_entropy_fused(hidden, weight, targets);
    EXPECT_FALSE(loss.requires_grad());
    expect_close(loss, linear_cross_entropy_reference(hidden, weight, targets, kIgnore), 1e-5, 1e-5, "loss");
  }
  EXPECT_TRUE(linear_cross_entropy_fused(hidden, weight, targets).requires_grad());
}

TEST(LinearCrossEntropyTest, DispatcherFallsBackForMixedDtypes) {
  const at::Tensor hidden = seeded_randn({5, 8}, at::kBFloat16, 15);
  const at::Tensor weight = seeded_randn({50, 8}, at::kFloat, 16);
  EXPECT_FALSE(linear_cross_entropy_fusable(hidden, weight));
  EXPECT_TRUE(linear_cross_entropy_fusable(hidden.to(at::kFloat), weight));
  EXPECT_FALSE(linear_cross_entropy_fusable(hidden.to(at::kDouble), weight.to(at::kDouble)));
  const at::Tensor targets = make_targets(5, 50, 17);
  EXPECT_THROW(linear_cross_entropy_fused(hidden, weight, targets), c10::Error);
  const at::Tensor expected = linear_cross_entropy_reference(hidden.to(at::kFloat), weight, targets, kIgnore);
  expect_close(linear_cross_entropy(hidden.to(at::kFloat), weight, targets, true), expected, 1e-5, 1e-5, "fused");
  expect_close(linear_cross_entropy(hidden.to(at::kFloat), weight, targets, false), expected, 0, 0, "reference");
}

TEST(LinearCrossEntropyTest, BadArgumentsNameTheValue) {
  const at::Tensor hidden = seeded_randn({4, 8}, at::kFloat, 18);
  const at::Tensor weight = seeded_randn({10, 8}, at::kFloat, 19);
  const auto longs = at::TensorOptions().dtype(at::kLong);
  const auto expect_error = [&](const at::Tensor& h, const at::Tensor& w, const at::Tensor& t, const char* text) {
    try {
      (void)linear_cross_entropy_fused(h, w, t);
      ADD_FAILURE() << "no error; expected one containing \"" << text << "\"";
    } catch (const c10::Error& e) {
      EXPECT_THAT(e.what_without_backtrace(), ::testing::HasSubstr(text));
    }
  };
  at::Tensor t = at::full({4}, 3, longs);
  t[2] = 10;
  expect_error(hidden, weight, t, "targets[2] = 10 is outside [0, 10)");
  t[2] = -1;
  expect_error(hidden, weight, t, "targets[2] = -1 is outside [0, 10)");
  expect_error(hidden, weight, at::full({3}, 1, longs), "targets must have shape (N) = (4), got shape [3]");
  expect_error(hidden, weight, at::full({4}, 1, at::TensorOptions().dtype(at::kInt)), "targets must be int64, got Int");
  expect_error(hidden, seeded_randn({10, 7}, at::kFloat, 20), t.fill_(1), "weight must be (V, 8)");
  expect_error(hidden.view({2, 2, 8}), weight, t, "hidden must have shape (N, C), got shape [2, 2, 8]");
  EXPECT_THROW(linear_cross_entropy_fused(hidden, weight, t, {kIgnore, 0}), c10::Error);
}

// ─── the row kernel ──────────────────────────────────────────────────────────────────────────────────────────────

int64_t ulps_apart(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  return std::abs(static_cast<int64_t>(ia) - static_cast<int64_t>(ib));
}

TEST(CrossEntropyMathTest, ExpWithinThreeUlpsLogWithinTwo) {
  int64_t worst_exp = 0, worst_log = 0;
  for (float x = -87.0f; x <= 0.0f; x += 0.0007f) {
    worst_exp = std::max(worst_exp, ulps_apart(exp_nonpositive(x), static_cast<float>(std::exp(static_cast<double>(x)))));
  }
  for (float x = 1.0f; x < 3e38f; x *= 1.0013f) {
    worst_log = std::max(worst_log, ulps_apart(log_at_least_one(x), static_cast<float>(std::log(static_cast<double>(x)))));
  }
  EXPECT_LE(worst_exp, 3);
  EXPECT_LE(worst_log, 2);
  EXPECT_EQ(exp_nonpositive(0.0f), 1.0f);
  EXPECT_EQ(exp_nonpositive(-88.0f), 0.0f);
  EXPECT_EQ(exp_nonpositive(-INFINITY), 0.0f);
  EXPECT_EQ(log_at_least_one(1.0f), 0.0f);
  EXPECT_TRUE(std::isnan(exp_nonpositive(NAN)));
}

// The GPU's order written out lane by lane, as one CUDA block computes it, for one row.
template <typename T>
float gpu_order_row(std::vector<T>& z, int64_t target) {
  const int64_t V = static_cast<int64_t>(z.size());
  float partial[kCrossEntropyLanes];
  for (int l = 0; l < kCrossEntropyLanes; ++l) partial[l] = cross_entropy_lane_max(z.data(), V, l);
  const float M = cross_entropy_combine_max(partial);
  for (int l = 0; l < kCrossEntropyLanes; ++l) partial[l] = cross_entropy_lane_sum_exp(z.data(), V, M, l);
  const float log_s = log_at_least_one(cross_entropy_combine_sum(partial));
  const float loss = cross_entropy_loss(M, log_s, static_cast<float>(z[target]));
  for (int64_t j = 0; j < V; ++j) z[j] = cross_entropy_grad(z[j], M, log_s, j == target);
  return loss;
}

TEST(CrossEntropyRowsCpuTest, BitIdenticalToTheGpuLaneOrder) {
  for (int64_t V : {1, 7, 255, 256, 257, 4097}) {
    SCOPED_TRACE(::testing::Message() << "V " << V);
    const int64_t rows = 3;
    at::Tensor logits = seeded_randn({rows, V}, at::kFloat, 100 + V) * 4;
    const at::Tensor targets = at::tensor(std::vector<int64_t>{V - 1, kIgnore, V / 2}, at::TensorOptions().dtype(at::kLong));
    const at::Tensor original = logits.clone();
    at::Tensor loss = at::empty({rows});
    cross_entropy_rows_cpu(ElementType::kF32, logits.mutable_data_ptr(), targets.const_data_ptr<int64_t>(),
                           loss.mutable_data_ptr<float>(), rows, V, kIgnore, true);
    for (int64_t r : {0, 2}) {
      std::vector<float> z(original[r].data_ptr<float>(), original[r].data_ptr<float>() + V);
      const float expected = gpu_order_row(z, targets[r].item<int64_t>());
      EXPECT_EQ(float_to_bits(loss[r].item<float>()), float_to_bits(expected)) << "row " << r;
      EXPECT_EQ(std::memcmp(z.data(), logits[r].data_ptr<float>(), V * sizeof(float)), 0) << "row " << r;
    }
    EXPECT_EQ(loss[1].item<float>(), 0.0f);
    EXPECT_TRUE(at::equal(logits[1], at::zeros({V})));
  }
}

}  // namespace
}  // namespace freehold::kernels
