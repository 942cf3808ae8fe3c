// The CPU RMSNorm forward kernel's entry point: raw pointers, like the CUDA one (rms_norm.cuh). The binding
// (rms_norm.cpp) checks the tensors and calls this.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace freehold::kernels {

// y (rows, C) = RMSNorm of x (rows, C) with weight (C), all of `type` and contiguous; see rms_norm_math.h.
// Rows run in parallel on ATen's intra-op thread pool; each row gives the same bits as the CUDA kernel.
void rms_norm_forward_cpu(ElementType type, const void* x, const void* weight, void* y, int64_t rows, int64_t C,
                          float eps);

}  // namespace freehold::kernels
