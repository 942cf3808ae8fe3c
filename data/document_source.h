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
class Tokenizer;

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

// What HDF5 token ids are checked against: the run's tokenizer (and the model's embedding rows, when known).
struct VocabularyCheck {
  int64_t id_limit = 0;          // every id must be in [0, id_limit): the tokenizer's id limit (or less, see below)
  std::string tokenizer_sha256;  // when set: a prepared file's tokenizer_sha256 attribute must equal it
  std::string tokenizer_path;    // names the run's tokenizer in errors
  int64_t model_vocab_size = 0;  // when > 0: a prepared file's vocab_size must not exceed it, and ids stay below it
};

// The check for `tokenizer` (its SHA-256 when it was loaded from a file) and, when > 0, the model's vocab_size.
VocabularyCheck vocabulary_check(const Tokenizer& tokenizer, int64_t model_vocab_size = 0);

// Opens a prepared HDF5 file (attribute format = "freehold.tokens") or an HDF5 file with /input_ids rows. A prepared
// file made with another tokenizer.json (tokenizer_sha256 differs) or for a larger vocabulary than the tokenizer's
// or the model's is refused (DataError naming both sides); ids are checked as they are read.
std::unique_ptr<DocumentSource> open_hdf5_source(const std::string& path, const VocabularyCheck& check);
// Only ids below vocab_limit (no tokenizer identity check).
std::unique_ptr<DocumentSource> open_hdf5_source(const std::string& path, int64_t vocab_limit);

// Indexes a JSONL or text file (one pass, every core), then tokenizes records again when they are read. Bad
// records are counted by reason (the first few logged with file:line); over max_bad_fraction: DataError.
std::unique_ptr<DocumentSource> open_jsonl_source(const std::string& path, const SampleBuilder& builder,
                                                  double max_bad_fraction);

// Whether `path` is read as HDF5 (.h5, .hdf5) rather than JSONL or text.
bool is_hdf5_path(const std::string& path);

}  // namespace freehold::data
