// Token-weighted cross-entropy; see loss.h.
#include "trainer/loss.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/ne.h>
#include <ATen/ops/sum.h>

#include <algorithm>

#include "absl/strings/str_join.h"
#include "core/error.h"
#include "data/batch.h"

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

int64_t count_target_tokens(const at::Tensor& labels) {
  const int64_t T = labels.size(1);
  if (T < 2) return 0;
  return at::ne(labels.narrow(1, 1, T - 1), data::kIgnoreIndex).sum().item<int64_t>();
}

}  // namespace freehold::trainer
