// Linear + cross-entropy's reference: the LM head then torch's cross_entropy, in plain ATen (the spec the fused pass
// is tested against).
#include <ATen/core/Tensor.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/linear.h>

#include "kernels/linear_cross_entropy.h"

namespace freehold::kernels {

at::Tensor linear_cross_entropy_reference(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                          int64_t ignore_index) {
  check_linear_cross_entropy_args("linear_cross_entropy_reference", hidden, weight, targets, ignore_index);
  const at::Tensor logits = at::linear(hidden, weight).to(at::kFloat);  // (N, V)
  // reduction sum: an all-ignored input gives exactly 0 (mean would give 0/0).
  return at::cross_entropy_loss(logits, targets, {}, at::Reduction::Sum, ignore_index);
}

}  // namespace freehold::kernels
