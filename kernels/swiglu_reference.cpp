// SwiGLU's reference: transformers' LlamaMLP activation, act_fn(gate) * up with act_fn = silu, in plain ATen. The
// fused kernels are tested against it.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/silu.h>

#include "kernels/swiglu.h"

namespace freehold::kernels {

at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up) {
  check_swiglu_args("swiglu_reference", gate, up);
  return at::silu(gate) * up;
}

}  // namespace freehold::kernels
