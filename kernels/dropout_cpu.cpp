// The CPU dropout kernels: dropout_math.h's counter-based mask over blocks of element pairs, in parallel.
#include "kernels/dropout_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "kernels/bf16_bits.h"
#include "kernels/dropout_math.h"

namespace freehold::kernels {
namespace {

// Pairs per task: a task should touch tens of thousands of elements, or the pool costs more than it saves.
constexpr int64_t kPairsPerTask = 1 << 14;

inline float keep_factor(uint64_t word, uint64_t threshold, float scale) { return word < threshold ? scale : 0.0f; }

// Elements [2·begin, 2·end) ∩ [0, n): the pairs of blocks begin..end−1. always_inline: compiled into each target
// clone below for its instruction set. The per-block math is integer only and the one float multiply is the same in
// every clone, so the clones give the same bits.
template <typename T>
[[gnu::always_inline]] inline void apply_pairs(uint64_t seed, uint64_t threshold, float scale, const T* x, T* y,
                                               int64_t n, int64_t begin, int64_t end) {
  const int64_t full_end = std::min(end, n / 2);  // blocks whose two elements both exist
  for (int64_t k = begin; k < full_end; ++k) {
    const uint64_t block = dropout_block(seed, static_cast<uint64_t>(k));
    const float a = static_cast<float>(x[2 * k]), b = static_cast<float>(x[2 * k + 1]);
    y[2 * k] = T(a * keep_factor(block & 0xFFFFFFFFULL, threshold, scale));
    y[2 * k + 1] = T(b * keep_factor(block >> 32, threshold, scale));
  }
  if (end > full_end && 2 * full_end < n) {  // n odd: the last block's first word only
    const uint64_t block = dropout_block(seed, static_cast<uint64_t>(full_end));
    y[2 * full_end] = T(static_cast<float>(x[2 * full_end]) * keep_factor(block & 0xFFFFFFFFULL, threshold, scale));
  }
}

template <typename T>
__attribute__((target_clones("avx512f", "avx2", "default"))) void apply_range(uint64_t seed, uint64_t threshold,
                                                                                 float scale, const T* x, T* y,
                                                                                 int64_t n, int64_t begin,
                                                                                 int64_t end) {
  apply_pairs<T>(seed, threshold, scale, x, y, n, begin, end);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void mask_range(uint64_t seed, uint64_t threshold,
                                                                                uint8_t* keep, int64_t n,
                                                                                int64_t begin, int64_t end) {
  const int64_t full_end = std::min(end, n / 2);
  for (int64_t k = begin; k < full_end; ++k) {
    const uint64_t block = dropout_block(seed, static_cast<uint64_t>(k));
    keep[2 * k] = static_cast<uint8_t>((block & 0xFFFFFFFFULL) < threshold);
    keep[2 * k + 1] = static_cast<uint8_t>((block >> 32) < threshold);
  }
  if (end > full_end && 2 * full_end < n) {
    keep[2 * full_end] = static_cast<uint8_t>((dropout_block(seed, static_cast<uint64_t>(full_end)) & 0xFFFFFFFFULL) <
                                              threshold);
  }
}

int64_t blocks_of(int64_t n) { return (n + 1) / 2; }

template <typename T>
void apply(uint64_t seed, uint64_t threshold, float scale, const void* x, void* y, int64_t n) {
  const T* xt = static_cast<const T*>(x);
  T* yt = static_cast<T*>(y);
  at::parallel_for(0, blocks_of(n), kPairsPerTask, [&](int64_t begin, int64_t end) {
    apply_range<T>(seed, threshold, scale, xt, yt, n, begin, end);
  });
}

}  // namespace

void dropout_mask_cpu(uint64_t seed, uint64_t threshold, uint8_t* keep, int64_t n) {
  FH_CHECK(n >= 0 && threshold >= 1 && threshold <= (1ULL << 32), "n ", n, ", threshold ", threshold);
  at::parallel_for(0, blocks_of(n), kPairsPerTask,
                   [&](int64_t begin, int64_t end) { mask_range(seed, threshold, keep, n, begin, end); });
}

void dropout_apply_cpu(ElementType type, uint64_t seed, uint64_t threshold, float scale, const void* x, void* y,
                       int64_t n) {
  FH_CHECK(n >= 0 && threshold >= 1 && threshold <= (1ULL << 32), "n ", n, ", threshold ", threshold);
  if (n == 0) return;
  switch (type) {
    case ElementType::kF32:
      return apply<float>(seed, threshold, scale, x, y, n);
    case ElementType::kBF16:
      return apply<Bf16Bits>(seed, threshold, scale, x, y, n);
    case ElementType::kF16:
      return apply<c10::Half>(seed, threshold, scale, x, y, n);
  }
  FH_CHECK(false, "unknown ElementType ", static_cast<int>(type));
}

}  // namespace freehold::kernels
