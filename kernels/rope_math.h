// RoPE's per-pair math and index layout, shared by the CPU kernel (rope_cpu.cpp) and the CUDA kernel (rope.cu):
// the CPU runs the very code the GPU runs, and only the thread layout is GPU-only. Torch-free and CUDA-free.
//
// Hugging Face's convention (rotate_half): the head dimension D is split in halves and element i pairs with element
// i + D/2, not the interleaved pairs (2i, 2i + 1) of the RoFormer paper. For x (D), cos (D), sin (D) of element
// type T and h = D/2, i < h, the spec (rope_reference: x * cos + rotate_half(x) * sin, rotate_half(x) = [−x2, x1])
// rounds every product and the sum to T, as ATen does for T = float, bf16 and fp16:
//   y_i     = T(float(T(x_i · c_i))         + float(T(−x_{i+h} · s_i)))
//   y_{i+h} = T(float(T(x_{i+h} · c_{i+h})) + float(T(x_i · s_{i+h})))
// The backward is the transpose of this linear map (what autograd gives the spec, with the same roundings):
//   dx_i     = T(float(T(dy_i · c_i))         + float(T(dy_{i+h} · s_{i+h})))
//   dx_{i+h} = T(float(T(dy_{i+h} · c_{i+h})) + float(T(−dy_i · s_i)))
// For RotaryEmbedding's cos/sin (both halves equal) that is the rotation by −θ; rope_first/rope_second below do not
// assume equal halves. Negation is exact and round-to-nearest-even is symmetric, so T(−a · b) = −T(a · b), and the
// transposed formulas round exactly as autograd's gradient of the spec does. The transpose of the transpose is the
// forward, so the backward of either direction is the other (rope.cpp uses that for double backward).
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace freehold::kernels {

enum class RopeDirection : int {
  kForward,     // y = x · cos + rotate_half(x) · sin
  kTransposed,  // the forward's transpose: dx from dy
};

// T(float(T(a · c)) + float(T(b · s))): one output element, every step rounded as the reference rounds it.
template <typename T>
FREEHOLD_HOST_DEVICE inline T rope_element(T a, T c, T b, T s) {
  const float ac = static_cast<float>(T(mul_rn(static_cast<float>(a), static_cast<float>(c))));
  const float bs = static_cast<float>(T(mul_rn(static_cast<float>(b), static_cast<float>(s))));
  return T(add_rn(ac, bs));
}

template <typename T>
FREEHOLD_HOST_DEVICE inline T rope_negate(T a) {
  return T(-static_cast<float>(a));  // exact
}

// The two elements of one pair (x1 = x_i, x2 = x_{i+h}) in `direction`, with c1 = cos_i, c2 = cos_{i+h},
// s1 = sin_i, s2 = sin_{i+h}: the formulas at the top of this file. Two functions rather than one returning a
// struct: g++ vectorizes the CPU kernel's row loop over these, not over a struct of bf16 (kernels_bench rope).
template <RopeDirection kDirection, typename T>
FREEHOLD_HOST_DEVICE inline T rope_first(T x1, T x2, T c1, T s1, T s2) {
  if constexpr (kDirection == RopeDirection::kForward) {
    return rope_element(x1, c1, rope_negate(x2), s1);  // x1·c1 − x2·s1
  } else {
    return rope_element(x1, c1, x2, s2);  // dy1·c1 + dy2·s2
  }
}

template <RopeDirection kDirection, typename T>
FREEHOLD_HOST_DEVICE inline T rope_second(T x1, T x2, T c2, T s1, T s2) {
  if constexpr (kDirection == RopeDirection::kForward) {
    return rope_element(x2, c2, x1, s2);  // x2·c2 + x1·s2
  } else {
    return rope_element(x2, c2, rope_negate(x1), s1);  // dy2·c2 − dy1·s1
  }
}

// Where the rows of x (B, H, T, D), y (B, H, T, D) and cos/sin (B, T, D) start, in elements. D is contiguous in all
// four tensors (the binding copies a tensor whose D stride is not 1); the other strides are free, so
// q.transpose(1, 2), whose memory is (B, T, H, D), is read in place, and a (1, T, D) cos broadcasts with stride 0.
struct RopeLayout {
  int64_t B = 0, H = 0, T = 0, D = 0;
  int64_t x_stride_b = 0, x_stride_h = 0, x_stride_t = 0;
  int64_t y_stride_b = 0, y_stride_h = 0, y_stride_t = 0;
  int64_t cs_stride_b = 0, cs_stride_t = 0;  // cos and sin share one layout

  FREEHOLD_HOST_DEVICE int64_t rows() const { return B * T * H; }
};

struct RopeRowOffsets {
  int64_t x = 0, y = 0, cs = 0;
};

// Row `row` of B·T·H, numbered (b, t, h) with h fastest: the H heads of one position share their cos/sin row, and
// for the model's q.transpose(1, 2) this is x's memory order.
FREEHOLD_HOST_DEVICE inline RopeRowOffsets rope_row_offsets(const RopeLayout& l, int64_t row) {
  const int64_t h = row % l.H;
  const int64_t bt = row / l.H;
  const int64_t t = bt % l.T;
  const int64_t b = bt / l.T;
  return {b * l.x_stride_b + h * l.x_stride_h + t * l.x_stride_t, b * l.y_stride_b + h * l.y_stride_h + t * l.y_stride_t,
          b * l.cs_stride_b + t * l.cs_stride_t};
}

}  // namespace freehold::kernels
