// The precompiled header shared by the torch-using libraries: the narrow ATen headers, never <torch/torch.h>.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/Functions.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
