// What the tensor bindings of the raw-pointer kernels share: the map from a tensor's dtype to the ElementType the
// kernels take (kernels/host_device.h), nullopt for a dtype no kernel implements; whether autograd needs a tensor's
// gradient; whether this build has a kernel for a device. Host-only: it names ATen's types, which .cu files never
// include.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <optional>

#include "kernels/host_device.h"

namespace freehold::kernels {

inline std::optional<ElementType> element_type(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return ElementType::kF32;
    case at::kBFloat16:
      return ElementType::kBF16;
    case at::kHalf:
      return ElementType::kF16;
    default:
      return std::nullopt;
  }
}

inline bool needs_grad(const at::Tensor& t) { return at::GradMode::is_enabled() && t.requires_grad(); }

// The CPU always; CUDA in a FREEHOLD_WITH_CUDA build.
inline bool device_has_kernel(const at::Device& device) {
#if defined(FREEHOLD_WITH_CUDA)
  if (device.is_cuda()) return true;
#endif
  return device.is_cpu();
}

}  // namespace freehold::kernels
