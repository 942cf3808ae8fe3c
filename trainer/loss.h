// The training loss: cross-entropy with the Hugging Face label convention (logits at position t predict
// labels[t+1]; kIgnoreIndex positions are not targets), normalised by the target tokens of the whole optimizer
// step rather than of one micro-batch, as transformers does with num_items_in_batch:
//
//   loss_step = Σ_micro Σ_targets −log p(target) / N_step,   N_step = target tokens of the step (all ranks, once the
//   multi-rank issue all-reduces it)
//
// so every target token weighs the same whatever micro-batch it lands in. A micro-batch with no targets contributes
// exactly 0 (a sum over nothing), never NaN (RELIABILITY.md R7); N_step = 0 gives a step loss of 0.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "model/model_options.h"
#include "model/transformer.h"

namespace freehold::trainer {

// logits (B, T, V) any float dtype, labels (B, T) int64 → Σ −log p over the targets, a 0-d float32 tensor with a
// gradient to `logits`. Computed in float32, like transformers' ForCausalLMLoss (logits.float()).
at::Tensor sum_cross_entropy(const at::Tensor& logits, const at::Tensor& labels);

// sum_cross_entropy / max(1, step_target_tokens): this micro-batch's share of the step's loss.
at::Tensor micro_batch_loss(const at::Tensor& logits, const at::Tensor& labels, int64_t step_target_tokens);

// hidden (B, T, C) → the same Σ −log p as sum_cross_entropy(linear(hidden, lm_head_weight), labels), through
// kernels::linear_cross_entropy: with `fused`, the LM head and the loss run in chunks of tokens and the (B, T, V)
// logits never exist whole (the gradient for `hidden` is computed in the same pass); without, the ATen reference.
at::Tensor sum_linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& lm_head_weight, const at::Tensor& labels,
                                    bool fused);

// Whether the fused kernels are used for `model`: model.fused_kernels on; or auto and the kernels pass their
// start-up self-check (kernels::fused_kernels_pass_self_check, run once per device and dtype) on the model's
// device and dtype; never when off.
bool use_fused_kernels(model::FusedKernels fused_kernels, const model::Transformer& model);

// What the trainer calls for one micro-batch: Σ −log p of the model on `input` against `labels`. When
// use_fused_kernels and the LM head is a plain projection (no adapter, no bias), the model's final hidden states go
// through sum_linear_cross_entropy; otherwise forward() and sum_cross_entropy, as before.
at::Tensor model_sum_cross_entropy(const model::Transformer& model, const model::ForwardInput& input,
                                   const at::Tensor& labels, model::FusedKernels fused_kernels);

// Target tokens in `labels` (B, T) under the HF shift: positions t >= 1 whose label is not kIgnoreIndex.
int64_t count_target_tokens(const at::Tensor& labels);

}  // namespace freehold::trainer
