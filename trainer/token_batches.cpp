// The testing-only batch file reader; see token_batches.h.
#include "trainer/token_batches.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/ge.h>
#include <ATen/ops/lt.h>
#include <ATen/ops/ne.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "trainer/loss.h"

namespace freehold::trainer {

bool is_testing_batches_path(std::string_view path) {
  return absl::EndsWith(std::string(path), std::string(kTestingBatchesSuffix));
}

TokenBatchSource::TokenBatchSource(const std::string& path, int64_t micro_batch_size, int64_t vocab_size)
    : path_(path), micro_batch_size_(micro_batch_size) {
  auto file = io::SafetensorsFile::open(path);
  auto read = [&](const char* name) -> at::Tensor {
    at::Tensor t = file->read_copy(name);
    if (t.scalar_type() != at::kLong || t.dim() != 2) {
      throw core::FormatError(absl::StrCat(path, ": tensor \"", name, "\" is ", c10::toString(t.scalar_type()), " [",
                                           absl::StrJoin(t.sizes(), ","), "]; expected int64 (S, T)"));
    }
    return t;
  };
  input_ids_ = read("input_ids");
  labels_ = file->contains("labels") ? read("labels") : input_ids_;
  if (labels_.sizes() != input_ids_.sizes()) {
    throw core::FormatError(absl::StrCat(path, ": labels [", absl::StrJoin(labels_.sizes(), ","),
                                         "] and input_ids [", absl::StrJoin(input_ids_.sizes(), ","), "] differ"));
  }
  if (input_ids_.numel() > 0 &&
      (!at::ge(input_ids_, 0).all().item<bool>() || !at::lt(input_ids_, vocab_size).all().item<bool>())) {
    throw core::FormatError(absl::StrCat(path, ": input_ids hold ids outside [0, ", vocab_size, ")"));
  }
  at::Tensor valid = (labels_ == data::kIgnoreIndex) | (at::ge(labels_, 0) & at::lt(labels_, vocab_size));
  if (!valid.all().item<bool>()) {
    throw core::FormatError(absl::StrCat(path, ": labels hold values other than -100 and ids in [0, ", vocab_size, ")"));
  }
  if (batches_per_epoch() == 0) {
    throw core::FormatError(absl::StrCat(path, ": ", input_ids_.size(0), " rows make no micro-batch of ",
                                         micro_batch_size, " rows"));
  }
}

std::optional<data::Batch> TokenBatchSource::next() {
  if (position_.sample_index + micro_batch_size_ > input_ids_.size(0)) {
    ++position_.epoch;
    position_.sample_index = 0;
    return std::nullopt;
  }
  data::Batch batch;
  batch.input_ids = input_ids_.narrow(0, position_.sample_index, micro_batch_size_);
  batch.labels = labels_.narrow(0, position_.sample_index, micro_batch_size_);
  batch.num_target_tokens = count_target_tokens(batch.labels);
  position_.sample_index += micro_batch_size_;
  return batch;
}

void TokenBatchSource::seek(const data::DataPosition& position) {
  if (position.epoch < 0 || position.sample_index < 0 || position.sample_index > input_ids_.size(0)) {
    throw core::FormatError(absl::StrCat(path_, ": cannot seek to epoch ", position.epoch, " sample ",
                                         position.sample_index, " (", input_ids_.size(0), " rows)"));
  }
  position_ = position;
}

}  // namespace freehold::trainer
