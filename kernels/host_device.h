// What kernel math shares between nvcc and the host compiler: the FREEHOLD_HOST_DEVICE marker, fp32 arithmetic that
// rounds the same on both sides, and the element types a raw-pointer kernel takes. No torch and no CUDA headers, so
// g++ compiles the per-element and per-row math for the CPU kernels and tests, and nvcc the same code for the GPU.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define FREEHOLD_HOST_DEVICE __host__ __device__
#else
#define FREEHOLD_HOST_DEVICE
#endif

namespace freehold::kernels {

// Element types of the fused kernels' tensors. Raw-pointer entry points take one of these with `const void*`,
// since c10::BFloat16 (host) and __nv_bfloat16 (device) are different C++ types with the same bits.
enum class ElementType : int { kF32, kBF16, kF16 };

// fp32 add, multiply, divide and square root, each correctly rounded (round to nearest even) on both sides.
// On the device the _rn intrinsics are never fused into an FMA by nvcc and ignore --use_fast_math; on the host
// the kernels' sources are compiled with -ffp-contract=off (kernels/CMakeLists.txt). Together this makes the CPU
// kernels produce the GPU kernels' results bit for bit, which the *_CUDA tests check.
FREEHOLD_HOST_DEVICE inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

FREEHOLD_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

FREEHOLD_HOST_DEVICE inline float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

FREEHOLD_HOST_DEVICE inline float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

}  // namespace freehold::kernels
