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

// RMSNorm's backward (rms_norm_math.h): x (rows, C), weight (C), dy (rows, C), all of `type` and contiguous →
// dx (rows, C) of `type`, inv_rms (rows) float32, partial (ceil(rows / kRmsNormRowsPerBlock), C) float32 (scratch),
// dw (C) float32. Each output has the bits the CUDA kernels give.
void rms_norm_backward_cpu(ElementType type, const void* x, const void* weight, const void* dy, void* dx,
                           float* inv_rms, float* partial, float* dw, int64_t rows, int64_t C, float eps);

}  // namespace freehold::kernels
