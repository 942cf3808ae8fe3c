// Causal self-attention on the CPU in fp32, forward and backward, on kernels/cpu_gemm.h's GEMMs: query blocks of
// kAttentionBlockRows rows against the keys up to the block's end, softmax in fp32 with the row's log-sum-exp
// kept, and the backward pass recomputing each block's probabilities from it (as flash attention does, with
// blocks as wide as the keys). ATen's CPU flash-attention kernel runs its GEMMs in MKL, which on AMD Zen leaves AVX-512 unused
// (docs/benchmarks.md: 27-65 GFLOP/s forward at seq 512-2048, 1/3 of an fp32 SmolLM2 step at 512); here they run
// where the other fp32 GEMMs do.
//
// No mask but the causal one, no KV cache, no dropout: packed segments, sliding windows and generation stay on
// ATen's scaled_dot_product_attention, which is also the spec. CPU only: on CUDA ATen's flash kernels are the fast
// path, so there is no CUDA version of this one.
#pragma once

#include <ATen/core/Tensor.h>

namespace freehold::kernels {

// Query rows per block. Fixed: the bits of a result do not depend on the thread count, since every block's GEMMs
// run single-threaded inside the parallel loop.
constexpr int64_t kAttentionBlockRows = 256;

// The spec: at::scaled_dot_product_attention(q, k, v, no mask, dropout 0, is_causal, scale, enable_gqa H != H_kv).
// q (B, H, T, D), k and v (B, H_kv, T, D), H a multiple of H_kv (query head h reads key/value head h / (H / H_kv),
// as transformers' repeat_kv) → (B, H, T, D). Differentiable through q, k and v.
at::Tensor causal_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale);

// Whether causal_attention takes these: CPU fp32 q, k and v of the shapes above with T ≥ 1, the fused kernels on
// and oneDNN running the fp32 GEMMs (with BLAS, ATen's kernel is as fast).
bool causal_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// The reference's value within fp32 rounding (the same products summed in another order), as one autograd node that
// keeps q, k, v, the output and the (B, H, T) log-sum-exp for the backward pass. Where causal_attention_applies is
// false it is the reference.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale);

}  // namespace freehold::kernels
