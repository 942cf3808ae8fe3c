// LoRA linear as one autograd node: the frozen base GEMM, the low-rank path and its dropout, keeping for the
// backward pass only x (the caller's tensor, no copy) and u = dropout(x)·Aᵀ (T, r); dropout's mask is recomputed
// from its seed (kernels/dropout.h). The unfused composition (lora_linear_reference, PEFT's order of operations)
// keeps x cast to the adapter dtype, the dropout mask and dropout(x), three (..., in) tensors per adapted
// projection.
//
// The math is GEMMs and the dropout kernel, so the binding is plain ATen plus kernels/dropout.h and runs on the CPU
// and on CUDA alike (cuBLAS does the GEMMs). DoRA stays on the reference path (adapters/).
#pragma once

#include <ATen/core/Tensor.h>

namespace freehold::kernels {

// The spec, as PEFT computes LoRA (adapters/lora_linear.h): x (..., in), weight (out, in), bias (out) or undefined,
// lora_A (r, in), lora_B (out, r) →
//   y = (linear(x, weight, bias) + scale · linear(linear(xd, lora_A), lora_B)).to(x's base dtype),
//   xd = dropout_reference(x.to(lora_A.dtype), draw_dropout_seed(x's device), p) while training with p > 0, else
//   x.to(lora_A.dtype): PEFT's nn.Dropout in distribution (kernels/dropout.h), with a mask that one seed fixes.
// Differentiable through x, lora_A and lora_B.
at::Tensor lora_linear_reference(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                 const at::Tensor& lora_A, const at::Tensor& lora_B, double scale, double dropout,
                                 bool training);

// The same value in one autograd node. Bit-identical to the reference in the forward pass: with dropout it draws
// the one seed the reference draws, from the same generator, so it applies the same mask. Gradients agree with the
// reference's within rounding (the same GEMMs; d x sums its two parts in x's dtype as autograd does).
at::Tensor lora_linear_fused(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             const at::Tensor& lora_A, const at::Tensor& lora_B, double scale, double dropout,
                             bool training);

}  // namespace freehold::kernels
