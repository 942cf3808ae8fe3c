// RMSNorm forward with Hugging Face LlamaRMSNorm semantics (Llama, Mistral, Qwen2, Qwen3), in the four parts every
// freehold kernel has: the ATen reference (the spec), a CPU fused kernel and a CUDA kernel that share their per-row
// math (rms_norm_math.h), and this binding, which checks tensors and picks one.
//
// rms_norm_cpu / rms_norm_cuda are forward-only; while autograd needs a gradient, rms_norm() runs them inside one
// autograd node whose backward is rms_norm_backward (the same lane math, CPU and GPU bit-identical).
//
// Errors in the arguments throw c10::Error (TORCH_CHECK) naming the function and the offending values.
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>

namespace freehold::kernels {

// The spec, in plain ATen; differentiable; any floating dtype, any device:
//   x32 = x.to(float32); y = x32 * rsqrt(mean(x32^2, -1, keepdim) + eps); return weight * y.to(x.dtype)
// x (..., C), weight (C) -> (..., C) of dtype promote(weight.dtype, x.dtype).
at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);

// The CPU fused kernel. x (..., C) and weight (C): both Float, BFloat16 or Half, the same dtype, on the CPU,
// not requiring grad while grad mode is on. Non-contiguous inputs are accepted and copied to contiguous first.
// Returns a new contiguous tensor of x's shape and dtype. Bit-identical to rms_norm_cuda on the same input.
at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& weight, double eps);

#if defined(FREEHOLD_WITH_CUDA)
// The CUDA kernel, on x's device and that device's current stream; otherwise as rms_norm_cpu.
at::Tensor rms_norm_cuda(const at::Tensor& x, const at::Tensor& weight, double eps);
#endif

// True when this build has the CUDA kernels (configured with -DFREEHOLD_CUDA=ON).
bool cuda_kernels_built();

// What the model calls: the result of rms_norm_reference, computed by
//   - rms_norm_cuda  when x is on a CUDA device and the CUDA kernels are built,
//   - rms_norm_cpu   when x is on the CPU,
//   each inside an autograd node with rms_norm_backward when autograd needs a gradient through x or weight;
//   - rms_norm_reference otherwise: fused kernels disabled (set_fused_kernels_enabled), x and weight differ in
//     dtype, the dtype is not Float/BFloat16/Half, or the device has no fused kernel.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// The fused backward (rms_norm_math.h): x (..., C), weight (C), dy like x, one dtype (Float/BFloat16/Half), CPU or
// (CUDA builds) CUDA → {dx like x, dweight (C) in weight's dtype, summed over rows in float32}.
std::pair<at::Tensor, at::Tensor> rms_norm_backward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& dy,
                                                    double eps);

// Process-wide switch for the fused kernels the model calls directly (rms_norm); on by default. The trainer sets it
// from model.fused_kernels (off, or auto with a failed self-check, turns it off).
void set_fused_kernels_enabled(bool enabled);
bool fused_kernels_enabled();

// Throws unless x (..., C) and weight (C) are defined floating-point tensors on one device, weight has C elements
// and eps is finite and >= 0. Every function above calls it first; `op` names the caller in the message.
void check_rms_norm_args(const char* op, const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace freehold::kernels
