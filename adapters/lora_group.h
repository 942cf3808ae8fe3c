// The model's q/k/v and gate/up projections read one input each; when several of them carry plain LoRA adapters,
// their low-rank paths share one GEMM (kernels::lora_group_fused): x·[A_q; A_k; A_v]ᵀ, split per projection, and
// the same in the backward pass. This decides which projections of such a set may be grouped and computes the rest
// one by one, as Linear::forward would. Installed on a model::Transformer as its ProjectionGroupForward.
#pragma once

#include <ATen/core/Tensor.h>

#include <span>
#include <vector>

#include "model/linear.h"
#include "model/transformer.h"

namespace freehold::adapters {

// Whether `linear`'s adapter may join a group: a LoraLinear that computes fused (LoraLinear::set_fused), plain
// LoRA (DoRA's per-row norm is not fused) and without dropout in effect (not training, or dropout 0). PEFT draws
// one dropout mask per module, so with dropout the A GEMMs read different inputs; those projections stay on
// kernels::lora_linear_fused, which draws the reference's masks.
bool joins_lora_group(const model::Linear& linear);

// The outputs of `projections`, which all read x (..., in), in order: the ones that join a group (at least two,
// sharing the first joiner's adapter dtype) through kernels::lora_group_fused, every other one through
// Linear::forward in its turn, so random draws (dropout masks) happen in the order they do without grouping.
// A ProjectionGroupForward (model/transformer.h).
std::vector<at::Tensor> lora_group_forward(std::span<const model::Linear* const> projections, const at::Tensor& x);

// Installs lora_group_forward on `model` (on) or goes back to one projection at a time (off). Grouping only changes
// how adapters that compute fused are computed, so the trainer turns it on with model.fused_kernels.
void set_lora_grouping(model::Transformer& model, bool on);

}  // namespace freehold::adapters
