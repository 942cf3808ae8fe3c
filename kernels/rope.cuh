// The CUDA RoPE kernel's host entry point: raw device pointers and a stream, no torch types, so that rope.cu
// compiles with nvcc alone. The binding (rope.cpp) checks the tensors and calls this.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/host_device.h"
#include "kernels/rope_math.h"

namespace freehold::kernels {

// As rope_rotate_cpu (rope_cpu.h), on device pointers of the current device: y (B, H, T, D) = x rotated in
// `direction` by cos, sin (B, T, D); y == x rotates in place. Enqueues one kernel on `stream` (a thread per pair)
// and returns the launch's status, which the caller must check. No rows or D == 0 enqueues nothing.
cudaError_t rope_rotate_cuda(ElementType type, RopeDirection direction, const void* x, void* y, const void* cos,
                             const void* sin, const RopeLayout& layout, cudaStream_t stream);

}  // namespace freehold::kernels
