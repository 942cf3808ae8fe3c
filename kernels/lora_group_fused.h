// LoRA projections that read one input (q/k/v of the attention, gate/up of the MLP) as one autograd node whose
// low-rank path is one GEMM for all of them: u = x·[A_1; …; A_n]ᵀ (…, R), R = r_1 + … + r_n, split into the u_i
// that feed each projection's B_i. The backward computes every d A_i from one GEMM d uᵀ·x and the low-rank part of
// d x from one GEMM d u·[A_1; …; A_n]; in a 16-bit model x is widened to the adapter dtype once per pass instead of
// once per projection. The base GEMMs stay one per projection (they are large; concatenating W would copy it).
//
// No dropout: PEFT draws an independent mask per module, so with dropout the A GEMMs read different inputs and
// cannot be shared; the caller (adapters/lora_group.h) computes those projections one by one instead. Plain ATen
// GEMMs, so the op runs on the CPU and on CUDA alike (as kernels/lora_linear_fused.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace freehold::kernels {

// One projection of a group. Every member reads the same x (…, in).
struct LoraGroupMember {
  at::Tensor weight;  // (out, in), frozen, x's dtype
  at::Tensor bias;    // (out) or undefined, frozen
  at::Tensor lora_A;  // (r, in), the adapter dtype (one for the whole group)
  at::Tensor lora_B;  // (out, r), the adapter dtype
  double scale = 1.0;
};

// The spec: member i's output is lora_linear_reference(x, weight, bias, lora_A, lora_B, scale, /*dropout=*/0, …),
// PEFT's order of operations, one projection after another. Differentiable through x and every lora_A, lora_B.
std::vector<at::Tensor> lora_group_reference(const at::Tensor& x, const std::vector<LoraGroupMember>& members);

// The same values (…, out_i), in member order, from one autograd node. The forward pass agrees with the reference
// within rounding, not bit for bit: the A GEMM has R columns instead of r_i, which BLAS may block (and so sum)
// differently. Gradients agree within rounding: d x sums the base parts in x's dtype, then adds the one low-rank
// part, where autograd adds n rounded partial gradients. An output nobody uses counts as a zero gradient (its
// lora_B gets a zero gradient, where the reference leaves it undefined).
// Saved for the backward pass: x (the caller's tensor, no copy), [A_1; …; A_n] (R, in) and u (…, R).
std::vector<at::Tensor> lora_group_fused(const at::Tensor& x, const std::vector<LoraGroupMember>& members);

}  // namespace freehold::kernels
