// Writes small random-weight checkpoints for the model tests: a config.json and the tensors it implies, so a test
// can then break one tensor (shape, dtype, values) and check the loader's error. Conformance against transformers
// lives in tests/conformance/; these tests check freehold's own contracts.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>

#include "io/hf_config.h"

namespace freehold::model::testing {

// A Llama-shaped config.json text with the given sizes.
std::string llama_config_json(int64_t vocab, int64_t hidden, int64_t intermediate, int64_t layers, int64_t heads,
                              int64_t kv_heads, const std::string& dtype_name);

// Writes `dir`/config.json and `dir`/model.safetensors with random weights (std 0.05, norms around 1) in `dtype`.
// `edit(name, tensor)` may replace any tensor before it is written (return an undefined tensor to drop it).
void write_checkpoint(const std::string& dir, const std::string& config_json, at::ScalarType dtype, uint64_t seed,
                      const std::function<at::Tensor(const std::string&, at::Tensor)>& edit = nullptr);

std::string make_temp_dir(const std::string& tag);

}  // namespace freehold::model::testing
