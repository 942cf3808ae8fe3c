#include "adapters/lora_linear.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "kernels/dropout.h"
#include "kernels/lora_linear_fused.h"

namespace freehold::adapters {

double LoraLinearOptions::scale() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

LoraLinear::LoraLinear(const model::Linear& base, LoraLinearOptions options, at::Tensor lora_A, at::Tensor lora_B,
                       at::Tensor magnitude)
    : options_(options) {
  const int64_t r = options.r, in = base.in_features(), out = base.out_features();
  FH_CHECK(lora_A.dim() == 2 && lora_A.size(0) == r && lora_A.size(1) == in, base.name(), ": lora_A must be (", r, ", ",
           in, ")");
  FH_CHECK(lora_B.dim() == 2 && lora_B.size(0) == out && lora_B.size(1) == r, base.name(), ": lora_B must be (", out,
           ", ", r, ")");
  lora_A_ = lora_A.detach().requires_grad_(true);
  lora_B_ = lora_B.detach().requires_grad_(true);
  if (options.use_dora) {
    if (!magnitude.defined()) magnitude = dora_weight_norm(base.weight()).to(lora_A_.scalar_type());
    FH_CHECK(magnitude.dim() == 1 && magnitude.size(0) == out, base.name(), ": magnitude must be (", out, ")");
    magnitude_ = magnitude.detach().requires_grad_(true);
  } else {
    FH_CHECK(!magnitude.defined(), base.name(), ": a DoRA magnitude given to a plain LoRA adapter");
  }
}

at::Tensor LoraLinear::delta_weight() const {
  at::NoGradGuard no_grad;
  return at::matmul(lora_B_.to(at::kFloat), lora_A_.to(at::kFloat)) * scale();
}

at::Tensor LoraLinear::dora_weight_norm(const at::Tensor& weight) const {
  at::NoGradGuard no_grad;
  at::Tensor combined = weight.to(at::kFloat) + scale() * at::matmul(lora_B_.to(at::kFloat), lora_A_.to(at::kFloat));
  return at::linalg_vector_norm(combined, 2, {1});  // (out)
}

at::Tensor LoraLinear::dropout(const at::Tensor& x) const {
  return kernels::dropout_reference(x, kernels::draw_dropout_seed(x.device()), options_.dropout);
}

at::Tensor LoraLinear::forward(const model::Linear& base, const at::Tensor& x) const {
  if (fused_ && !options_.use_dora) {
    return kernels::lora_linear_fused(x, base.weight(), base.bias(), lora_A_, lora_B_, scale(), options_.dropout,
                                      training_);
  }
  at::Tensor result = base.base_forward(x);  // (..., out), the base dtype
  const at::ScalarType result_dtype = result.scalar_type();
  // As PEFT: the adapter computes in its own dtype (float32 by default), the sum goes back to the base dtype.
  at::Tensor xa = x.scalar_type() == lora_A_.scalar_type() ? x : x.to(lora_A_.scalar_type());
  const bool drop = training_ && options_.dropout > 0.0;
  const double s = scale();
  if (!options_.use_dora) {
    at::Tensor xd = drop ? dropout(xa) : xa;
    result = result + at::linear(at::linear(xd, lora_A_), lora_B_) * s;
    return result.to(result_dtype);
  }

  at::Tensor weight = base.weight().to(xa.scalar_type());  // (out, in)
  at::Tensor weight_norm;                                   // (out), no gradient (DoRA §4.3)
  {
    at::NoGradGuard no_grad;
    at::Tensor lora_weight = at::matmul(lora_B_, lora_A_).to(xa.scalar_type());  // (out, in)
    weight_norm = at::linalg_vector_norm(weight + s * lora_weight, 2, {1}).to(weight.scalar_type());
  }
  at::Tensor mag_norm_scale = magnitude_ / weight_norm;  // (out), broadcast over the last dim
  at::Tensor xd, base_result;  // base_result: W x' without the bias
  if (drop) {
    xd = dropout(xa);
    base_result = at::linear(xd, weight);
  } else {
    xd = xa;
    base_result = base.bias().defined() ? result - base.bias() : result;
  }
  at::Tensor lora_result = at::linear(at::linear(xd, lora_A_), lora_B_);
  result = result + (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * s;
  return result.to(result_dtype);
}

}  // namespace freehold::adapters
