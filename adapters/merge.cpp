#include "adapters/merge.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "kernels/all_finite.h"

namespace freehold::adapters {

at::Tensor merged_weight(const std::string& module, const LoraLinear& adapter, const at::Tensor& weight) {
  at::NoGradGuard no_grad;
  FH_CHECK(weight.dim() == 2 && weight.size(0) == adapter.lora_B().size(0) && weight.size(1) == adapter.lora_A().size(1),
           module, ": merged_weight got a weight of the wrong shape");
  at::Tensor merged = weight.to(at::kFloat) + adapter.delta_weight().to(weight.device());  // (out, in)
  if (adapter.options().use_dora) {
    // PEFT takes the norm of the unmerged W + scale·BA per output row, detached, and rescales that sum to m.
    at::Tensor norm = adapter.dora_weight_norm(weight).to(weight.device());                 // (out)
    at::Tensor factor = adapter.magnitude().detach().to(weight.device(), at::kFloat) / norm;  // (out)
    merged.mul_(factor.unsqueeze(1));
  }
  if (!kernels::all_finite(merged)) {
    throw core::FormatError(absl::StrCat(
        "merging the adapter into ", module, " gives NaN or Inf (",
        adapter.options().use_dora ? "DoRA: a zero row norm ‖W + scale·BA‖ or an overflow" : "an overflow of W + scale·BA",
        "); refusing to export non-finite weights — the adapter is broken"));
  }
  return merged;
}

}  // namespace freehold::adapters
