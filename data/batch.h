// What the data side hands the trainer: one micro-batch of token sequences, and the position in the data stream
// that a checkpoint stores so a resumed run sees exactly the batches the uninterrupted run would have seen.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace freehold::data {

inline constexpr int64_t kIgnoreIndex = -100;  // label of a position that is not a training target (HF convention)

struct Batch {
  at::Tensor input_ids;     // (B, T) int64
  // (B, T) int64: labels[b, t] is the target predicted at position t-1 (HF convention: the model shifts), or
  // kIgnoreIndex. With packing, the first token of each document is kIgnoreIndex (never predicted across documents).
  at::Tensor labels;
  at::Tensor position_ids;  // (B, T) int64, restarting at 0 for each packed document
  at::Tensor segment_ids;   // (B, T) int64 document index within the row (attention stays inside a document), or
                            // undefined when each row is one sequence (padding rows have their own segment)
  int64_t num_target_tokens = 0;  // labels != kIgnoreIndex: this micro-batch's share of the step's loss denominator
};

// Where a rank is in its stream: a pure function of (seed, epoch, world size, global sample index).
struct DataPosition {
  int64_t epoch = 0;
  int64_t sample_index = 0;  // global index of the next sample (packed sequence) in this epoch's order
};

// A rank's stream of micro-batches. World size 1 is the normal case; every rank of a run sees the same number of
// batches per epoch (the tail that cannot be shared equally is dropped) so no rank waits on a collective alone.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // The next micro-batch, or nullopt at the end of the current epoch (the next call starts the next epoch).
  virtual std::optional<Batch> next() = 0;
  virtual DataPosition position() const = 0;
  virtual void seek(const DataPosition& position) = 0;
  // Micro-batches per epoch for this rank.
  virtual int64_t batches_per_epoch() const = 0;
};

}  // namespace freehold::data
