// A frozen projection y = x Wᵀ + b, kept under its Hugging Face name so checkpoints load unchanged (STYLE.md
// habit 5). Adapters (LoRA, DoRA) attach to it by composition: the model never knows what an adapter computes.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

namespace freehold::model {

class Linear;

// What adapters/ implements: the whole output of a wrapped projection, given the base projection and its input.
class LinearAdapter {
 public:
  virtual ~LinearAdapter() = default;
  // x: (..., in) → (..., out). `base` gives access to the frozen weight and bias (DoRA needs the weight norm).
  virtual at::Tensor forward(const Linear& base, const at::Tensor& x) const = 0;
};

class Linear {
 public:
  Linear() = default;
  Linear(std::string name, at::Tensor weight, at::Tensor bias)
      : name_(std::move(name)), weight_(std::move(weight)), bias_(std::move(bias)) {}

  // x: (..., in_features) → (..., out_features); through the adapter when one is attached.
  at::Tensor forward(const at::Tensor& x) const;
  // The frozen projection alone.
  at::Tensor base_forward(const at::Tensor& x) const;

  const std::string& name() const { return name_; }  // e.g. "model.layers.0.self_attn.q_proj"
  const at::Tensor& weight() const { return weight_; }  // (out, in), frozen
  const at::Tensor& bias() const { return bias_; }      // (out) or undefined
  int64_t in_features() const { return weight_.size(1); }
  int64_t out_features() const { return weight_.size(0); }

  // Replaces the frozen weight with one of the same shape and dtype: the residual W - scale·BA that PiSSA and
  // OLoRA initialisation leave in the base (adapters/lora_init.h). Nothing else changes a base weight.
  void set_weight(at::Tensor weight);

  void set_adapter(std::shared_ptr<const LinearAdapter> adapter) { adapter_ = std::move(adapter); }
  const std::shared_ptr<const LinearAdapter>& adapter() const { return adapter_; }

 private:
  std::string name_;
  at::Tensor weight_;
  at::Tensor bias_;
  std::shared_ptr<const LinearAdapter> adapter_;
};

}  // namespace freehold::model
