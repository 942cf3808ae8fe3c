// RMSNorm's reference: transformers' LlamaRMSNorm.forward in plain ATen. The fused kernels are tested against it.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/rsqrt.h>

#include "kernels/rms_norm.h"

namespace freehold::kernels {

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rms_norm_args("rms_norm_reference", x, weight, eps);
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);  // (..., 1)
  const at::Tensor normed = x32 * at::rsqrt(variance + eps);
  // Back to x's dtype *before* the weight, as transformers does; the multiply then promotes like torch.
  return weight * normed.to(x.scalar_type());
}

}  // namespace freehold::kernels
