// The CPU dropout kernels' entry points: raw pointers, like the CUDA ones (dropout.cuh). The binding (dropout.cpp)
// checks the tensors and calls these.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace freehold::kernels {

// keep[i] = dropout_keep(seed, i, threshold) for i < n (dropout_math.h), as bytes 0/1 (a bool tensor's storage).
void dropout_mask_cpu(uint64_t seed, uint64_t threshold, uint8_t* keep, int64_t n);

// y[i] = T(float(x[i]) · (keep_i ? scale : 0)) for i < n, all of `type`; scale is 1/(1 − p) already rounded to
// `type`. y either is x or does not overlap it. Blocks of elements run in parallel on ATen's intra-op pool; the bits
// depend on neither the thread count nor the CPU's instruction set.
void dropout_apply_cpu(ElementType type, uint64_t seed, uint64_t threshold, float scale, const void* x, void* y,
                       int64_t n);

}  // namespace freehold::kernels
