// Grouping of the LoRA projections that read one input; see lora_group.h.
#include "adapters/lora_group.h"

#include "adapters/lora_linear.h"
#include "kernels/lora_group_fused.h"

namespace freehold::adapters {
namespace {

const LoraLinear* lora_of(const model::Linear& linear) {
  return dynamic_cast<const LoraLinear*>(linear.adapter().get());
}

}  // namespace

bool joins_lora_group(const model::Linear& linear) {
  const LoraLinear* lora = lora_of(linear);
  if (lora == nullptr || !lora->fused() || lora->options().use_dora) return false;
  return !(lora->training() && lora->options().dropout > 0.0);  // the condition under which a mask is drawn
}

std::vector<at::Tensor> lora_group_forward(std::span<const model::Linear* const> projections, const at::Tensor& x) {
  std::vector<size_t> grouped;  // indices into projections
  for (size_t i = 0; i < projections.size(); ++i) {
    if (!joins_lora_group(*projections[i])) continue;
    if (!grouped.empty() &&
        lora_of(*projections[i])->lora_A().scalar_type() != lora_of(*projections[grouped[0]])->lora_A().scalar_type()) {
      continue;  // one GEMM needs one adapter dtype
    }
    grouped.push_back(i);
  }
  if (grouped.size() < 2) grouped.clear();  // a group of one is kernels::lora_linear_fused

  std::vector<at::Tensor> outputs(projections.size());
  if (!grouped.empty()) {
    std::vector<kernels::LoraGroupMember> members;
    members.reserve(grouped.size());
    for (size_t i : grouped) {
      const model::Linear& base = *projections[i];
      const LoraLinear& lora = *lora_of(base);
      members.push_back({base.weight(), base.bias(), lora.lora_A(), lora.lora_B(), lora.scale()});
    }
    std::vector<at::Tensor> y = kernels::lora_group_fused(x, members);
    for (size_t j = 0; j < grouped.size(); ++j) outputs[grouped[j]] = std::move(y[j]);
  }
  // The group draws nothing from the generator, so computing it first leaves the others' dropout masks as they are.
  for (size_t i = 0; i < projections.size(); ++i) {
    if (!outputs[i].defined()) outputs[i] = projections[i]->forward(x);
  }
  return outputs;
}

void set_lora_grouping(model::Transformer& model, bool on) {
  model.set_projection_group_forward(on ? &lora_group_forward : nullptr);
}

}  // namespace freehold::adapters
