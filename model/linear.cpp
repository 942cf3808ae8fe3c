#include "model/linear.h"

#include <ATen/ops/linear.h>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "kernels/half_gemm.h"

namespace freehold::model {

// The fused kernels' GEMM paths (kernels/half_gemm.h, cpu_gemm.h) when they are on, at::linear when off.
at::Tensor Linear::base_forward(const at::Tensor& x) const {
  return kernels::frozen_linear_differentiable(x, weight_, bias_);
}

void Linear::set_weight(at::Tensor weight) {
  FH_CHECK(weight.sizes() == weight_.sizes() && weight.scalar_type() == weight_.scalar_type(), name_,
           ": set_weight needs the shape and dtype of the weight it replaces");
  weight_ = std::move(weight);
}

at::Tensor Linear::forward(const at::Tensor& x) const {
  if (adapter_) return adapter_->forward(*this, x);
  return base_forward(x);
}

}  // namespace freehold::model
