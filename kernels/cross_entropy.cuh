// The CUDA cross-entropy row kernel's host entry point: raw device pointers and a stream, no torch types, so that
// cross_entropy.cu compiles with nvcc alone. The binding (linear_cross_entropy.cpp) computes a chunk of logits with
// cuBLAS through ATen, checks the targets and calls this.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/host_device.h"

namespace freehold::kernels {

// As cross_entropy_rows_cpu (cross_entropy_cpu.h), on device pointers: logits (rows, V) of `type`, targets (rows)
// int64, loss (rows) fp32. Enqueues one kernel on `stream` (one block of 256 threads per row) and returns the
// launch's status, which the caller must check. rows == 0 enqueues nothing.
cudaError_t cross_entropy_rows_cuda(ElementType type, void* logits, const int64_t* targets, float* loss, int64_t rows,
                                    int64_t V, int64_t ignore_index, bool write_grad, cudaStream_t stream);

}  // namespace freehold::kernels
