// The loader: DataOptions' sources → a rank's stream of Batches (data/batch.h), packed or padded to seq_len, mixed
// by weight, deterministic in (seed, epoch, world size, global position), read ahead on a background thread with
// a bounded queue. See data/sampler.h for the order and the rank shares. Every epoch has batches_per_epoch()
// batches, the count epoch 0's packing gives; an epoch whose order packs into fewer rows repeats its first rows.
//
// Rows: with packing, documents follow each other in a row of seq_len tokens; position_ids restart at 0 and
// segment_ids count the documents of the row (padding at the end is one more segment); the first token of each
// document has label kIgnoreIndex, so nothing is predicted across documents. Without packing, one document per
// row, padded; segment_ids is undefined. Padding tokens are id 0 with label kIgnoreIndex.
#pragma once

#include <cstdint>
#include <memory>

#include "data/batch.h"
#include "data/data_options.h"

namespace freehold::data {

class Tokenizer;

// Opens the train (or, with eval, the eval) sources of `options` for `rank` of `world_size`. The tokenizer must
// outlive the source (JSONL sources tokenize on the fly; HDF5 ids are checked against its id limit, and a prepared
// file must have been made with the same tokenizer.json: its tokenizer_sha256). model_vocab_size (when > 0, the
// model's embedding rows) bounds HDF5 ids and a prepared file's vocab_size too.
// Throws UsageError for bad options, FormatError / DataError for bad files, DataError when the data gives fewer
// rows than one global micro-batch (world_size × micro_batch_size; RELIABILITY.md R10).
std::unique_ptr<BatchSource> open_batch_source(const DataOptions& options, const Tokenizer& tokenizer,
                                               int64_t micro_batch_size, uint64_t seed, int rank, int world_size,
                                               bool eval, int64_t model_vocab_size = 0);

}  // namespace freehold::data
