// The CPU AdamW kernel's entry point: raw pointers, like the CUDA one (adamw.cuh). The binding (adamw.cpp) checks
// the tensors, measures how ATen rounds (adamw_cpu_arithmetic) and calls this.
#pragma once

#include <cstdint>

#include "kernels/adamw_math.h"

namespace freehold::kernels {

// out[i] = sqrt(in[i]) for i < n, rounded the way the caller needs (n <= kAdamWCpuChunk).
using AdamWSqrtFn = void (*)(const float* in, float* out, int64_t n);

// Elements per chunk: each chunk is updated in two sweeps (moments, then p) around one call of the sqrt function,
// so its p, m and v are still in L1/L2 for the second sweep.
inline constexpr int64_t kAdamWCpuChunk = 2048;

// One AdamW step over `count` tensors (adamw_math.h): chunks of all tensors in parallel on ATen's intra-op pool.
// p is decayed first when `apply_decay`. Every element's bits depend only on its own inputs, not on the split.
void adamw_step_cpu_kernel(const AdamWTensorPointers* tensors, int64_t count, const AdamWConstants& constants,
                           bool apply_decay, AdamWContraction contraction, AdamWSqrtFn sqrt_fn);

// std::sqrt element by element: correctly rounded (what ATen's sqrt is without MKL, and the GPU's __fsqrt_rn).
void adamw_sqrt_correctly_rounded(const float* in, float* out, int64_t n);

// MKL's vmsSqrt with ATen's mode (VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE, ATen/cpu/vml.h), looked up in the
// process (libtorch_cpu exports it when the wheel is built with MKL); nullptr when there is none.
AdamWSqrtFn adamw_mkl_sqrt();

}  // namespace freehold::kernels
