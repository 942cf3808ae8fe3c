// Rotary position embedding (RoPE) applied to queries and keys, Hugging Face's rotate_half convention (Llama,
// Mistral, Qwen2, Qwen3), in the four parts every freehold kernel has: the ATen reference (the spec), a CPU fused
// kernel and a CUDA kernel that share their per-pair math (rope_math.h), and this binding, which checks tensors and
// picks one. The rope_scaling variants (linear, dynamic NTK, YaRN, Llama 3) and YaRN's attention scaling live in
// cos/sin (model/rotary_embedding.h computes them): the kernel rotates by whatever cos/sin it is given.
//
// Shapes: x (B, H, T, D) with D even (H may be H_kv), cos and sin (B, T, D) or (1, T, D). x may be strided in B, H
// and T (the model passes q.transpose(1, 2), memory (B, T, H, D)): the kernels read that layout in place.
//
// Errors in the arguments throw c10::Error (TORCH_CHECK) naming the function and the offending values.
#pragma once

#include <ATen/core/Tensor.h>

namespace freehold::kernels {

// The spec, in plain ATen; differentiable in x, cos and sin; any floating dtypes, any device:
//   x1, x2 = x[..., :D/2], x[..., D/2:];  return x * cos.unsqueeze(1) + cat(−x2, x1) * sin.unsqueeze(1)
// → (B, H, T, D) of dtype promote(x, cos, sin), laid out as x (ATen's elementwise rule).
at::Tensor rope_reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// The CPU fused kernel, forward only. x, cos and sin: one dtype of Float, BFloat16 and Half, on the CPU, none
// requiring grad while grad mode is on. Returns a new tensor laid out as x (at::empty_like). Equal to
// rope_reference bit for bit in every one of those dtypes (the same roundings, rope_math.h), and to rope_cuda.
at::Tensor rope_cpu(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

#if defined(FREEHOLD_WITH_CUDA)
// The CUDA kernel, on x's device and that device's current stream; otherwise as rope_cpu.
at::Tensor rope_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
#endif

// What the model calls: the result of rope_reference, computed by
//   - rope_cpu / rope_cuda on x's device, inside an autograd node when autograd needs a gradient through x (the
//     node saves cos and sin only, not x; its backward is rope_backward, the inverse rotation);
//   - rope_reference otherwise: fused kernels disabled (set_fused_kernels_enabled, rms_norm.h), the dtypes differ
//     or are not Float/BFloat16/Half, cos or sin needs a gradient, or the device has no fused kernel.
at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// Rotates x in place and returns it, for generation and inference: x must not need a gradient (grad mode off or
// x.requires_grad() false) and must not overlap itself (no expanded x). Fused as rope() picks; on the reference
// path the result is computed out of place and copied back (rounded to x's dtype when the dtypes differ).
const at::Tensor& rope_(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// The fused backward of rope: dx (B, H, T, D) = the transpose of the rotation applied to dy (B, H, T, D), i.e. the
// rotation by −θ for RotaryEmbedding's cos/sin; equal bit for bit to the gradient autograd gives rope_reference.
// dy, cos, sin: one dtype (Float/BFloat16/Half), CPU or (CUDA builds) CUDA. Returns a new tensor laid out as dy.
at::Tensor rope_backward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin);

// Throws unless x is (B, H, T, D) with D even, cos and sin are both (B, T, D) or (1, T, D) with x's T and D, all
// are defined floating-point tensors on one device. Every function above calls it first; `op` names the caller.
void check_rope_args(const char* op, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace freehold::kernels
