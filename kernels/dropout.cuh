// The CUDA dropout kernels' host entry points: raw device pointers and a stream, no torch types, so that dropout.cu
// compiles with nvcc alone. The binding (dropout.cpp) checks the tensors and calls these.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/host_device.h"

namespace freehold::kernels {

// As dropout_mask_cpu and dropout_apply_cpu (dropout_cpu.h), on device pointers of the current device, with the
// same bits. Each enqueues one kernel on `stream` and returns the launch's status, which the caller must check.
cudaError_t dropout_mask_cuda(uint64_t seed, uint64_t threshold, uint8_t* keep, int64_t n, cudaStream_t stream);
cudaError_t dropout_apply_cuda(ElementType type, uint64_t seed, uint64_t threshold, float scale, const void* x,
                               void* y, int64_t n, cudaStream_t stream);

}  // namespace freehold::kernels
