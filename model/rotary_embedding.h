// Rotary position embeddings (RoPE) with every scaling transformers applies to the Llama family: default, linear,
// dynamic NTK, YaRN and Llama 3. Frequencies are computed with the same float32 ATen operations, in the same order,
// as transformers' modeling_rope_utils, so cos/sin match it bit for bit in fp32.
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>

#include "io/hf_config.h"

namespace freehold::model {

class RotaryEmbedding {
 public:
  RotaryEmbedding() = default;
  RotaryEmbedding(const io::RopeConfig& rope, int64_t head_dim, int64_t max_position_embeddings);

  // position_ids: (B, T) int64 → cos, sin: (B, T, D) in `dtype`. Dynamic NTK recomputes the frequencies for the
  // longest position in the batch when it exceeds max_position_embeddings (stateless, per call).
  std::pair<at::Tensor, at::Tensor> cos_sin(const at::Tensor& position_ids, at::ScalarType dtype) const;

  const at::Tensor& inv_freq() const { return inv_freq_; }  // (D/2) float32
  double attention_scaling() const { return attention_scaling_; }

 private:
  io::RopeConfig rope_;
  int64_t head_dim_ = 0;
  int64_t max_position_embeddings_ = 0;
  at::Tensor inv_freq_;
  double attention_scaling_ = 1.0;
};

// x: (B, H, T, D); cos, sin: (B, T, D). Returns x·cos + rotate_half(x)·sin.
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace freehold::model
