// RMSNorm's per-row math, shared by the CPU kernel (rms_norm_cpu.cpp) and the CUDA kernel (rms_norm.cu): the CPU
// runs the very code the GPU runs, and only the thread layout is GPU-only. Torch-free and CUDA-free.
//
// Semantics are Hugging Face LlamaRMSNorm (also Mistral, Qwen2, Qwen3), for x (C) and weight (C) of element type T:
//   inv_rms = 1 / sqrt(mean(float(x)^2) + eps)     in fp32
//   y       = T(float(weight) * float(T(float(x) * inv_rms)))
// The normalized row is rounded to T *before* the weight multiply, as transformers does.
//
// The sum of squares is split the way one GPU warp does it: lane l (of kRmsNormLanes) adds elements l, l + 32,
// l + 64, ... in order, then the lanes are combined by a butterfly. The CPU does the same additions in the same
// order, so both produce identical bits.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace freehold::kernels {

inline constexpr int kRmsNormLanes = 32;  // one warp

// Lane `lane`'s share of the sum of squares of row x (C), accumulated in fp32.
template <typename T>
FREEHOLD_HOST_DEVICE inline float rms_norm_lane_sum_squares(const T* x, int64_t C, int lane) {
  float sum = 0.0f;
  for (int64_t c = lane; c < C; c += kRmsNormLanes) {
    const float v = static_cast<float>(x[c]);
    sum = add_rn(sum, mul_rn(v, v));
  }
  return sum;
}

// The lanes' butterfly, written out: the GPU does it with __shfl_xor_sync at offsets 16, 8, 4, 2, 1, after which
// lane i holds partial[i] + partial[i ^ offset]. Every lane ends with these same bits (fp addition commutes).
// Overwrites `partial`.
FREEHOLD_HOST_DEVICE inline float rms_norm_combine_lanes(float (&partial)[kRmsNormLanes]) {
  for (int offset = kRmsNormLanes / 2; offset > 0; offset /= 2) {
    for (int i = 0; i < offset; ++i) partial[i] = add_rn(partial[i], partial[i + offset]);
  }
  return partial[0];
}

// 1 / sqrt(sum_squares / C + eps), each step correctly rounded in fp32.
FREEHOLD_HOST_DEVICE inline float rms_norm_inv_rms(float sum_squares, int64_t C, float eps) {
  const float mean = div_rn(sum_squares, static_cast<float>(C));
  return div_rn(1.0f, sqrt_rn(add_rn(mean, eps)));
}

// One output element: normalize in fp32, round to T, then multiply by the weight (in fp32, rounded to T), which is
// what `weight * hidden.to(input_dtype)` computes for T = float, bf16 and fp16 alike.
template <typename T>
FREEHOLD_HOST_DEVICE inline T rms_norm_apply(T x, T weight, float inv_rms) {
  const T normed = T(mul_rn(static_cast<float>(x), inv_rms));
  return T(mul_rn(static_cast<float>(weight), static_cast<float>(normed)));
}

// A whole row by one thread, in the warp's order: x (C), weight (C) -> y (C). The CPU kernel's body.
template <typename T>
FREEHOLD_HOST_DEVICE inline void rms_norm_row(const T* x, const T* weight, T* y, int64_t C, float eps) {
  float partial[kRmsNormLanes];
  for (int lane = 0; lane < kRmsNormLanes; ++lane) partial[lane] = rms_norm_lane_sum_squares(x, C, lane);
  const float inv_rms = rms_norm_inv_rms(rms_norm_combine_lanes(partial), C, eps);
  for (int64_t c = 0; c < C; ++c) y[c] = rms_norm_apply(x[c], weight[c], inv_rms);
}

// ─── backward ────────────────────────────────────────────────────────────────────────────────────────────────────
//
// For dy (C) of T, with n = float(x) · inv_rms and normed = T(n) as in the forward:
//   dn_c  = float(T(float(dy_c) · float(weight_c)))           (the reference's dy * weight, in T)
//   dot   = Σ_c dn_c · float(x_c)                             lane-split and butterflied like the sum of squares
//   dx_c  = T(dn_c · inv_rms − (dot · inv_rms³ / C) · float(x_c))
//   dw_c  = Σ_rows float(T(float(dy_c) · float(normed_c)))    in row blocks of kRmsNormRowsPerBlock, blocks in order
// The row-block split of dw is the same on the CPU and the GPU, so dw is bit-identical too.

inline constexpr int64_t kRmsNormRowsPerBlock = 64;

template <typename T>
FREEHOLD_HOST_DEVICE inline float rms_norm_dn(T dy, T weight) {
  return static_cast<float>(T(mul_rn(static_cast<float>(dy), static_cast<float>(weight))));
}

// Lane `lane`'s share of Σ dn_c · x_c.
template <typename T>
FREEHOLD_HOST_DEVICE inline float rms_norm_lane_dot(const T* x, const T* dy, const T* weight, int64_t C, int lane) {
  float sum = 0.0f;
  for (int64_t c = lane; c < C; c += kRmsNormLanes) {
    sum = add_rn(sum, mul_rn(rms_norm_dn(dy[c], weight[c]), static_cast<float>(x[c])));
  }
  return sum;
}

// The factor of x_c in dx: dot · inv_rms³ / C.
FREEHOLD_HOST_DEVICE inline float rms_norm_dx_coefficient(float dot, float inv_rms, int64_t C) {
  return div_rn(mul_rn(mul_rn(dot, inv_rms), mul_rn(inv_rms, inv_rms)), static_cast<float>(C));
}

template <typename T>
FREEHOLD_HOST_DEVICE inline T rms_norm_dx(T x, T dy, T weight, float inv_rms, float coefficient) {
  return T(add_rn(mul_rn(rms_norm_dn(dy, weight), inv_rms), -mul_rn(coefficient, static_cast<float>(x))));
}

// One row's contribution to dw_c.
template <typename T>
FREEHOLD_HOST_DEVICE inline float rms_norm_dw_term(T x, T dy, float inv_rms) {
  const T normed = T(mul_rn(static_cast<float>(x), inv_rms));
  return static_cast<float>(T(mul_rn(static_cast<float>(dy), static_cast<float>(normed))));
}

// A whole row's dx by one thread, in the warp's order; returns inv_rms for the dw pass.
template <typename T>
FREEHOLD_HOST_DEVICE inline float rms_norm_backward_row(const T* x, const T* weight, const T* dy, T* dx, int64_t C,
                                                        float eps) {
  float partial[kRmsNormLanes];
  for (int lane = 0; lane < kRmsNormLanes; ++lane) partial[lane] = rms_norm_lane_sum_squares(x, C, lane);
  const float inv_rms = rms_norm_inv_rms(rms_norm_combine_lanes(partial), C, eps);
  for (int lane = 0; lane < kRmsNormLanes; ++lane) partial[lane] = rms_norm_lane_dot(x, dy, weight, C, lane);
  const float coefficient = rms_norm_dx_coefficient(rms_norm_combine_lanes(partial), inv_rms, C);
  for (int64_t c = 0; c < C; ++c) dx[c] = rms_norm_dx(x[c], dy[c], weight[c], inv_rms, coefficient);
  return inv_rms;
}

}  // namespace freehold::kernels
