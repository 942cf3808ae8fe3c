// Blocked causal attention on the fp32 CPU GEMMs; see causal_attention.h.
#include "kernels/causal_attention.h"

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "kernels/causal_attention_cpu.h"
#include "kernels/cpu_gemm.h"
#include "kernels/rms_norm.h"  // fused_kernels_enabled

namespace freehold::kernels {
namespace {

int64_t block_count(int64_t T) { return (T + kAttentionBlockRows - 1) / kAttentionBlockRows; }

// Scores of one query block against keys 0 .. q0 + rows: qs_b · k_hᵀ (rows, q0 + rows), the causal mask not yet
// applied (the row kernels apply it by position).
at::Tensor block_scores(const at::Tensor& qs_b, const at::Tensor& k_h, int64_t q0) {
  return gemm(qs_b, k_h.narrow(0, 0, q0 + qs_b.size(0)).t(), qs_b.size(1));
}

struct Saved {
  at::Tensor qs, k, v, out, lse;  // (B, H, T, D) q·scale, (B, H_kv, T, D) k and v, (B, H, T, D), (B, H, T)
};

// out and lse of every (b, h, query block), each block on one thread.
void forward_blocks(const Saved& s) {
  const int64_t B = s.qs.size(0), H = s.qs.size(1), T = s.qs.size(2), Hkv = s.k.size(1);
  const int64_t group = H / Hkv, blocks = block_count(T);
  at::parallel_for(0, B * H * blocks, 1, [&](int64_t begin, int64_t end) {
    const at::Tensor sum = at::empty({kAttentionBlockRows, 1}, s.qs.options());
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / (H * blocks), h = (i / blocks) % H, q0 = (i % blocks) * kAttentionBlockRows;
      const int64_t rows = std::min(kAttentionBlockRows, T - q0), keys = q0 + rows;
      const at::Tensor k_h = s.k[b][h / group], v_h = s.v[b][h / group];  // (T, D)
      const at::Tensor p = block_scores(s.qs[b][h].narrow(0, q0, rows), k_h, q0);  // (rows, keys)
      const at::Tensor sum_b = sum.narrow(0, 0, rows);
      attention_softmax_forward_rows(p.data_ptr<float>(), rows, keys, q0, sum_b.data_ptr<float>(),
                                     s.lse[b][h].narrow(0, q0, rows).data_ptr<float>());
      const at::Tensor out_b = s.out[b][h].narrow(0, q0, rows);  // (rows, D), contiguous
      gemm_out(out_b, p, v_h.narrow(0, 0, keys), keys);
      out_b.div_(sum_b);
    }
  });
}

// dq (B, H, T, D) and per-query-head dk, dv (B, H, T, D); each (b, h) on one thread, its blocks in order.
void backward_heads(const Saved& s, const at::Tensor& dout, double scale, const at::Tensor& dq, const at::Tensor& dk_h,
                    const at::Tensor& dv_h) {
  const int64_t B = s.qs.size(0), H = s.qs.size(1), T = s.qs.size(2), D = s.qs.size(3), Hkv = s.k.size(1);
  const int64_t group = H / Hkv;
  const at::Tensor delta = (dout * s.out).sum({3});  // (B, H, T): rowsum(dO ⊙ O)
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / H, h = i % H;
      const at::Tensor k_h = s.k[b][h / group], v_h = s.v[b][h / group], qs_h = s.qs[b][h];  // (T, D)
      const at::Tensor dk = dk_h[b][h], dv = dv_h[b][h];                                      // (T, D), zeros
      const float* lse = s.lse[b][h].data_ptr<float>();
      const float* delta_h = delta[b][h].data_ptr<float>();
      for (int64_t q0 = 0; q0 < T; q0 += kAttentionBlockRows) {
        const int64_t rows = std::min(kAttentionBlockRows, T - q0), keys = q0 + rows;
        const at::Tensor qs_b = qs_h.narrow(0, q0, rows), dout_b = dout[b][h].narrow(0, q0, rows);
        const at::Tensor p = block_scores(qs_b, k_h, q0);                   // (rows, keys): scores, then P
        const at::Tensor ds = gemm(dout_b, v_h.narrow(0, 0, keys).t(), D);  // dP, then dS of the unscaled scores
        attention_softmax_backward_rows(p.data_ptr<float>(), ds.data_ptr<float>(), rows, keys, q0, lse + q0,
                                        delta_h + q0);
        const at::Tensor dq_b = dq[b][h].narrow(0, q0, rows);
        gemm_out(dq_b, ds, k_h.narrow(0, 0, keys), keys);
        dq_b.mul_(scale);
        dk.narrow(0, 0, keys).add_(gemm(ds.t(), qs_b, rows));  // scale · dSᵀ·q = dSᵀ·(q·scale)
        dv.narrow(0, 0, keys).add_(gemm(p.t(), dout_b, rows));
      }
    }
  });
}

class CausalAttentionFunction : public torch::autograd::Function<CausalAttentionFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, double scale) {
    Saved s;
    s.qs = (q * scale).contiguous();
    s.k = k.contiguous();
    s.v = v.contiguous();
    s.out = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
    s.lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
    {
      at::NoGradGuard no_grad;
      forward_blocks(s);
    }
    ctx->save_for_backward({s.qs, s.k, s.v, s.out, s.lse});
    ctx->saved_data["scale"] = scale;
    return s.out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const Saved s{saved[0], saved[1], saved[2], saved[3], saved[4]};
    const double scale = ctx->saved_data["scale"].toDouble();
    const at::Tensor dout = grad_outputs[0].contiguous();
    const int64_t B = s.qs.size(0), H = s.qs.size(1), T = s.qs.size(2), D = s.qs.size(3), Hkv = s.k.size(1);
    const at::Tensor dq = at::empty_like(s.qs);
    const at::Tensor dk_h = at::zeros({B, H, T, D}, s.qs.options()), dv_h = at::zeros({B, H, T, D}, s.qs.options());
    backward_heads(s, dout, scale, dq, dk_h, dv_h);
    if (H == Hkv) return {dq, dk_h, dv_h, at::Tensor()};
    // Query head h read key/value head h / group: its gradients sum over the group.
    return {dq, dk_h.view({B, Hkv, H / Hkv, T, D}).sum(2), dv_h.view({B, Hkv, H / Hkv, T, D}).sum(2), at::Tensor()};
  }
};

}  // namespace

at::Tensor causal_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/std::nullopt, /*dropout_p=*/0.0, /*is_causal=*/true,
                                          scale, /*enable_gqa=*/q.size(1) != k.size(1));
}

bool causal_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4) return false;
  const bool cpu_fp32 = q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat &&
                        v.scalar_type() == at::kFloat && q.device().is_cpu() && k.device().is_cpu() &&
                        v.device().is_cpu();
  const int64_t H = q.size(1), Hkv = k.size(1);
  const bool shapes = q.size(0) == k.size(0) && k.sizes() == v.sizes() && q.size(2) == k.size(2) &&
                      q.size(3) == k.size(3) && Hkv > 0 && H % Hkv == 0 && q.size(2) > 0 && q.size(3) > 0;
  return cpu_fp32 && shapes && fused_kernels_enabled() && cpu_gemm_path() == CpuGemmPath::kOneDnn;
}

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  if (!causal_attention_applies(q, k, v)) return causal_attention_reference(q, k, v, scale);
  return CausalAttentionFunction::apply(q, k, v, scale);
}

}  // namespace freehold::kernels
