// A testing-only data source: micro-batches read from a safetensors file of fixed-length rows, in file order, so
// a test and its Python oracle (tests/conformance/train_step_test.py) feed the model exactly the same token ids.
// The run config names it with a data path ending in ".batches.safetensors":
//
//   input_ids     int64 (S, T)   one sequence per row
//   labels        int64 (S, T)   optional; HF convention (-100: not a target); default: input_ids
//
// Each micro-batch is the next micro_batch_size rows; the tail that does not fill one is dropped; every epoch
// reads the same order (no shuffle). The real loaders (prepared HDF5, JSONL, packing, shuffling) are data/'s.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "data/batch.h"

namespace freehold::trainer {

inline constexpr std::string_view kTestingBatchesSuffix = ".batches.safetensors";

bool is_testing_batches_path(std::string_view path);

class TokenBatchSource : public data::BatchSource {
 public:
  // Throws core::FormatError naming the file for missing tensors, wrong dtypes or shapes, ids outside the vocab.
  TokenBatchSource(const std::string& path, int64_t micro_batch_size, int64_t vocab_size);

  std::optional<data::Batch> next() override;
  data::DataPosition position() const override { return position_; }
  void seek(const data::DataPosition& position) override;
  int64_t batches_per_epoch() const override { return input_ids_.size(0) / micro_batch_size_; }

 private:
  std::string path_;
  at::Tensor input_ids_;  // (S, T) int64
  at::Tensor labels_;     // (S, T) int64
  int64_t micro_batch_size_;
  data::DataPosition position_;
};

}  // namespace freehold::trainer
