// AdamW as torch.optim.AdamW computes it; see adamw.h for the update, kernels/adamw.h for how it is computed.
#include "trainer/adamw.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros_like.h>

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "kernels/adamw.h"

namespace freehold::trainer {

bool is_loraplus_b(std::string_view name, const at::Tensor& tensor) {
  return name.find("lora_B") != std::string_view::npos || name.find("lora_embedding_B") != std::string_view::npos ||
         tensor.dim() == 1;
}

AdamW::AdamW(std::vector<io::NamedTensor> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  std::set<std::string> names;
  for (const io::NamedTensor& p : params_) {
    FH_CHECK(names.insert(p.name).second, "AdamW: tensor ", p.name, " given twice");
    FH_CHECK(p.tensor.scalar_type() == at::kFloat, "AdamW: ", p.name, " is not float32");
    FH_CHECK(p.tensor.requires_grad(), "AdamW: ", p.name, " does not require grad");
    lr_multiplier_.push_back(options_.loraplus_lr_ratio && is_loraplus_b(p.name, p.tensor) ? *options_.loraplus_lr_ratio
                                                                                           : 1.0);
    exp_avg_.push_back(at::zeros_like(p.tensor, at::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(at::zeros_like(p.tensor, at::MemoryFormat::Contiguous));
  }
}

void AdamW::step(double lr, double schedule_factor) {
  at::NoGradGuard no_grad;
  ++steps_taken_;
  std::vector<at::Tensor> params, grads;
  std::vector<double> lrs;
  params.reserve(params_.size());
  grads.reserve(params_.size());
  lrs.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    params.push_back(params_[i].tensor);
    grads.push_back(params_[i].tensor.grad());  // undefined: skipped, as torch skips p.grad None
    lrs.push_back((lr * lr_multiplier_[i]) * schedule_factor);
  }
  kernels::AdamWHyperparameters hyper;
  hyper.beta1 = options_.beta1;
  hyper.beta2 = options_.beta2;
  hyper.eps = options_.eps;
  hyper.weight_decay = options_.weight_decay;
  // The fused one-pass kernel when model.fused_kernels allows it and every tensor is contiguous float32 on one
  // device, else the ATen composition; on the CPU both give the same bits (kernels/adamw.h).
  kernels::adamw_step(params, grads, exp_avg_, exp_avg_sq_, lrs, hyper, steps_taken_);
}

void AdamW::zero_grad() {
  for (io::NamedTensor& p : params_) p.tensor.mutable_grad() = at::Tensor();
}

std::vector<io::NamedTensor> AdamW::state_tensors() const {
  std::vector<io::NamedTensor> out;
  out.push_back({"step", at::full({}, static_cast<float>(steps_taken_), at::TensorOptions().dtype(at::kFloat))});
  for (size_t i = 0; i < params_.size(); ++i) out.push_back({"exp_avg." + params_[i].name, exp_avg_[i]});
  for (size_t i = 0; i < params_.size(); ++i) out.push_back({"exp_avg_sq." + params_[i].name, exp_avg_sq_[i]});
  return out;
}

void AdamW::save(const std::string& path) const {
  io::save_safetensors(path, state_tensors(), {{"format", "pt"}, {"freehold.optimizer", "adamw"}});
}

void AdamW::load(const std::string& path) {
  auto file = io::SafetensorsFile::open(path);
  std::vector<io::NamedTensor> expected = state_tensors();
  std::set<std::string> expected_names;
  for (const io::NamedTensor& e : expected) expected_names.insert(e.name);
  for (const std::string& name : file->names()) {
    if (!expected_names.count(name)) {
      throw core::FormatError(absl::StrCat(path, ": tensor \"", name,
                                           "\" belongs to no adapter tensor of this run (the checkpoint's optimizer "
                                           "state is for other adapters)"));
    }
  }
  at::NoGradGuard no_grad;
  for (io::NamedTensor& e : expected) {
    if (!file->contains(e.name)) {
      throw core::FormatError(absl::StrCat(path, ": tensor \"", e.name, "\" is missing"));
    }
    at::Tensor t = file->tensor(e.name);
    if (t.scalar_type() != at::kFloat || t.sizes() != e.tensor.sizes()) {
      throw core::FormatError(absl::StrCat(path, ": tensor \"", e.name, "\" is ", c10::toString(t.scalar_type()), " [",
                                           absl::StrJoin(t.sizes(), ","), "]; expected Float [",
                                           absl::StrJoin(e.tensor.sizes(), ","), "]"));
    }
    if (e.name == "step") {
      const float s = t.item<float>();
      if (!(s >= 0) || s != std::floor(s)) {
        throw core::FormatError(absl::StrCat(path, ": step is ", s, "; expected a count >= 0"));
      }
      steps_taken_ = static_cast<int64_t>(s);
    } else {
      e.tensor.copy_(t);  // e.tensor aliases exp_avg_[i] / exp_avg_sq_[i]
    }
  }
}

}  // namespace freehold::trainer
