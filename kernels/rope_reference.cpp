// RoPE's reference: transformers' apply_rotary_pos_emb (rotate_half convention) in plain ATen. The fused kernels are
// tested against it, and the model runs it when fused kernels are off.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>

#include "kernels/rope.h"

namespace freehold::kernels {

at::Tensor rope_reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  check_rope_args("rope_reference", x, cos, sin);
  const int64_t half = x.size(-1) / 2;
  const at::Tensor x1 = x.narrow(-1, 0, half);     // (B, H, T, D/2)
  const at::Tensor x2 = x.narrow(-1, half, half);  // (B, H, T, D/2)
  const at::Tensor rotated = at::cat({-x2, x1}, -1);  // rotate_half(x): (B, H, T, D)
  const at::Tensor c = cos.unsqueeze(1);  // (B, 1, T, D) broadcasts over heads
  const at::Tensor s = sin.unsqueeze(1);
  return x * c + rotated * s;
}

}  // namespace freehold::kernels
