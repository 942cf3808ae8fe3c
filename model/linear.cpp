#include "model/linear.h"

#include <ATen/ops/linear.h>

namespace freehold::model {

at::Tensor Linear::base_forward(const at::Tensor& x) const { return at::linear(x, weight_, bias_); }

at::Tensor Linear::forward(const at::Tensor& x) const {
  if (adapter_) return adapter_->forward(*this, x);
  return base_forward(x);
}

}  // namespace freehold::model
