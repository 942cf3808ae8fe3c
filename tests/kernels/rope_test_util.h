// Inputs shared by the RoPE tests (rope_test.cpp, rope_cuda_test.cpp): cos/sin as the model makes them, and x in
// the strided layout the model passes.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/sin.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <utility>

#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels::testing {

// cos, sin (B, T, D) as model/rotary_embedding.cpp makes them: angles p · 10000^(−2i/D) in fp32 with both halves
// equal, rounded to `dtype` at the end. Positions run 0 .. B·T − 1 over the batch, so every row differs.
inline std::pair<at::Tensor, at::Tensor> hf_cos_sin(int64_t B, int64_t T, int64_t D, at::ScalarType dtype) {
  const at::Tensor i = at::arange(0, D, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat);
  const at::Tensor inv_freq = 1.0 / at::pow(10000.0, i / static_cast<double>(D));  // (D/2)
  const at::Tensor positions = at::arange(B * T, at::TensorOptions().dtype(at::kFloat)).reshape({B, T});
  const at::Tensor freqs = positions.unsqueeze(-1) * inv_freq;  // (B, T, D/2)
  const at::Tensor emb = at::cat({freqs, freqs}, -1);           // (B, T, D)
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

// x (B, H, T, D) as the model passes q: a (B, T, H, D) tensor transposed, so B, H and T are strided.
inline at::Tensor transposed_q(int64_t B, int64_t H, int64_t T, int64_t D, at::ScalarType dtype, uint64_t seed) {
  return seeded_randn({B, T, H, D}, dtype, seed).transpose(1, 2);
}

// Same dtype, shape and bits in every element (−0 and +0 differ).
inline void expect_same_bits(const at::Tensor& actual, const at::Tensor& expected) {
  ASSERT_EQ(actual.scalar_type(), expected.scalar_type());
  ASSERT_EQ(actual.sizes(), expected.sizes());
  EXPECT_EQ(count_bit_differences(actual.cpu(), expected.cpu()), 0);
}

}  // namespace freehold::kernels::testing
