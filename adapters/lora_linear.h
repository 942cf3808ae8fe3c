// LoRA and DoRA on one frozen projection, computed as PEFT 0.21.2 computes them (peft/tuners/lora/layer.py,
// dora.py), so adapters trained here load there and the reverse, with the same outputs.
//
//   LoRA:  y = W x + b + scale · B A dropout(x)
//   DoRA:  with x' = dropout(x) while training with dropout > 0, else x, and
//          n = ‖W + scale · (B A)‖ per output row, detached (DoRA §4.3: no gradient through the norm),
//          y = W x + b + (m/n − 1) ⊙ W x' + (m/n) ⊙ scale · B A x'
//          (at x' = x this is (m/n) ⊙ (W x + scale · B A x) + b: the direction of W + ΔW rescaled to length m).
// scale = alpha / r, or alpha / √r with rsLoRA. Dropout applies only while training; its mask is
// kernels/dropout.h's (the distribution of PEFT's nn.Dropout, drawn from one seed of the default generator).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "model/linear.h"

namespace freehold::adapters {

struct LoraLinearOptions {
  int64_t r = 8;
  double alpha = 8;
  double dropout = 0.0;
  bool use_rslora = false;
  bool use_dora = false;

  double scale() const;
};

class LoraLinear : public model::LinearAdapter {
 public:
  // lora_A (r, in) and lora_B (out, r) become the adapter's leaf parameters (requires_grad). With use_dora,
  // `magnitude` (out) is given (loaded) or, when undefined, initialised as PEFT does: ‖W + scale·BA‖ per row.
  LoraLinear(const model::Linear& base, LoraLinearOptions options, at::Tensor lora_A, at::Tensor lora_B,
             at::Tensor magnitude = {});

  at::Tensor forward(const model::Linear& base, const at::Tensor& x) const override;

  // Dropout is applied only while training (PEFT's module.training); false at construction.
  void set_training(bool training) { training_ = training; }
  // Plain LoRA computes through kernels::lora_linear_fused (one autograd node that keeps x and x·Aᵀ for backward
  // instead of the adapter-dtype copies of x) when on; DoRA always takes the reference path. Off at construction;
  // the trainer turns it on per model.fused_kernels.
  void set_fused(bool fused) { fused_ = fused; }
  bool fused() const { return fused_; }
  bool training() const { return training_; }

  const LoraLinearOptions& options() const { return options_; }
  double scale() const { return options_.scale(); }
  const at::Tensor& lora_A() const { return lora_A_; }        // (r, in), requires grad
  const at::Tensor& lora_B() const { return lora_B_; }        // (out, r), requires grad
  const at::Tensor& magnitude() const { return magnitude_; }  // (out), requires grad; undefined without DoRA
  // ΔW = scale · B A (out, in), float32, detached: what a merge adds to W for plain LoRA.
  at::Tensor delta_weight() const;
  // DoRA's n = ‖W + scale·BA‖ per output row (out), detached, in float32.
  at::Tensor dora_weight_norm(const at::Tensor& weight) const;

 private:
  // x ⊙ keep / (1 − p) with a fresh seed from the generator of x's device (kernels::dropout_reference).
  at::Tensor dropout(const at::Tensor& x) const;

  LoraLinearOptions options_;
  at::Tensor lora_A_;     // (r, in)
  at::Tensor lora_B_;     // (out, r)
  at::Tensor magnitude_;  // (out)
  bool training_ = false;
  bool fused_ = false;
};

}  // namespace freehold::adapters
