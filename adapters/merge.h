// Merging an adapter into its frozen projection, as PEFT 0.21.2's safe merge does (peft/tuners/lora/layer.py
// Linear.merge(safe_merge=True), variants.py DoraLinearVariant.merge_safe), but always in float32:
//
//   LoRA:  W' = W + scale · B A
//   DoRA:  W' = (m / ‖W + scale · B A‖_row) ⊙ (W + scale · B A)    (m, the norm: (out), broadcast over in)
//
// The bias is never touched (PEFT changes it only with lora_bias, which freehold refuses). A merged weight that holds
// NaN or Inf is refused naming the module (RELIABILITY.md N6), so nothing non-finite reaches an export.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "adapters/lora_linear.h"

namespace freehold::adapters {

// `weight` (out, in): the module's frozen weight in any floating dtype, e.g. a pread copy of the checkpoint's
// tensor. Returns W' (out, in) in float32 on `weight`'s device, computed with the adapter's own delta_weight()
// and dora_weight_norm(). Throws core::FormatError naming `module` when W' is not finite, and FH_CHECKs that the
// shape is the one the adapter was built for.
at::Tensor merged_weight(const std::string& module, const LoraLinear& adapter, const at::Tensor& weight);

}  // namespace freehold::adapters
