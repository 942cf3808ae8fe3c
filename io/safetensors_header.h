// The safetensors header and the sharded-model index, parsed and validated without LibTorch (so the fuzz targets
// build in seconds and never load an uninstrumented libtorch). Layout of a file: 8-byte little-endian header length
// N, N bytes of UTF-8 JSON, then the data section. Every check the reference Rust reader makes is made here
// (RELIABILITY.md S1–S20, S22, S23), each with its own SafetensorsErrorKind, plus a few stricter ones.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace freehold::io {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;  // the reference reader's MAX_HEADER_SIZE
inline constexpr int kMaxTensorRank = 8;
inline constexpr size_t kMaxTensorNameBytes = 4096;

enum class SafetensorsErrorKind {
  kHeaderTooSmall,           // file shorter than 8 bytes, or N < 2 (the smallest header is "{}")
  kHeaderTooLarge,           // N > kMaxSafetensorsHeaderBytes
  kInvalidHeaderLength,      // N > file size - 8
  kInvalidHeaderUtf8,        // header bytes are not valid UTF-8, or contain NUL
  kInvalidHeaderJson,        // not JSON, not an object, not starting with '{', trailing garbage
  kInvalidTensorEntry,       // a tensor entry is not an object with exactly dtype, shape, data_offsets
  kInvalidDType,             // missing, unknown or unsupported dtype
  kInvalidShape,             // shape missing or not an array of non-negative integers, or rank too high
  kInvalidOffset,            // offsets not two unsigned integers, begin > end, gaps, overlaps, not starting at 0
  kValidationOverflow,       // element count or byte size does not fit in 63 bits
  kTensorInvalidInfo,        // element count × dtype size != end - begin
  kMetadataIncompleteBuffer, // data section does not end exactly at the end of the file (or the file changed)
  kDuplicateName,            // the same tensor name twice
  kInvalidMetadata,          // __metadata__ not a string→string object
  kInvalidName,              // empty name, invalid UTF-8, control characters, too long, or "__metadata__"
  kMissingTensor,            // a tensor asked for is not in the file
  kInvalidIndex,             // model.safetensors.index.json problems (missing shard, duplicates, bad paths)
  kNotSafetensors,           // a PyTorch pickle (.bin/.pt) or zip where safetensors is expected (S25)
};

std::string_view safetensors_error_kind_name(SafetensorsErrorKind kind);

// A specific, user-facing safetensors problem naming the file and, where there is one, the tensor.
// what() reads "<file>: tensor '<tensor>': <detail>" (the tensor part only when there is one).
class SafetensorsError : public core::FormatError {
 public:
  SafetensorsError(SafetensorsErrorKind kind, std::string file, std::string tensor, const std::string& detail);
  SafetensorsErrorKind kind() const { return kind_; }
  const std::string& file() const { return file_; }
  const std::string& tensor() const { return tensor_; }

 private:
  SafetensorsErrorKind kind_;
  std::string file_;
  std::string tensor_;
};

// One tensor of the header. Offsets are relative to the start of the data section (8 + N).
struct TensorInfo {
  std::string name;
  core::DType dtype = core::DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
  // Product of the shape; a validated header guarantees it fits in int64_t.
  uint64_t num_elements() const;
  uint64_t num_bytes() const { return end - begin; }
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;              // sorted by (begin, end, name): file order
  std::map<std::string, std::string> metadata;  // __metadata__
  uint64_t header_length = 0;                   // N
  uint64_t data_size = 0;                       // file size - 8 - N
  uint64_t data_offset() const { return 8 + header_length; }
  // Index into `tensors`, or -1. Linear: callers that look up often build their own map.
  int64_t find(std::string_view name) const;
};

// Reads N from the first 8 bytes and checks it against the cap and the file size (S1–S4). Touches no memory
// beyond min(8, file_size) bytes of `prefix`, and allocates nothing, so it is safe on any length.
uint64_t parse_safetensors_header_length(std::string_view prefix, uint64_t file_size, const std::string& file);

// Validates the whole header: `file_bytes` holds at least the first 8 + N bytes of a file of `file_size` bytes
// (the data section itself is never read). Time and memory are linear in N with small constants (S22).
SafetensorsHeader parse_safetensors_header(std::string_view file_bytes, uint64_t file_size, const std::string& file);

// Throws kInvalidName unless `name` can be a tensor name: non-empty, at most kMaxTensorNameBytes, valid UTF-8,
// no control characters (C0, DEL, C1), and not "__metadata__". Names are never used as paths (S19), so '/' and
// ".." are allowed; they are just bytes.
void validate_tensor_name(std::string_view name, const std::string& file);

// Serializes a header for the writer: JSON with __metadata__ (when not empty) and then the tensors in the given
// order, padded with spaces so that the data section starts at a multiple of 8. Returns the 8-byte length prefix
// followed by the padded JSON. Throws SafetensorsError for invalid or duplicate names, invalid metadata, and a
// header over the cap; offsets must already be contiguous from 0 (checked: a caller bug otherwise).
// `file` names the destination in error messages.
std::string serialize_safetensors_header(const std::vector<TensorInfo>& tensors,
                                         const std::map<std::string, std::string>& metadata, const std::string& file);

// model.safetensors.index.json, as written by transformers' save_pretrained:
// {"metadata": {"total_size": N, ...}, "weight_map": {"tensor name": "model-00001-of-00002.safetensors", ...}}.
struct SafetensorsIndex {
  std::map<std::string, std::string> weight_map;  // tensor name → shard file name (a plain name, never a path)
  bool has_total_size = false;
  uint64_t total_size = 0;
  // The distinct shard names in weight_map, sorted.
  std::vector<std::string> shard_names() const;
};

// Parses and validates the index JSON (S23): weight_map present and non-empty, no duplicate tensor names, every
// value a plain file name inside the directory (not empty, no '/', '\\', NUL or control characters, not "." or
// ".."), and total_size, when present, an unsigned integer. Other keys of "metadata" are ignored. Throws
// SafetensorsError kInvalidIndex naming `file`. Bounded like the header parser.
SafetensorsIndex parse_safetensors_index(std::string_view json, const std::string& file);

// Throws kInvalidIndex unless `name` is a plain file name as described above.
void validate_shard_file_name(std::string_view name, const std::string& index_file);

}  // namespace freehold::io
