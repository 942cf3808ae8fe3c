// The LM head and the cross-entropy loss in one pass (linear + cross-entropy), in the four parts every freehold
// kernel has: the ATen reference (the spec), the CPU and CUDA row kernels that share their math
// (cross_entropy_math.h), and this binding, which checks tensors and runs the chunked pass.
//
// The fused pass walks the tokens in chunks: logits of one chunk (rows, V) are computed with the backend's GEMM,
// the row kernel turns them into per-row losses and, in place, into d loss / d logits, and two more GEMMs of the
// same chunk give d loss / d hidden (and d loss / d weight when the weight requires grad). So the (N, V) logits
// never exist whole: at V = 152k that is what would otherwise dominate the step's memory. The gradients are
// computed in the forward call (for a unit upstream gradient) and scaled by the upstream gradient in backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace freehold::kernels {

struct LinearCrossEntropyOptions {
  int64_t ignore_index = -100;           // rows whose target is this contribute 0 and get a zero gradient
  // Logits of one chunk: rows = max(1, chunk_bytes / (V · element size)). 256 MiB keeps the GEMMs large enough to
  // run near the speed of one whole (N, V) GEMM on the CPU (bench/kernels) while the logits of 4k tokens at a 152k
  // vocabulary would be 2.4 GiB in fp32.
  int64_t chunk_bytes = int64_t{256} << 20;
};

// The spec, in plain ATen; differentiable; any floating dtype, any device. hidden (N, C), weight (V, C), targets (N)
// int64 → Σ over rows with targets != ignore_index of −log_softmax(float(linear(hidden, weight)))[target], a 0-d
// float32 tensor. linear() runs in hidden's dtype (like a model's lm_head); the softmax in float32, as
// transformers' loss does (logits.float()). A target outside [0, V) that is not ignore_index throws.
at::Tensor linear_cross_entropy_reference(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                          int64_t ignore_index);

// The fused pass, differentiable through hidden and weight (whichever requires grad). hidden and weight: the same
// dtype, Float, BFloat16 or Half, on the CPU or (CUDA builds) a CUDA device; any strides. Same result as the
// reference within rounding: the fp32 sums run in another order, exp/log are cross_entropy_math.h's polynomials
// (3 ulp), and d hidden is computed with the unit upstream gradient and scaled afterwards.
at::Tensor linear_cross_entropy_fused(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                      const LinearCrossEntropyOptions& options = {});

// What the trainer calls: linear_cross_entropy_fused when `fused` and the tensors are fusable (same dtype, one of
// Float/BFloat16/Half, a device with a row kernel), else the reference.
at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                bool fused, const LinearCrossEntropyOptions& options = {});

// Whether linear_cross_entropy_fused accepts these tensors (dtypes and device); false means the reference is used.
bool linear_cross_entropy_fusable(const at::Tensor& hidden, const at::Tensor& weight);

// Throws unless hidden (N, C), weight (V, C) and targets (N) int64 are defined, on one device, floating (hidden,
// weight), with V >= 1, and every target is ignore_index or in [0, V). `op` names the caller in the message.
void check_linear_cross_entropy_args(const char* op, const at::Tensor& hidden, const at::Tensor& weight,
                                     const at::Tensor& targets, int64_t ignore_index);

}  // namespace freehold::kernels
