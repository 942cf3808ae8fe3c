// The CUDA SwiGLU kernels' host entry points: raw device pointers and a stream, no torch types, so that swiglu.cu
// compiles with nvcc alone. The binding (swiglu.cpp) checks the tensors and calls these.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/host_device.h"
#include "kernels/swiglu_math.h"

namespace freehold::kernels {

// y (rows, I) contiguous = silu(g) · u on the current device, as swiglu_forward_cpu (swiglu_cpu.h), bit for bit.
// Enqueues one kernel on `stream` and returns the launch's status, which the caller must check; an empty layout
// enqueues nothing and returns cudaSuccess.
cudaError_t swiglu_forward_cuda(ElementType type, const void* g, const void* u, void* y, const SwigluLayout& layout,
                                cudaStream_t stream);

// The backward, as swiglu_backward_cpu: dg and du (rows, I) contiguous; one kernel on `stream`.
cudaError_t swiglu_backward_cuda(ElementType type, const void* g, const void* u, const void* dy, void* dg, void* du,
                                 const SwigluLayout& layout, cudaStream_t stream);

}  // namespace freehold::kernels
