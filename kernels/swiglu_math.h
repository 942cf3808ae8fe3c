// SwiGLU's per-element math, shared by the CPU kernel (swiglu_cpu.cpp) and the CUDA kernel (swiglu.cu): the CPU
// runs the very code the GPU runs, and only the thread layout is GPU-only. Torch-free and CUDA-free.
//
// The Llama-family MLP is down_proj(silu(gate) * up). For gate g and up u of element type T the spec
// (swiglu_reference: at::silu(g) * u) rounds twice, as ATen (and transformers' LlamaMLP) does:
//   s  = T(silu(g))                  silu = g / (1 + exp(−g)) in fp32, rounded to T by ATen's silu kernel
//   y  = T(float(s) · float(u))      the multiply, rounded again
// The fused forward keeps that double rounding, so that a bf16 run with fused kernels on computes the values the
// reference (and transformers) compute, not a more accurate product rounded once that differs from both in about
// a quarter of the elements (27% in bf16, swiglu_test.cpp KeepsTheReferencesDoubleRounding).
//
// The backward is the gradient autograd gives the spec, with the same intermediate roundings (mul's backward gives
// dy · u in T, which silu's backward then takes in fp32):
//   du = T(float(dy) · float(s))
//   ds = T(float(dy) · float(u))
//   dg = T((float(ds) · σ) · (1 + g · (1 − σ)))      σ = σ(g), everything in fp32
// For T = float every rounding to T is a no-op.
//
// exp is cross_entropy_math.h's polynomial built from correctly rounded fp32 operations (within 3 ulp), so the CPU
// and the GPU give identical bits; ATen uses Sleef's exp (CPU) or expf (GPU), so fp32 results differ from the
// reference by a few ulp, and T = bf16/fp16 results are the reference's bits except where the fp32 silu lies within
// those ulp of a rounding boundary of T: there silu rounds to the neighbour, and the product ends up to two ulp of T
// away (swiglu_test.cpp measures none of 1.6M elements in bf16, about 1 in 10^4 in fp16, forward and backward).
// It is only ever evaluated at −|g| ≤ 0, so σ and silu need no overflow guard: exp(−|g|) is in [0, 1].
#pragma once

#include <cstdint>

#include "kernels/cross_entropy_math.h"  // exp_nonpositive
#include "kernels/host_device.h"

namespace freehold::kernels {

// exp(−|g|), the one transcendental both σ(g) and silu(g) need. 0 below |g| = 87 (exp_nonpositive), where the
// true value is under 1.7e-38: σ(g) and silu(g) for g < −87 become 0 instead of a number below 1e-36 in size.
// NaN stays NaN.
FREEHOLD_HOST_DEVICE inline float swiglu_exp_neg_abs(float g) { return exp_nonpositive(g < 0.0f ? g : -g); }

// σ(g) from e = exp(−|g|): 1 / (1 + e) for g ≥ 0, e / (1 + e) for g < 0 (the same value, without exp(−g)
// overflowing for large negative g).
FREEHOLD_HOST_DEVICE inline float swiglu_sigmoid(float g, float e) {
  return div_rn(g >= 0.0f ? 1.0f : e, add_rn(1.0f, e));
}

// silu(g) = g · σ(g) from e = exp(−|g|), as ATen's g / (1 + exp(−g)) for g ≥ 0. At g = −inf it is NaN (−inf · 0),
// as ATen's −inf / inf is.
FREEHOLD_HOST_DEVICE inline float swiglu_silu(float g, float e) {
  // g · e is computed for either sign: a multiply inside the ?: would be a branch g++ does not if-convert (a
  // floating-point operation that may trap is not speculated), and the loops would stay scalar.
  const float g_e = mul_rn(g, e);
  return div_rn(g >= 0.0f ? g : g_e, add_rn(1.0f, e));
}

// y = T(float(T(silu(g))) · float(u)): one output element of the forward.
template <typename T>
FREEHOLD_HOST_DEVICE inline T swiglu_forward_element(T g, T u) {
  const float gf = static_cast<float>(g);
  const T s = T(swiglu_silu(gf, swiglu_exp_neg_abs(gf)));
  return T(mul_rn(static_cast<float>(s), static_cast<float>(u)));
}

// du = T(float(dy) · float(T(silu(g)))).
template <typename T>
FREEHOLD_HOST_DEVICE inline T swiglu_du_element(T g, T dy, float e) {
  const T s = T(swiglu_silu(static_cast<float>(g), e));
  return T(mul_rn(static_cast<float>(dy), static_cast<float>(s)));
}

// dg = T((float(T(dy · u)) · σ) · (1 + g · (1 − σ))), in ATen's silu_backward order.
template <typename T>
FREEHOLD_HOST_DEVICE inline T swiglu_dg_element(T g, T u, T dy, float e) {
  const float gf = static_cast<float>(g);
  const float ds = static_cast<float>(T(mul_rn(static_cast<float>(dy), static_cast<float>(u))));
  const float sigma = swiglu_sigmoid(gf, e);
  return T(mul_rn(mul_rn(ds, sigma), add_rn(1.0f, mul_rn(gf, add_rn(1.0f, -sigma)))));
}

// n consecutive elements of one row by one thread: y (n) from g (n), u (n). The CPU kernel's body; the restricts
// (outputs never alias inputs) let g++ vectorize it.
template <typename T>
FREEHOLD_HOST_DEVICE inline void swiglu_forward_span(const T* __restrict__ g, const T* __restrict__ u,
                                                     T* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = swiglu_forward_element(g[i], u[i]);
}

// The backward of n consecutive elements: dg (n), du (n) from g (n), u (n), dy (n); exp once per element.
template <typename T>
FREEHOLD_HOST_DEVICE inline void swiglu_backward_span(const T* __restrict__ g, const T* __restrict__ u,
                                                      const T* __restrict__ dy, T* __restrict__ dg,
                                                      T* __restrict__ du, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float e = swiglu_exp_neg_abs(static_cast<float>(g[i]));
    dg[i] = swiglu_dg_element(g[i], u[i], dy[i], e);
    du[i] = swiglu_du_element(g[i], dy[i], e);
  }
}

// Where the elements of g, u, dy (inputs) and y, dg, du (outputs) are: `rows` rows of I contiguous elements, each
// input with its own row stride (in elements; 0 broadcasts one row), the outputs contiguous (row stride I). The
// model's gate and up are contiguous (B·T, I), or, from one (B, T, 2I) projection, narrowed with row stride 2I;
// the binding collapses contiguous tensors into one row of B·T·I elements.
struct SwigluLayout {
  int64_t rows = 0, I = 0;
  int64_t g_row_stride = 0, u_row_stride = 0, dy_row_stride = 0;
};

}  // namespace freehold::kernels
