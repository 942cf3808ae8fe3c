// AdamW over the adapters' named fp32 tensors, computing exactly what torch.optim.AdamW (torch 2.11, the
// single-tensor and foreach paths, which agree) computes, so a run here and the PEFT + torch reference loop take
// the same steps (tests/conformance/train_step_test.py). Per step t, for each tensor p with gradient g:
//
//   p  ← p · (1 − lr·wd)                       decoupled weight decay, before the Adam update
//   m  ← lerp(m, g, 1 − β1)                    exp_avg
//   v  ← β2·v + (1 − β2)·g²                    exp_avg_sq
//   p  ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
//
// Param groups for LoRA+ follow PEFT's create_loraplus_optimizer: a tensor is in the B group when its name holds
// "lora_B" or "lora_embedding_B", or it is 1-D (PEFT's `param.ndim == 1`, i.e. DoRA's magnitude); the B group's
// learning rate is lr × loraplus_lr_ratio. State (exp_avg, exp_avg_sq per tensor, and the step count) is fp32 and
// is saved as optimizer.safetensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/safetensors.h"

namespace freehold::trainer {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  std::optional<double> loraplus_lr_ratio;  // nullopt: one group
};

// PEFT's LoRA+ rule for the B group (see the file comment).
bool is_loraplus_b(std::string_view name, const at::Tensor& tensor);

class AdamW {
 public:
  // `params`: leaf fp32 tensors with requires_grad, each under a unique name. State is created zero-filled.
  AdamW(std::vector<io::NamedTensor> params, AdamWOptions options);

  // The factor this tensor's learning rate is multiplied by: loraplus_lr_ratio for the B group, else 1.
  double lr_multiplier(size_t index) const { return lr_multiplier_[index]; }
  // One update. Each tensor's learning rate is (lr × its multiplier) × schedule_factor, in that order, as torch's
  // LambdaLR computes group["initial_lr"] × lambda(step). Tensors without a gradient are left alone, as torch
  // does for p.grad None. The caller has checked that every gradient is finite.
  void step(double lr, double schedule_factor);
  // Drops every gradient (torch's zero_grad(set_to_none=True)).
  void zero_grad();
  // Optimizer steps taken (torch's state["step"]).
  int64_t steps_taken() const { return steps_taken_; }

  const std::vector<io::NamedTensor>& params() const { return params_; }
  // "exp_avg.<name>", "exp_avg_sq.<name>" for every tensor and "step" (a 0-d fp32 tensor), for optimizer.safetensors.
  std::vector<io::NamedTensor> state_tensors() const;
  void save(const std::string& path) const;
  // Restores state written by save() for the same tensor names and shapes; throws core::FormatError naming the
  // file and the missing, extra or mismatched tensor otherwise.
  void load(const std::string& path);

 private:
  std::vector<io::NamedTensor> params_;
  std::vector<double> lr_multiplier_;
  std::vector<at::Tensor> exp_avg_;     // like each param, fp32
  std::vector<at::Tensor> exp_avg_sq_;  // like each param, fp32
  AdamWOptions options_;
  int64_t steps_taken_ = 0;
};

}  // namespace freehold::trainer
