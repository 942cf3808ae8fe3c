// torch.nn.utils.clip_grad_norm_ (norm_type 2), op for op.
#include "trainer/grad_clip.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/reciprocal.h>
#include <ATen/ops/stack.h>

#include <cmath>

namespace freehold::trainer {

double clip_grad_norm(const std::vector<io::NamedTensor>& params, double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (const io::NamedTensor& p : params) {
    if (p.tensor.grad().defined()) grads.push_back(p.tensor.grad());
  }
  if (grads.empty()) return 0.0;
  std::vector<at::Tensor> norms;
  for (const at::Tensor& g : grads) norms.push_back(at::linalg_vector_norm(g, 2));
  at::Tensor total = at::linalg_vector_norm(at::stack(norms), 2);  // 0-d float32
  const double total_value = total.item<double>();
  if (max_norm > 0 && std::isfinite(total_value)) {
    // Python's `max_norm / t` is t.reciprocal() * max_norm.
    at::Tensor coef = at::clamp(at::reciprocal(total + 1e-6) * max_norm, c10::nullopt, 1.0);
    for (at::Tensor& g : grads) g.mul_(coef);
  }
  return total_value;
}

}  // namespace freehold::trainer
