// Token-weighted cross-entropy; see loss.h.
#include "trainer/loss.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ne.h>
#include <ATen/ops/sum.h>

#include <algorithm>

#include "absl/strings/str_join.h"
#include "core/error.h"
#include "data/batch.h"
#include "kernels/linear_cross_entropy.h"
#include "kernels/self_check.h"

namespace freehold::trainer {

at::Tensor sum_cross_entropy(const at::Tensor& logits, const at::Tensor& labels) {
  FH_CHECK(logits.dim() == 3 && labels.dim() == 2 && logits.size(0) == labels.size(0) &&
               logits.size(1) == labels.size(1),
           "sum_cross_entropy: logits [", absl::StrJoin(logits.sizes(), ","), "] and labels [",
           absl::StrJoin(labels.sizes(), ","), "] do not match");
  const int64_t T = logits.size(1), V = logits.size(2);
  if (T < 2) return (logits.sum() * 0.0).to(at::kFloat);  // nothing to predict; keeps the graph connected
  at::Tensor shift_logits = logits.narrow(1, 0, T - 1).to(at::kFloat).reshape({-1, V});  // (B·(T-1), V)
  at::Tensor shift_labels = labels.narrow(1, 1, T - 1).reshape({-1});                    // (B·(T-1))
  // reduction sum: all-ignored rows give exactly 0 (mean would give 0/0).
  return at::cross_entropy_loss(shift_logits, shift_labels, {}, at::Reduction::Sum, data::kIgnoreIndex);
}

at::Tensor micro_batch_loss(const at::Tensor& logits, const at::Tensor& labels, int64_t step_target_tokens) {
  return sum_cross_entropy(logits, labels) / static_cast<double>(std::max<int64_t>(1, step_target_tokens));
}

at::Tensor sum_linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& lm_head_weight, const at::Tensor& labels,
                                    bool fused) {
  FH_CHECK(hidden.dim() == 3 && labels.dim() == 2 && hidden.size(0) == labels.size(0) &&
               hidden.size(1) == labels.size(1),
           "sum_linear_cross_entropy: hidden [", absl::StrJoin(hidden.sizes(), ","), "] and labels [",
           absl::StrJoin(labels.sizes(), ","), "] do not match");
  const int64_t B = hidden.size(0), T = hidden.size(1), C = hidden.size(2);
  // The HF shift on the targets instead of the hidden states: row t is scored against labels[t+1] and the last
  // position of each row against nothing, so `hidden` is used as the (B·T, C) view it is, without a copy.
  at::Tensor targets = at::full({B, T}, data::kIgnoreIndex, labels.options().dtype(at::kLong));  // (B, T)
  if (T >= 2) targets.narrow(1, 0, T - 1).copy_(labels.narrow(1, 1, T - 1));
  kernels::LinearCrossEntropyOptions options;
  options.ignore_index = data::kIgnoreIndex;
  return kernels::linear_cross_entropy(hidden.reshape({B * T, C}), lm_head_weight, targets.view({B * T}), fused,
                                       options);
}

bool use_fused_kernels(model::FusedKernels fused_kernels, const model::Transformer& model) {
  switch (fused_kernels) {
    case model::FusedKernels::kOn:
      return true;
    case model::FusedKernels::kOff:
      return false;
    case model::FusedKernels::kAuto:
      return kernels::fused_kernels_pass_self_check(model.lm_head().weight().device(), model.dtype());
  }
  return false;
}

at::Tensor model_sum_cross_entropy(const model::Transformer& model, const model::ForwardInput& input,
                                   const at::Tensor& labels, model::FusedKernels fused_kernels) {
  const model::Linear& head = model.lm_head();
  const at::Tensor& weight = head.weight();
  if (!use_fused_kernels(fused_kernels, model) || head.adapter() || head.bias().defined()) {
    return sum_cross_entropy(model.forward(input), labels);
  }
  return sum_linear_cross_entropy(model.hidden_states(input), weight, labels, /*fused=*/true);
}

int64_t count_target_tokens(const at::Tensor& labels) {
  const int64_t T = labels.size(1);
  if (T < 2) return 0;
  return at::ne(labels.narrow(1, 1, T - 1), data::kIgnoreIndex).sum().item<int64_t>();
}

}  // namespace freehold::trainer
