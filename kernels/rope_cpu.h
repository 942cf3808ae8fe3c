// The CPU RoPE kernel's entry point: raw pointers, like the CUDA one (rope.cuh). The binding (rope.cpp) checks the
// tensors and calls this.
#pragma once

#include "kernels/host_device.h"
#include "kernels/rope_math.h"

namespace freehold::kernels {

// y (B, H, T, D) = x (B, H, T, D) rotated in `direction` by cos, sin (B, T, D), all of `type`, laid out as `layout`
// says (rope_math.h). y either is x (same pointer and strides: in place) or does not overlap x. Rows run in parallel
// on ATen's intra-op thread pool; every element has the bits the CUDA kernel gives.
void rope_rotate_cpu(ElementType type, RopeDirection direction, const void* x, void* y, const void* cos,
                     const void* sin, const RopeLayout& layout);

}  // namespace freehold::kernels
