// LoRA linear as one autograd node: the frozen base GEMM, the low-rank path and its dropout, keeping for the
// backward pass only x (the caller's tensor, no copy), u = dropout(x)·Aᵀ (T, r) and, with dropout, a one-byte mask.
// The unfused composition (lora_linear_reference, PEFT's order of operations) keeps x cast to the adapter dtype, the
// dropout noise and dropout(x), three (..., in) float32 tensors per adapted projection in a bf16 model.
//
// The math is GEMMs and one multiply by the mask, so the binding is plain ATen and runs on the CPU and on CUDA
// alike (cuBLAS does the GEMMs); there is no separate device code. DoRA stays on the reference path (adapters/).
#pragma once

#include <ATen/core/Tensor.h>

namespace freehold::kernels {

// The spec, as PEFT computes LoRA (adapters/lora_linear.h): x (..., in), weight (out, in), bias (out) or undefined,
// lora_A (r, in), lora_B (out, r) →
//   y = (linear(x, weight, bias) + scale · linear(linear(xd, lora_A), lora_B)).to(x's base dtype),
//   xd = dropout(x.to(lora_A.dtype), p) while training with p > 0, else x.to(lora_A.dtype).
// Differentiable through x, lora_A and lora_B.
at::Tensor lora_linear_reference(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                 const at::Tensor& lora_A, const at::Tensor& lora_B, double scale, double dropout,
                                 bool training);

// The same value in one autograd node. Bit-identical to the reference in the forward pass, and, with dropout, it
// draws the mask from the default generator exactly as at::dropout does on the CPU (bernoulli_(1 − p) on a tensor
// like x in the adapter dtype), so a seeded CPU run gives the reference's mask (CUDA's at::dropout draws through
// its own fused kernel: same distribution, other bits). Gradients agree with the reference's within
// rounding (the same GEMMs; d x sums its two parts in x's dtype as autograd does).
at::Tensor lora_linear_fused(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             const at::Tensor& lora_A, const at::Tensor& lora_B, double scale, double dropout,
                             bool training);

}  // namespace freehold::kernels
