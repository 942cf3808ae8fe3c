// The CPU RoPE kernel: the pair math of rope_math.h over the B·T·H rows, in parallel, vectorized along a row.
#include "kernels/rope_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "kernels/bf16_bits.h"

namespace freehold::kernels {
namespace {

using Bf16 = Bf16Bits;  // kernels/bf16_bits.h

// Rows per task are chosen so that a task touches at least this many elements; smaller tasks cost more in the
// pool than they save.
constexpr int64_t kElementsPerTask = 1 << 15;

// One row of D = 2·half elements: y (D) from x (D), cos (D), sin (D), by the pair math the GPU runs (rope_math.h).
// y does not overlap x; the restrict lets g++ vectorize. always_inline: inlined into each target clone below, it
// is compiled for that clone's instruction set (g++ otherwise calls one baseline copy from all of them).
template <RopeDirection kDirection, typename T>
[[gnu::always_inline]] inline void rotate_row(const T* __restrict__ x, T* __restrict__ y, const T* __restrict__ cos,
                                              const T* __restrict__ sin, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const T x1 = x[i], x2 = x[i + half];
    y[i] = rope_first<kDirection>(x1, x2, cos[i], sin[i], sin[i + half]);
    y[i + half] = rope_second<kDirection>(x1, x2, cos[i + half], sin[i], sin[i + half]);
  }
}

// The same with y = x: each pair is read before it is written and no two pairs share an element.
template <RopeDirection kDirection, typename T>
[[gnu::always_inline]] inline void rotate_row_in_place(T* x, const T* __restrict__ cos, const T* __restrict__ sin,
                                                       int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const T x1 = x[i], x2 = x[i + half];
    x[i] = rope_first<kDirection>(x1, x2, cos[i], sin[i], sin[i + half]);
    x[i + half] = rope_second<kDirection>(x1, x2, cos[i + half], sin[i], sin[i + half]);
  }
}

// Rows [begin, end). Compiled three times and picked by the CPU at load time (an ifunc): the ATen ops it replaces
// run AVX2/AVX-512 code, and at the baseline's SSE2 the bf16 roundings made the fused kernel slower than they are
// (kernels_bench rope). Every clone does the same IEEE operations in the same order (no FMA: -ffp-contract=off),
// so the bits do not depend on the clone.
template <RopeDirection kDirection, typename T>
__attribute__((target_clones("avx512f", "avx2", "default"))) void rotate_row_range(
    const T* x, T* y, const T* cos, const T* sin, const RopeLayout& l, int64_t begin, int64_t end) {
  const int64_t half = l.D / 2;
  for (int64_t row = begin; row < end; ++row) {
    const RopeRowOffsets o = rope_row_offsets(l, row);
    if (x == y) {
      rotate_row_in_place<kDirection>(y + o.y, cos + o.cs, sin + o.cs, half);
    } else {
      rotate_row<kDirection>(x + o.x, y + o.y, cos + o.cs, sin + o.cs, half);
    }
  }
}

template <RopeDirection kDirection, typename T>
void rotate_rows(const T* x, T* y, const T* cos, const T* sin, const RopeLayout& l) {
  const int64_t grain = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(l.D, 1));
  at::parallel_for(0, l.rows(), grain, [&](int64_t begin, int64_t end) {
    rotate_row_range<kDirection>(x, y, cos, sin, l, begin, end);
  });
}

template <typename T>
void rotate(RopeDirection direction, const void* x, void* y, const void* cos, const void* sin, const RopeLayout& l) {
  const T* xt = static_cast<const T*>(x);
  const T* ct = static_cast<const T*>(cos);
  const T* st = static_cast<const T*>(sin);
  T* yt = static_cast<T*>(y);
  if (direction == RopeDirection::kForward) return rotate_rows<RopeDirection::kForward>(xt, yt, ct, st, l);
  return rotate_rows<RopeDirection::kTransposed>(xt, yt, ct, st, l);
}

}  // namespace

void rope_rotate_cpu(ElementType type, RopeDirection direction, const void* x, void* y, const void* cos,
                     const void* sin, const RopeLayout& layout) {
  FH_CHECK(layout.B >= 0 && layout.H >= 0 && layout.T >= 0 && layout.D >= 0 && layout.D % 2 == 0, "B ", layout.B,
           ", H ", layout.H, ", T ", layout.T, ", D ", layout.D);
  if (layout.rows() == 0 || layout.D == 0) return;
  switch (type) {
    case ElementType::kF32:
      return rotate<float>(direction, x, y, cos, sin, layout);
    case ElementType::kBF16:
      return rotate<Bf16>(direction, x, y, cos, sin, layout);
    case ElementType::kF16:
      return rotate<c10::Half>(direction, x, y, cos, sin, layout);
  }
  FH_CHECK(false, "unknown ElementType ", static_cast<int>(type));
}

}  // namespace freehold::kernels
