// A dataset as the loader sees it: documents of token ids with their loss mask, read one at a time, never all at
// once. Three kinds: a prepared HDF5 file (DESIGN.md §5), users' HDF5 with fixed-length rows (/input_ids [S, T],
// optional /loss_mask [S, T]), and JSONL or text tokenized on the fly. Each keeps only its index (document
// lengths, and for JSONL the byte offset of each record) in memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace freehold::data {

class SampleBuilder;

class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  virtual int64_t num_docs() const = 0;
  virtual int64_t doc_length(int64_t doc) const = 0;
  // The first min(length, max_tokens) tokens of `doc` and their mask (1: a target). Throws FormatError naming the
  // file and dataset on unreadable data, DataError for a token id outside [0, vocab limit).
  virtual void read(int64_t doc, int64_t max_tokens, std::vector<int32_t>* ids, std::vector<uint8_t>* mask) const = 0;
  virtual const std::string& path() const = 0;
};

// Opens a prepared HDF5 file (attribute format = "freehold.tokens") or an HDF5 file with /input_ids rows; token
// ids must be below vocab_limit (the tokenizer's id limit).
std::unique_ptr<DocumentSource> open_hdf5_source(const std::string& path, int64_t vocab_limit);

// Indexes a JSONL or text file (one pass, every core), then tokenizes records again when they are read. Bad
// records are counted by reason (the first few logged with file:line); over max_bad_fraction: DataError.
std::unique_ptr<DocumentSource> open_jsonl_source(const std::string& path, const SampleBuilder& builder,
                                                  double max_bad_fraction);

// Whether `path` is read as HDF5 (.h5, .hdf5) rather than JSONL or text.
bool is_hdf5_path(const std::string& path);

}  // namespace freehold::data
