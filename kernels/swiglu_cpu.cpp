// The CPU SwiGLU kernels: swiglu_forward_span / swiglu_backward_span (swiglu_math.h) over chunks of elements, in
// parallel.
#include "kernels/swiglu_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "kernels/bf16_bits.h"

namespace freehold::kernels {
namespace {

using Bf16 = Bf16Bits;  // kernels/bf16_bits.h

// The span loops for each element type, compiled twice: for AVX2 (8 floats a vector) and for the baseline x86-64
// this build targets (SSE2, 4), picked at load time by the CPU (GCC's target_clones). ATen's own elementwise kernels
// dispatch the same way; at SSE2 the fused bf16 kernel was slower than ATen's two ops (kernels_bench swiglu). AVX2
// adds no FMA here (-ffp-contract=off), so both clones give the same bits.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FREEHOLD_SWIGLU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FREEHOLD_SWIGLU_CLONES
#endif

FREEHOLD_SWIGLU_CLONES void forward_span(const float* g, const float* u, float* y, int64_t n) {
  swiglu_forward_span(g, u, y, n);
}
FREEHOLD_SWIGLU_CLONES void forward_span(const Bf16* g, const Bf16* u, Bf16* y, int64_t n) {
  swiglu_forward_span(g, u, y, n);
}
FREEHOLD_SWIGLU_CLONES void forward_span(const c10::Half* g, const c10::Half* u, c10::Half* y, int64_t n) {
  swiglu_forward_span(g, u, y, n);
}
FREEHOLD_SWIGLU_CLONES void backward_span(const float* g, const float* u, const float* dy, float* dg, float* du,
                                          int64_t n) {
  swiglu_backward_span(g, u, dy, dg, du, n);
}
FREEHOLD_SWIGLU_CLONES void backward_span(const Bf16* g, const Bf16* u, const Bf16* dy, Bf16* dg, Bf16* du,
                                          int64_t n) {
  swiglu_backward_span(g, u, dy, dg, du, n);
}
FREEHOLD_SWIGLU_CLONES void backward_span(const c10::Half* g, const c10::Half* u, const c10::Half* dy, c10::Half* dg,
                                          c10::Half* du, int64_t n) {
  swiglu_backward_span(g, u, dy, dg, du, n);
}

// A task handles at least this many elements; smaller tasks cost more in the pool than they save.
constexpr int64_t kElementsPerTask = 1 << 15;

// Calls span(row, column, n) for the row pieces that make up flat elements [begin, end) of a (rows, I) layout.
template <typename Span>
void for_each_piece(int64_t begin, int64_t end, int64_t I, const Span& span) {
  int64_t row = begin / I, column = begin % I;
  for (int64_t i = begin; i < end;) {
    const int64_t n = std::min(end - i, I - column);
    span(row, column, n);
    i += n;
    ++row;
    column = 0;
  }
}

template <typename T>
void forward(const T* g, const T* u, T* y, const SwigluLayout& l) {
  at::parallel_for(0, l.rows * l.I, kElementsPerTask, [&](int64_t begin, int64_t end) {
    for_each_piece(begin, end, l.I, [&](int64_t r, int64_t c, int64_t n) {
      forward_span(g + r * l.g_row_stride + c, u + r * l.u_row_stride + c, y + r * l.I + c, n);
    });
  });
}

template <typename T>
void backward(const T* g, const T* u, const T* dy, T* dg, T* du, const SwigluLayout& l) {
  at::parallel_for(0, l.rows * l.I, kElementsPerTask, [&](int64_t begin, int64_t end) {
    for_each_piece(begin, end, l.I, [&](int64_t r, int64_t c, int64_t n) {
      backward_span(g + r * l.g_row_stride + c, u + r * l.u_row_stride + c, dy + r * l.dy_row_stride + c,
                           dg + r * l.I + c, du + r * l.I + c, n);
    });
  });
}

void check_layout(const SwigluLayout& l) {
  FH_CHECK(l.rows >= 0 && l.I >= 0 && l.g_row_stride >= 0 && l.u_row_stride >= 0 && l.dy_row_stride >= 0, "rows ",
           l.rows, ", I ", l.I, ", row strides g ", l.g_row_stride, ", u ", l.u_row_stride, ", dy ", l.dy_row_stride);
}

}  // namespace

void swiglu_forward_cpu(ElementType type, const void* g, const void* u, void* y, const SwigluLayout& layout) {
  check_layout(layout);
  if (layout.rows == 0 || layout.I == 0) return;
  switch (type) {
    case ElementType::kF32:
      return forward(static_cast<const float*>(g), static_cast<const float*>(u), static_cast<float*>(y), layout);
    case ElementType::kBF16:
      return forward(static_cast<const Bf16*>(g), static_cast<const Bf16*>(u), static_cast<Bf16*>(y), layout);
    case ElementType::kF16:
      return forward(static_cast<const c10::Half*>(g), static_cast<const c10::Half*>(u), static_cast<c10::Half*>(y),
                     layout);
  }
  FH_CHECK(false, "unknown ElementType ", static_cast<int>(type));
}

void swiglu_backward_cpu(ElementType type, const void* g, const void* u, const void* dy, void* dg, void* du,
                         const SwigluLayout& layout) {
  check_layout(layout);
  if (layout.rows == 0 || layout.I == 0) return;
  switch (type) {
    case ElementType::kF32:
      return backward(static_cast<const float*>(g), static_cast<const float*>(u), static_cast<const float*>(dy),
                      static_cast<float*>(dg), static_cast<float*>(du), layout);
    case ElementType::kBF16:
      return backward(static_cast<const Bf16*>(g), static_cast<const Bf16*>(u), static_cast<const Bf16*>(dy),
                      static_cast<Bf16*>(dg), static_cast<Bf16*>(du), layout);
    case ElementType::kF16:
      return backward(static_cast<const c10::Half*>(g), static_cast<const c10::Half*>(u),
                      static_cast<const c10::Half*>(dy), static_cast<c10::Half*>(dg), static_cast<c10::Half*>(du),
                      layout);
  }
  FH_CHECK(false, "unknown ElementType ", static_cast<int>(type));
}

}  // namespace freehold::kernels
