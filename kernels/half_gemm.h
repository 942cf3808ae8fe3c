// GEMMs against frozen 16-bit weights on the CPU. Many CPUs run a bf16 or fp16 GEMM slower than an fp32 GEMM of the
// same size (no AMX: oneDNN then widens the operands inside its kernel; measured 1.5x slower on an AVX-512 Xeon,
// docs/benchmarks.md), while others (AMX, or Zen 4's bf16 dot product) run it faster. Both paths accumulate in
// float32 and round the result to the 16-bit dtype once, so they differ only in summation order: this picks the
// faster one for this machine, once per dtype, by timing both on a GEMM of the model's width.
//
//   native  at::linear / at::matmul on the 16-bit tensors
//   float   the operands widened to float32 (exact), an fp32 GEMM, the result rounded to the 16-bit dtype
//
// CUDA tensors, fp32 tensors, small row counts (generation: widening the weight would cost more than the GEMM) and
// `model.fused_kernels: off` (kernels::fused_kernels_enabled()) always take the native path.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>

namespace freehold::kernels {

enum class HalfGemmPath { kNative, kFloat };

std::string_view half_gemm_path_name(HalfGemmPath path);  // "native" | "float"
// The path named "native" or "float"; nullopt for anything else.
std::optional<HalfGemmPath> half_gemm_path_from_name(std::string_view name);

// The path for CPU GEMMs in `dtype` (BFloat16 or Half; Float always kNative): FREEHOLD_HALF_GEMM=native|float when
// set (anything else is an error naming the variable and the value), else measured once per dtype: both paths timed
// on a (256, C)·(C, C)ᵀ GEMM, kFloat chosen only when it is at least 1.2x faster (a loaded machine's noise must not
// flip the choice between two runs). Logged once per dtype. Thread-safe.
HalfGemmPath half_gemm_path(at::ScalarType dtype, int64_t C = 1024);

// Tests and the trainer's resume: fix the path for `dtype` (replaces the measurement and the environment).
void set_half_gemm_path(at::ScalarType dtype, HalfGemmPath path);
// Tests only: forget every chosen path, so the next call reads FREEHOLD_HALF_GEMM or measures again.
void reset_half_gemm_paths_for_testing();

// Whether a GEMM of `rows` rows with x and weight of these dtypes and device takes the float path.
bool use_float_gemm(const at::Tensor& x, const at::Tensor& weight, int64_t rows);

// y = x·weightᵀ + bias, x (..., in), weight (out, in), bias (out) or undefined → (..., out) in x's dtype; the value
// of at::linear up to summation order. `x_float`, when defined, is x already widened to float32 (the LoRA path has
// it), saving one conversion. Not differentiable: for the fused autograd nodes, which compute their own backward.
at::Tensor frozen_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         const at::Tensor& x_float = at::Tensor());

// dx = dy·weight, dy (..., out), weight (out, in) → (..., in) in dy's dtype: a frozen projection's input gradient.
at::Tensor frozen_linear_input_grad(const at::Tensor& dy, const at::Tensor& weight);

// A projection without an adapter, differentiable in x: frozen_linear forward and frozen_linear_input_grad backward
// in one autograd node (which keeps only the weight), so that the plain projections of a model whose adapters
// target a few modules take the same GEMM paths as the adapted ones. at::linear itself when the fused kernels are
// off (kernels::fused_kernels_enabled()) or the weight or bias needs a gradient.
at::Tensor frozen_linear_differentiable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

}  // namespace freehold::kernels
