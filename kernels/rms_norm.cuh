// The CUDA RMSNorm forward kernel's host entry point: raw device pointers and a stream, no torch types, so that
// rms_norm.cu compiles with nvcc alone. The binding (rms_norm.cpp) checks the tensors and calls this.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/host_device.h"

namespace freehold::kernels {

// y (rows, C) = RMSNorm of x (rows, C) with weight (C), all of `type`, contiguous, on the current device;
// see rms_norm_math.h for the math. Enqueues one kernel on `stream` (one warp per row) and returns the launch's
// status, which the caller must check. rows == 0 or C == 0 enqueues nothing and returns cudaSuccess.
cudaError_t rms_norm_forward_cuda(ElementType type, const void* x, const void* weight, void* y, int64_t rows,
                                  int64_t C, float eps, cudaStream_t stream);

// RMSNorm's backward on device pointers, as rms_norm_backward_cpu (rms_norm_cpu.h): dx, inv_rms, partial (scratch of
// ceil(rows / kRmsNormRowsPerBlock) x C floats) and dw (C) float32. Three kernels on `stream` (dx and inv_rms one
// warp per row; dw per row block; dw over blocks); returns the launches' status.
cudaError_t rms_norm_backward_cuda(ElementType type, const void* x, const void* weight, const void* dy, void* dx,
                                   float* inv_rms, float* partial, float* dw, int64_t rows, int64_t C, float eps,
                                   cudaStream_t stream);

}  // namespace freehold::kernels
