// Cross-entropy's per-row math, shared by the CPU kernel (cross_entropy_cpu.cpp) and the CUDA kernel
// (cross_entropy.cu): the CPU runs the very code the GPU runs; only the thread layout is GPU-only. Torch-free and
// CUDA-free.
//
// For one row of logits z (V) of element type T and a target t (or the ignore index), in fp32:
//   M    = max_j z_j
//   S    = Σ_j exp(z_j − M)                    lane-split as below
//   loss = (M − z_t) + log(S)                   (0 for an ignored row)
//   dz_j = exp((z_j − M) − log(S)) − [j == t]   d loss / d z_j, rounded to T (0 for an ignored row)
//
// The sum is split the way one GPU block of kCrossEntropyLanes threads does it: lane l adds elements l, l + 256,
// l + 512, ... in order, then the lanes are combined by a tree (offset 128, 64, ..., 1). exp and log are the
// polynomials below, built from correctly rounded fp32 operations only (host_device.h), so the CPU and the GPU
// produce identical bits, and the CPU loops over 256 independent lanes vectorize.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/host_device.h"

namespace freehold::kernels {

inline constexpr int kCrossEntropyLanes = 256;  // threads of one CUDA block, one row per block

FREEHOLD_HOST_DEVICE inline float bits_to_float(uint32_t b) {
  float f;
  memcpy(&f, &b, sizeof f);
  return f;
}

FREEHOLD_HOST_DEVICE inline uint32_t float_to_bits(float f) {
  uint32_t b;
  memcpy(&b, &f, sizeof b);
  return b;
}

FREEHOLD_HOST_DEVICE inline float max_f(float a, float b) { return a > b ? a : b; }

// exp(x) for x <= 0 (all the kernel needs: z − M and z − lse are never positive), within 3 ulp of the true value
// for x >= −87; below that (and for −inf) it returns 0, where exp underflows fp32's normal range anyway.
// Cody–Waite reduction x = n·ln2 + r, |r| <= ln2/2, then a degree-6 Taylor polynomial in Horner form and
// 2^n written into the exponent bits.
FREEHOLD_HOST_DEVICE inline float exp_nonpositive(float x) {
  const float xc = x < -87.0f ? -87.0f : x;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kRoundMagic = 12582912.0f;     // 1.5·2^23: adding it rounds to an integer (to nearest even)
  constexpr float kLn2Hi = 0.693145751953125f;   // ln 2 split so that n·kLn2Hi is exact for |n| < 2^11
  constexpr float kLn2Lo = 1.428606765330187e-06f;
  const float shifted = add_rn(mul_rn(xc, kLog2e), kRoundMagic);
  const float n = add_rn(shifted, -kRoundMagic);  // round(x / ln 2), in [-126, 0]
  const int32_t ni = static_cast<int32_t>(float_to_bits(shifted) - float_to_bits(kRoundMagic));
  const float r = add_rn(add_rn(xc, -mul_rn(n, kLn2Hi)), -mul_rn(n, kLn2Lo));
  float p = 1.3888889e-03f;  // 1/720
  p = add_rn(mul_rn(p, r), 8.3333333e-03f);
  p = add_rn(mul_rn(p, r), 4.1666667e-02f);
  p = add_rn(mul_rn(p, r), 1.6666667e-01f);
  p = add_rn(mul_rn(p, r), 0.5f);
  p = add_rn(mul_rn(p, r), 1.0f);
  p = add_rn(mul_rn(p, r), 1.0f);
  const float scale = bits_to_float(static_cast<uint32_t>(ni + 127) << 23);  // 2^n, n >= -126: a normal number
  const float y = mul_rn(p, scale);
  return x < -87.0f ? 0.0f : y;
}

// log(x) for finite x >= 1 (the kernel takes the log of a sum that includes exp(0) = 1), within 2 ulp.
// x = m·2^e with m in [√½, √2), log m = 2·atanh(s) = 2(s + s³/3 + ... + s¹¹/11), s = (m − 1)/(m + 1).
FREEHOLD_HOST_DEVICE inline float log_at_least_one(float x) {
  const uint32_t bits = float_to_bits(x);
  int32_t e = static_cast<int32_t>((bits >> 23) & 0xffu) - 127;
  float m = bits_to_float((bits & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  if (m > 1.41421356f) {
    m = mul_rn(m, 0.5f);
    e += 1;
  }
  const float s = div_rn(add_rn(m, -1.0f), add_rn(m, 1.0f));
  const float s2 = mul_rn(s, s);
  float p = 1.0f / 11.0f;
  p = add_rn(mul_rn(p, s2), 1.0f / 9.0f);
  p = add_rn(mul_rn(p, s2), 1.0f / 7.0f);
  p = add_rn(mul_rn(p, s2), 1.0f / 5.0f);
  p = add_rn(mul_rn(p, s2), 1.0f / 3.0f);
  p = add_rn(mul_rn(p, s2), 1.0f);
  const float log_m = mul_rn(mul_rn(2.0f, s), p);
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.428606765330187e-06f;
  const float ef = static_cast<float>(e);
  return add_rn(add_rn(mul_rn(ef, kLn2Hi), log_m), mul_rn(ef, kLn2Lo));
}

// Lane `lane`'s maximum over elements lane, lane + 256, ... of z (V). -inf when the lane has no element.
template <typename T>
FREEHOLD_HOST_DEVICE inline float cross_entropy_lane_max(const T* z, int64_t V, int lane) {
  float m = bits_to_float(0xff800000u);  // -inf
  for (int64_t j = lane; j < V; j += kCrossEntropyLanes) m = max_f(m, static_cast<float>(z[j]));
  return m;
}

// Lane `lane`'s share of Σ exp(z_j − M), accumulated in fp32 in element order.
template <typename T>
FREEHOLD_HOST_DEVICE inline float cross_entropy_lane_sum_exp(const T* z, int64_t V, float M, int lane) {
  float s = 0.0f;
  for (int64_t j = lane; j < V; j += kCrossEntropyLanes) {
    s = add_rn(s, exp_nonpositive(add_rn(static_cast<float>(z[j]), -M)));
  }
  return s;
}

// The block's tree over lanes, written out: at offset o, lane i < o takes partial[i] + partial[i + o]. The GPU
// does the same additions through shared memory. Overwrites `partial`.
FREEHOLD_HOST_DEVICE inline float cross_entropy_combine_sum(float (&partial)[kCrossEntropyLanes]) {
  for (int offset = kCrossEntropyLanes / 2; offset > 0; offset /= 2) {
    for (int i = 0; i < offset; ++i) partial[i] = add_rn(partial[i], partial[i + offset]);
  }
  return partial[0];
}

FREEHOLD_HOST_DEVICE inline float cross_entropy_combine_max(float (&partial)[kCrossEntropyLanes]) {
  for (int offset = kCrossEntropyLanes / 2; offset > 0; offset /= 2) {
    for (int i = 0; i < offset; ++i) partial[i] = max_f(partial[i], partial[i + offset]);
  }
  return partial[0];
}

// d loss / d z_j for one element, rounded to T: exp((z_j − M) − log S), minus 1 at the target. z_j − M is exact
// for the elements near the maximum that carry the probability, and log S is small, so this keeps p_j's relative
// error at a few ulp even when the logits are large (z_j − lse with lse rounded at the logits' magnitude would not).
template <typename T>
FREEHOLD_HOST_DEVICE inline T cross_entropy_grad(T z, float M, float log_s, bool is_target) {
  const float p = exp_nonpositive(add_rn(add_rn(static_cast<float>(z), -M), -log_s));
  return T(is_target ? add_rn(p, -1.0f) : p);
}

// loss = (M − z_t) + log S, in that order for the same reason.
FREEHOLD_HOST_DEVICE inline float cross_entropy_loss(float M, float log_s, float z_target) {
  return add_rn(add_rn(M, -z_target), log_s);
}

}  // namespace freehold::kernels
