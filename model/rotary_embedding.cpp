#include "model/rotary_embedding.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/where.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"
#include "kernels/rope.h"

namespace freehold::model {
namespace {

// 1 / base^(arange(0, D, 2) / D), float32, as transformers computes the unscaled frequencies.
at::Tensor base_inv_freq(double base, int64_t dim) {
  at::Tensor exponents = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  return 1.0 / at::pow(base, exponents);
}

at::Tensor llama3_inv_freq(const io::RopeConfig& rope, int64_t dim) {
  at::Tensor inv_freq = base_inv_freq(rope.theta, dim);
  const double old_context = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / rope.low_freq_factor;
  const double high_freq_wavelen = old_context / rope.high_freq_factor;
  at::Tensor wavelen = 2 * std::numbers::pi / inv_freq;
  // Long wavelengths are divided by the factor, short ones kept, the band between smoothly interpolated.
  at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq);
  at::Tensor smooth = (old_context / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
  at::Tensor is_medium = (wavelen < high_freq_wavelen).logical_not() * (wavelen > low_freq_wavelen).logical_not();
  return at::where(is_medium, smoothed, scaled);
}

// YaRN: frequencies blended between interpolation and extrapolation by a linear ramp over dimensions.
std::pair<at::Tensor, double> yarn_inv_freq(const io::RopeConfig& rope, int64_t dim) {
  const double factor = rope.factor;
  auto mscale_of = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
  double attention_factor;
  if (rope.attention_factor) {
    attention_factor = *rope.attention_factor;
  } else if (rope.mscale && rope.mscale_all_dim && *rope.mscale != 0 && *rope.mscale_all_dim != 0) {
    attention_factor = mscale_of(factor, *rope.mscale) / mscale_of(factor, *rope.mscale_all_dim);
  } else {
    attention_factor = mscale_of(factor, 1.0);
  }
  const double base = rope.theta;
  const double original = static_cast<double>(rope.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {
    return (static_cast<double>(dim) * std::log(original / (rotations * 2 * std::numbers::pi))) / (2 * std::log(base));
  };
  double low = correction_dim(rope.beta_fast);
  double high = correction_dim(rope.beta_slow);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // avoid a zero-width ramp

  at::Tensor pos_freqs = at::pow(base, at::arange(0, dim, 2).to(at::kFloat) / static_cast<double>(dim));
  at::Tensor extrapolation = 1.0 / pos_freqs;
  at::Tensor interpolation = 1.0 / (factor * pos_freqs);
  at::Tensor ramp = at::clamp((at::arange(dim / 2, at::kFloat) - low) / (high - low), 0, 1);
  at::Tensor extrapolation_factor = 1 - ramp;
  at::Tensor inv_freq = interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor;
  return {inv_freq, attention_factor};
}

at::Tensor dynamic_inv_freq(const io::RopeConfig& rope, int64_t dim, int64_t seq_len, int64_t max_positions) {
  const double len = static_cast<double>(std::max(seq_len, max_positions));
  const double base = rope.theta * std::pow(rope.factor * len / static_cast<double>(max_positions) - (rope.factor - 1),
                                            static_cast<double>(dim) / static_cast<double>(dim - 2));
  return base_inv_freq(base, dim);
}

}  // namespace

RotaryEmbedding::RotaryEmbedding(const io::RopeConfig& rope, int64_t head_dim, int64_t max_position_embeddings)
    : rope_(rope), head_dim_(head_dim), max_position_embeddings_(max_position_embeddings) {
  FH_CHECK(head_dim % 2 == 0, "head_dim ", head_dim);
  switch (rope.type) {
    case io::RopeType::kDefault:
      inv_freq_ = base_inv_freq(rope.theta, head_dim);
      break;
    case io::RopeType::kLinear:
      inv_freq_ = base_inv_freq(rope.theta, head_dim) / rope.factor;
      break;
    case io::RopeType::kDynamic:
      inv_freq_ = dynamic_inv_freq(rope, head_dim, max_position_embeddings, max_position_embeddings);
      break;
    case io::RopeType::kYarn:
      std::tie(inv_freq_, attention_scaling_) = yarn_inv_freq(rope, head_dim);
      break;
    case io::RopeType::kLlama3:
      inv_freq_ = llama3_inv_freq(rope, head_dim);
      break;
  }
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::cos_sin(const at::Tensor& position_ids,
                                                           at::ScalarType dtype) const {
  at::Tensor inv_freq = inv_freq_;
  if (rope_.type == io::RopeType::kDynamic) {
    int64_t seq_len = position_ids.max().item<int64_t>() + 1;
    if (seq_len > max_position_embeddings_) {
      inv_freq = dynamic_inv_freq(rope_, head_dim_, seq_len, max_position_embeddings_);
    }
  }
  inv_freq = inv_freq.to(position_ids.device());
  // (B, T, 1) * (D/2) → (B, T, D/2): one float32 product per element, as transformers' outer product.
  at::Tensor freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv_freq;
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos();
  at::Tensor sin = emb.sin();
  if (attention_scaling_ != 1.0) {
    cos = cos * attention_scaling_;
    sin = sin * attention_scaling_;
  }
  return {cos.to(dtype), sin.to(dtype)};
}

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // kernels::rope is the fused kernel while kernels::fused_kernels_enabled() (model.fused_kernels), else
  // kernels::rope_reference, this formula in ATen: both give the same bits (kernels/rope_math.h).
  return kernels::rope(x, cos, sin);
}

}  // namespace freehold::model
