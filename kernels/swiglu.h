// SwiGLU, the gated activation of the Llama-family MLP (Llama, Mistral, Qwen2, Qwen3):
// down_proj(silu(gate_proj(x)) * up_proj(x)). This kernel is the silu(gate) * up in the middle, in the four parts
// every freehold kernel has: the ATen reference (the spec), a CPU fused kernel and a CUDA kernel that share their
// per-element math (swiglu_math.h), and this binding, which checks tensors, picks one and holds the autograd node.
//
// Shapes: gate and up (..., I) of one shape, the model's (B, T, I). The fused kernels read rows of I contiguous
// elements with any row stride in place (a gate and up narrowed out of one (B, T, 2I) projection are not copied);
// other layouts are copied to contiguous once. Results are new contiguous tensors of gate's shape.
//
// Errors in the arguments throw c10::Error (TORCH_CHECK) naming the function and the offending values.
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>

namespace freehold::kernels {

// The spec, in plain ATen; differentiable in gate and up (twice, too); any floating dtypes, any device:
//   at::silu(gate) * up  → (..., I) of dtype promote(gate, up).
at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up);

// The CPU fused kernel, forward only. gate and up: one dtype of Float, BFloat16 and Half, on the CPU, neither
// requiring grad while grad mode is on. Within a few fp32 ulp of swiglu_reference; in bf16/fp16 its bits but for
// rare elements up to two ulp off (none of 1.6M in bf16, 1 in 10^4 in fp16; swiglu_math.h says why). Equal to
// swiglu_cuda bit for bit.
at::Tensor swiglu_cpu(const at::Tensor& gate, const at::Tensor& up);

#if defined(FREEHOLD_WITH_CUDA)
// The CUDA kernel, on gate's device and that device's current stream; otherwise as swiglu_cpu.
at::Tensor swiglu_cuda(const at::Tensor& gate, const at::Tensor& up);
#endif

// What the model calls: the result of swiglu_reference, computed by
//   - swiglu_cpu / swiglu_cuda on gate's device, inside an autograd node when autograd needs a gradient through
//     gate or up. The node saves gate and up only; the reference's graph keeps silu(gate) as well, one (B, T, I)
//     tensor more per layer. Its backward is swiglu_backward (double backward: the reference's formulas in ATen);
//   - swiglu_reference otherwise: fused kernels disabled (set_fused_kernels_enabled, rms_norm.h), gate and up
//     differ in dtype, the dtype is not Float/BFloat16/Half, or the device has no fused kernel.
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

// The fused backward (swiglu_math.h): gate, up and dy of one shape, one dtype (Float/BFloat16/Half), CPU or (CUDA
// builds) CUDA → {d gate, d up}, contiguous, gate's shape and dtype. Both gradients always (one pass computes both).
std::pair<at::Tensor, at::Tensor> swiglu_backward(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& dy);

// Throws unless gate and up are defined floating-point tensors of one shape on one device. Every function above
// calls it first; `op` names the caller in the message.
void check_swiglu_args(const char* op, const at::Tensor& gate, const at::Tensor& up);

}  // namespace freehold::kernels
