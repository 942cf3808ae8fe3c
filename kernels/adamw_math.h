// AdamW's per-element update and the scalars it takes, shared by the CPU kernel (adamw_cpu.cpp) and the CUDA kernel
// (adamw.cu), so the CPU runs the very float32 operations the GPU runs. Torch-free and CUDA-free.
//
// The update is adamw_step_reference (adamw_reference.cpp: torch.optim.AdamW's single-tensor step as ATen's CPU
// kernels evaluate it), operation for operation, each float32 result rounded where ATen rounds it:
//   p ← p · decay                     p.mul_(1 − lr·wd)                       (only when weight_decay != 0)
//   m ← lerp(m, g, w)                 exp_avg.lerp_(g, 1 − β1)                ATen's two-branch lerp, below
//   v ← (v · β2) + (c · g) · g        exp_avg_sq.mul_(β2).addcmul_(g, g, 1 − β2)
//   d ← sqrt(v) / bc2_sqrt + eps      (exp_avg_sq.sqrt() / sqrt(1 − β2^t)).add_(eps)
//   p ← p + (s · m) / d               p.addcdiv_(exp_avg, denom, −lr / (1 − β1^t))
// Every scalar is the double the reference hands ATen, rounded once to float (ATen's Scalar::to<float>()); the
// doubles come from one host function (adamw_step_scalars) that the reference uses too.
//
// Two roundings depend on how the torch build compiled its CPU kernels, so they are parameters here, and the
// binding (adamw.cpp) measures which ones this process's ATen uses:
//   - Contraction. ATen's AVX2/AVX512 kernels fuse lerp's w·(g − m) + m (its vectorized formula is an fmadd) and
//     addcmul's (c·g)·g + v·β2 (g++ contracts it) into one FMA each; its DEFAULT kernels round every product.
//     CUDA's ATen kernels contract both as well (nvcc's default), so the GPU uses kFused.
//   - The square root, which the CPU kernel takes from its caller per chunk: ATen's CPU sqrt is MKL's vmsSqrt in
//     its high-accuracy mode, which is off by one ulp from the correctly rounded root on about 0.6% of inputs.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/host_device.h"

namespace freehold::kernels {

enum class AdamWContraction : int {
  kSeparate,  // round each product, then the sum (ATen's DEFAULT CPU kernels)
  kFused,     // one FMA for lerp and for addcmul (ATen's AVX2/AVX512 CPU kernels, and CUDA)
};

// What every tensor of one step shares, as float.
struct AdamWConstants {
  float lerp_weight = 0;            // float(1 − β1)
  float beta2 = 0;                  // float(β2)
  float one_minus_beta2 = 0;        // float(1 − β2)
  float bias_correction2_sqrt = 0;  // float(sqrt(1 − β2^t))
  float eps = 0;                    // float(eps)
};

// One tensor's share of the step, from its learning rate.
struct AdamWTensorScalars {
  float decay = 1;          // float(1 − lr·wd); applied only when weight_decay != 0
  float neg_step_size = 0;  // float(−(lr / (1 − β1^t)))
};

// One tensor of the step as raw pointers to numel contiguous floats each: host memory for the CPU kernel, device
// memory for the CUDA kernel (whose table of these lives on the device).
struct AdamWTensorPointers {
  float* param = nullptr;            // (numel) updated in place
  const float* grad = nullptr;       // (numel)
  float* exp_avg = nullptr;          // (numel) m, updated in place
  float* exp_avg_sq = nullptr;       // (numel) v, updated in place
  int64_t numel = 0;
  AdamWTensorScalars scalars;
};

// The doubles of one step, computed as trainer/adamw.h's torch.optim.AdamW does: t is the step count as torch's
// float32 state["step"] holds it, read back as a double.
struct AdamWStepScalars {
  double lerp_weight;            // 1 − β1
  double beta2;                  // β2
  double one_minus_beta2;        // 1 − β2
  double bias_correction1;       // 1 − β1^t
  double bias_correction2_sqrt;  // sqrt(1 − β2^t)
  double eps;
};

inline AdamWStepScalars adamw_step_scalars(double beta1, double beta2, double eps, int64_t step) {
  const double t = static_cast<double>(static_cast<float>(step));
  return {1 - beta1, beta2, 1 - beta2, 1 - std::pow(beta1, t), std::sqrt(1 - std::pow(beta2, t)), eps};
}

// 1 − lr·wd: what the reference multiplies p by.
inline double adamw_decay_factor(double lr, double weight_decay) { return 1 - lr * weight_decay; }
// −(lr / bias_correction1): the reference's addcdiv value.
inline double adamw_neg_step_size(double lr, const AdamWStepScalars& s) { return -(lr / s.bias_correction1); }

inline AdamWConstants adamw_constants(const AdamWStepScalars& s) {
  return {static_cast<float>(s.lerp_weight), static_cast<float>(s.beta2), static_cast<float>(s.one_minus_beta2),
          static_cast<float>(s.bias_correction2_sqrt), static_cast<float>(s.eps)};
}

inline AdamWTensorScalars adamw_tensor_scalars(double lr, double weight_decay, const AdamWStepScalars& s) {
  return {static_cast<float>(adamw_decay_factor(lr, weight_decay)), static_cast<float>(adamw_neg_step_size(lr, s))};
}

// a·b + c rounded once, on both sides (std::fma is exact wherever it runs; nvcc's __fmaf_rn is one instruction).
FREEHOLD_HOST_DEVICE inline float adamw_fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// ATen's lerp (ATen/native/Lerp.h): start + w·(end − start) for |w| < 0.5, else end − (end − start)·(1 − w).
// Its vectorized form computes the second branch as fmadd(w − 1, end − start, end); w − 1 = −(1 − w) exactly
// for w in [0.5, 1], so with one rounding (kFused) the two forms give the same bits.
template <AdamWContraction K>
FREEHOLD_HOST_DEVICE inline float adamw_lerp(float start, float end, float weight) {
  const float diff = add_rn(end, -start);
  if (weight < 0.5f && weight > -0.5f) {  // ATen's is_lerp_weight_small: |w| < 0.5
    return K == AdamWContraction::kFused ? adamw_fma_rn(weight, diff, start) : add_rn(start, mul_rn(weight, diff));
  }
  return K == AdamWContraction::kFused ? adamw_fma_rn(add_rn(weight, -1.0f), diff, end)
                                       : add_rn(end, -mul_rn(diff, add_rn(1.0f, -weight)));
}

// The moments: m ← lerp(m, g, 1 − β1); v ← v·β2 + ((1 − β2)·g)·g (addcmul multiplies value·t1 first).
template <AdamWContraction K>
FREEHOLD_HOST_DEVICE inline void adamw_moments(float g, float& m, float& v, const AdamWConstants& c) {
  m = adamw_lerp<K>(m, g, c.lerp_weight);
  const float v_decayed = mul_rn(v, c.beta2);
  const float scaled_g = mul_rn(c.one_minus_beta2, g);
  v = K == AdamWContraction::kFused ? adamw_fma_rn(scaled_g, g, v_decayed) : add_rn(v_decayed, mul_rn(scaled_g, g));
}

// The parameter update from m and sqrt(v): p + (s·m) / (sqrt(v) / bc2_sqrt + eps) (addcdiv: value·t1, then / t2).
FREEHOLD_HOST_DEVICE inline float adamw_apply(float p, float m, float sqrt_v, const AdamWConstants& c,
                                              float neg_step_size) {
  const float denom = add_rn(div_rn(sqrt_v, c.bias_correction2_sqrt), c.eps);
  return add_rn(p, div_rn(mul_rn(neg_step_size, m), denom));
}

// One element start to end, with a correctly rounded square root: the CUDA kernel's body. A non-finite g makes
// this element's m, v and p non-finite, as in the reference; no other element is touched.
template <AdamWContraction K, bool kDecay>
FREEHOLD_HOST_DEVICE inline void adamw_update(float& p, float g, float& m, float& v, const AdamWConstants& c,
                                              const AdamWTensorScalars& s) {
  if (kDecay) p = mul_rn(p, s.decay);
  adamw_moments<K>(g, m, v, c);
  p = adamw_apply(p, m, sqrt_rn(v), c, s.neg_step_size);
}

}  // namespace freehold::kernels
