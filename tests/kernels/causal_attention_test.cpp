// kernels/causal_attention.h against its spec, ATen's scaled_dot_product_attention: values and the gradients of q,
// k and v over odd sequence lengths (one block, a block and one row, several), GQA groups, head sizes and
// non-contiguous inputs; errors measured against the fp64 spec and held to the fp32 spec's own error; the bits the
// same at 1 and 2 threads; and the spec itself wherever the blocked path does not apply.
#include "kernels/causal_attention.h"

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/ones.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <vector>

#include "kernels/cpu_gemm.h"
#include "kernels/rms_norm.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using testing::count_bit_differences;
using testing::seeded_randn;

class CausalAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!onednn_gemm_available()) GTEST_SKIP() << "the blocked path runs on oneDNN's fp32 GEMMs (AVX-512)";
    set_cpu_gemm_path(CpuGemmPath::kOneDnn);
  }
  void TearDown() override {
    reset_cpu_gemm_path_for_testing();
    set_fused_kernels_enabled(true);
    at::set_num_threads(threads_);
  }
  const int threads_ = at::get_num_threads();
};

struct Result {
  at::Tensor out, dq, dk, dv;
};

// f(q, k, v) and the gradients of <f, dout>, for inputs laid out as (B, T, H, D) memory viewed (B, H, T, D), as the
// model passes them.
template <typename F>
Result run(F f, const at::Tensor& q_btHd, const at::Tensor& k_btHd, const at::Tensor& v_btHd, const at::Tensor& dout,
           at::ScalarType dtype) {
  const at::Tensor q = q_btHd.to(dtype).transpose(1, 2).detach().requires_grad_(true);
  const at::Tensor k = k_btHd.to(dtype).transpose(1, 2).detach().requires_grad_(true);
  const at::Tensor v = v_btHd.to(dtype).transpose(1, 2).detach().requires_grad_(true);
  const at::Tensor out = f(q, k, v);
  const auto grads = torch::autograd::grad({out}, {q, k, v}, {dout.to(dtype)});
  return {out.detach(), grads[0], grads[1], grads[2]};
}

double max_error(const at::Tensor& got, const at::Tensor& exact) {
  return (got.to(at::kDouble) - exact).abs().max().item<double>();
}

void check(int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t D, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "B " << B << " H " << H << " H_kv " << Hkv << " T " << T << " D " << D);
  const at::Tensor q = seeded_randn({B, T, H, D}, at::kFloat, seed), k = seeded_randn({B, T, Hkv, D}, at::kFloat, seed + 1);
  const at::Tensor v = seeded_randn({B, T, Hkv, D}, at::kFloat, seed + 2), dout = seeded_randn({B, H, T, D}, at::kFloat, seed + 3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const auto blocked = [&](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
    EXPECT_TRUE(causal_attention_applies(a, b, c));
    return causal_attention(a, b, c, scale);
  };
  const auto spec = [&](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
    return causal_attention_reference(a, b, c, scale);
  };
  const Result got = run(blocked, q, k, v, dout, at::kFloat);
  const Result exact = run(spec, q, k, v, dout, at::kDouble);
  const Result aten = run(spec, q, k, v, dout, at::kFloat);  // fp32's own rounding, as ATen's kernel has it
  ASSERT_EQ(got.out.sizes(), exact.out.sizes());
  ASSERT_EQ(got.dk.sizes(), k.transpose(1, 2).sizes());
  const char* names[] = {"out", "d q", "d k", "d v"};
  const at::Tensor got_t[] = {got.out, got.dq, got.dk, got.dv}, exact_t[] = {exact.out, exact.dq, exact.dk, exact.dv};
  const at::Tensor aten_t[] = {aten.out, aten.dq, aten.dk, aten.dv};
  for (int i = 0; i < 4; ++i) {
    const double error = max_error(got_t[i], exact_t[i]), aten_error = max_error(aten_t[i], exact_t[i]);
    const double magnitude = exact_t[i].abs().max().item<double>();
    // Within a few times the fp32 spec's own error, and in absolute terms an fp32 computation's.
    EXPECT_LE(error, 4.0 * aten_error + 1e-6 * magnitude) << names[i] << ": ATen's fp32 error " << aten_error;
    EXPECT_LE(error, 2e-5 * std::max(magnitude, 1.0)) << names[i];
  }
}

TEST_F(CausalAttentionTest, MatchesTheSpecOverOddLengthsGroupsAndHeadSizes) {
  uint64_t seed = 1;
  for (int64_t T : {int64_t{1}, int64_t{7}, kAttentionBlockRows, kAttentionBlockRows + 1, 3 * kAttentionBlockRows + 45}) {
    check(1, 3, 3, T, 64, seed += 4);  // multi-head
    check(2, 6, 2, T, 17, seed += 4);  // GQA groups of 3, an odd head size, two sequences
  }
  check(1, 4, 1, 300, 128, seed += 4);  // multi-query, head size 128
}

TEST_F(CausalAttentionTest, LargeScoresStayFinite) {
  // Scores near 1e3 overflow exp without the row maximum subtracted; the blocked softmax subtracts it.
  const at::Tensor q = seeded_randn({1, 200, 2, 32}, at::kFloat, 90) * 30.0;
  const at::Tensor k = seeded_randn({1, 200, 2, 32}, at::kFloat, 91) * 30.0;
  const at::Tensor v = seeded_randn({1, 200, 2, 32}, at::kFloat, 92), dout = seeded_randn({1, 2, 200, 32}, at::kFloat, 93);
  const auto blocked = [](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
    return causal_attention(a, b, c, 1.0);
  };
  const Result got = run(blocked, q, k, v, dout, at::kFloat);
  for (const at::Tensor& t : {got.out, got.dq, got.dk, got.dv}) EXPECT_TRUE(t.isfinite().all().item<bool>());
  const Result exact = run([](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
    return causal_attention_reference(a, b, c, 1.0);
  }, q, k, v, dout, at::kDouble);
  EXPECT_LE(max_error(got.out, exact.out), 1e-4 * exact.out.abs().max().item<double>());
}

TEST_F(CausalAttentionTest, BitsDoNotDependOnTheThreadCount) {
  const at::Tensor q = seeded_randn({1, 300, 6, 64}, at::kFloat, 20), k = seeded_randn({1, 300, 2, 64}, at::kFloat, 21);
  const at::Tensor v = seeded_randn({1, 300, 2, 64}, at::kFloat, 22), dout = seeded_randn({1, 6, 300, 64}, at::kFloat, 23);
  const auto blocked = [](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
    return causal_attention(a, b, c, 0.125);
  };
  at::set_num_threads(1);
  const Result one = run(blocked, q, k, v, dout, at::kFloat);
  at::set_num_threads(2);
  const Result two = run(blocked, q, k, v, dout, at::kFloat);
  EXPECT_EQ(count_bit_differences(one.out, two.out), 0);
  EXPECT_EQ(count_bit_differences(one.dq, two.dq), 0);
  EXPECT_EQ(count_bit_differences(one.dk, two.dk), 0);
  EXPECT_EQ(count_bit_differences(one.dv, two.dv), 0);
}

TEST_F(CausalAttentionTest, EverythingElseIsTheSpec) {
  const at::Tensor q = seeded_randn({1, 4, 50, 16}, at::kFloat, 30), k = seeded_randn({1, 2, 50, 16}, at::kFloat, 31);
  const at::Tensor v = seeded_randn({1, 2, 50, 16}, at::kFloat, 32);
  const auto same_as_spec = [&](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, const char* what) {
    EXPECT_FALSE(causal_attention_applies(a, b, c)) << what;
    EXPECT_EQ(count_bit_differences(causal_attention(a, b, c, 0.25), causal_attention_reference(a, b, c, 0.25)), 0)
        << what;
  };
  same_as_spec(q.to(at::kBFloat16), k.to(at::kBFloat16), v.to(at::kBFloat16), "bf16");
  same_as_spec(q.to(at::kDouble), k.to(at::kDouble), v.to(at::kDouble), "fp64");
  set_cpu_gemm_path(CpuGemmPath::kBlas);
  same_as_spec(q, k, v, "BLAS fp32 GEMMs");
  set_cpu_gemm_path(CpuGemmPath::kOneDnn);
  set_fused_kernels_enabled(false);
  same_as_spec(q, k, v, "model.fused_kernels: off");
  set_fused_kernels_enabled(true);
  EXPECT_FALSE(causal_attention_applies(q, seeded_randn({1, 3, 50, 16}, at::kFloat, 33),
                                        seeded_randn({1, 3, 50, 16}, at::kFloat, 34)))
      << "4 query heads over 3 key/value heads";
  EXPECT_FALSE(causal_attention_applies(q, k.narrow(2, 0, 40), v.narrow(2, 0, 40))) << "keys shorter than queries";
  EXPECT_TRUE(causal_attention_applies(q, k, v));
}

}  // namespace
}  // namespace freehold::kernels
