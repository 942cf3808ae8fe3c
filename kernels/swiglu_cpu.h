// The CPU SwiGLU kernels' entry points: raw pointers, like the CUDA ones (swiglu.cuh). The binding (swiglu.cpp)
// checks the tensors and calls these.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"
#include "kernels/swiglu_math.h"

namespace freehold::kernels {

// y (rows, I) contiguous = silu(g) · u for g, u (rows, I) laid out as `layout` says, all of `type`; see
// swiglu_math.h. Runs in element chunks on ATen's intra-op thread pool; the bits are the CUDA kernel's.
void swiglu_forward_cpu(ElementType type, const void* g, const void* u, void* y, const SwigluLayout& layout);

// The backward (swiglu_math.h): dg and du (rows, I) contiguous, of `type`, from g, u, dy (rows, I) as `layout` says.
void swiglu_backward_cpu(ElementType type, const void* g, const void* u, const void* dy, void* dg, void* du,
                         const SwigluLayout& layout);

}  // namespace freehold::kernels
