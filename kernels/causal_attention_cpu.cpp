// The attention blocks' row math; see causal_attention_cpu.h.
#include "kernels/causal_attention_cpu.h"

#include <algorithm>

#include "kernels/cross_entropy_math.h"  // exp_nonpositive, log_at_least_one, max_f
#include "kernels/host_device.h"

namespace freehold::kernels {
namespace {

constexpr int kLanes = 16;  // one AVX-512 register of fp32; AVX2 runs it as two

__attribute__((always_inline)) inline float combine_max(float* partial) {
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int l = 0; l < width; ++l) partial[l] = max_f(partial[l], partial[l + width]);
  }
  return partial[0];
}

__attribute__((always_inline)) inline float combine_sum(float* partial) {
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int l = 0; l < width; ++l) partial[l] = add_rn(partial[l], partial[l + width]);
  }
  return partial[0];
}

// One row: s (n kept, then keys − n masked). Returns the sum of exp(s − m), writes exp(s − m) and zeros, sets m.
// Inlined into each clone below, so that it runs in the clone's instruction set.
__attribute__((always_inline)) inline float softmax_row(float* s, int64_t n, int64_t keys, float* m_out) {
  alignas(64) float partial[kLanes];
  std::fill(partial, partial + kLanes, bits_to_float(0xff800000u));  // -inf
  int64_t base = 0;
  for (; base + kLanes <= n; base += kLanes) {
    for (int l = 0; l < kLanes; ++l) partial[l] = max_f(partial[l], s[base + l]);
  }
  for (int l = 0; base + l < n; ++l) partial[l] = max_f(partial[l], s[base + l]);
  // A NaN in a lane is dropped by max_f's comparison, but it still reaches the sum below.
  const float m = combine_max(partial);
  std::fill(partial, partial + kLanes, 0.0f);
  for (base = 0; base + kLanes <= n; base += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float p = exp_nonpositive(add_rn(s[base + l], -m));
      s[base + l] = p;
      partial[l] = add_rn(partial[l], p);
    }
  }
  for (int l = 0; base + l < n; ++l) {
    const float p = exp_nonpositive(add_rn(s[base + l], -m));
    s[base + l] = p;
    partial[l] = add_rn(partial[l], p);
  }
  std::fill(s + n, s + keys, 0.0f);
  *m_out = m;
  return combine_sum(partial);
}

}  // namespace

// Compiled three times and picked by the CPU at load time; every clone does the same IEEE operations in the same
// order (-ffp-contract=off), so the bits do not depend on the clone.
__attribute__((target_clones("avx512f", "avx2", "default"))) void attention_softmax_forward_rows(
    float* scores, int64_t rows, int64_t keys, int64_t q0, float* sum, float* lse) {
  for (int64_t i = 0; i < rows; ++i) {
    float m = 0.0f;
    sum[i] = softmax_row(scores + i * keys, q0 + i + 1, keys, &m);
    lse[i] = add_rn(m, log_at_least_one(sum[i]));
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void attention_softmax_backward_rows(
    float* scores, float* grad, int64_t rows, int64_t keys, int64_t q0, const float* lse, const float* delta) {
  for (int64_t i = 0; i < rows; ++i) {
    float* s = scores + i * keys;
    float* g = grad + i * keys;
    const int64_t n = q0 + i + 1;
    const float l = lse[i], d = delta[i];
    for (int64_t j = 0; j < n; ++j) {
      const float p = exp_nonpositive(add_rn(s[j], -l));
      s[j] = p;
      g[j] = mul_rn(p, add_rn(g[j], -d));
    }
    std::fill(s + n, s + keys, 0.0f);
    std::fill(g + n, g + keys, 0.0f);
  }
}

}  // namespace freehold::kernels
