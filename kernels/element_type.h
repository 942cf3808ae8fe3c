// The bindings' map from a tensor's dtype to the ElementType the raw-pointer kernels take (kernels/host_device.h);
// nullopt for a dtype no kernel implements. Host-only: it names ATen's ScalarType, which .cu files never include.
#pragma once

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

}  // namespace freehold::kernels
