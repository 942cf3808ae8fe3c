// Whether a tensor holds only finite values: the check that keeps NaN and Inf out of loaded weights, adapters and
// exports (RELIABILITY.md S21, N6). The CPU kernel reads the exponent bits in place, so checking a checkpoint's
// mmapped weights allocates nothing (a boolean isfinite() temporary per tensor would add up to half the model
// in bf16); the reference is plain ATen.
#pragma once

#include <ATen/core/Tensor.h>

namespace freehold::kernels {

// The spec: at::isfinite(x).all(). Any dtype (integers are always finite), any device.
bool all_finite_reference(const at::Tensor& x);

// CPU, no allocation for contiguous float32/float64/bfloat16/float16 tensors (others go to the reference).
bool all_finite(const at::Tensor& x);

}  // namespace freehold::kernels
