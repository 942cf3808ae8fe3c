// The key/value cache of incremental decoding (`freehold generate`): each layer's keys and values, after RoPE, of
// every position seen so far, so a new token costs one row of attention instead of a forward over the whole text.
// Preallocated to a capacity; Transformer::hidden_states_cached appends to it and advances `length`.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "io/hf_config.h"

namespace freehold::model {

struct KvCache {
  std::vector<at::Tensor> keys;    // per layer (B, H_kv, capacity, D), positions [0, length) filled
  std::vector<at::Tensor> values;  // per layer (B, H_kv, capacity, D)
  int64_t length = 0;              // positions cached so far; the next token's position

  int64_t capacity() const { return keys.empty() ? 0 : keys[0].size(2); }

  // An empty cache for `batch` sequences of up to `capacity` positions, in the model's dtype and device.
  static KvCache allocate(const io::ModelConfig& config, int64_t batch, int64_t capacity,
                          const at::TensorOptions& options);
};

}  // namespace freehold::model
