// The `model:` section of a run config (DESIGN.md §4) as a plain struct.
#pragma once

#include <string>

#include "core/dtype.h"

namespace freehold::model {

enum class FusedKernels { kAuto, kOn, kOff };

struct ModelOptions {
  std::string path;                           // Hugging Face model directory
  core::DType dtype = core::DType::kBF16;     // dtype the frozen base is kept in
  FusedKernels fused_kernels = FusedKernels::kAuto;
  bool activation_checkpointing = false;      // recompute each layer's activations in the backward pass
};

}  // namespace freehold::model
