// The safetensors header, parsed and validated without LibTorch (so the fuzz target builds in seconds).
// Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data section. Every check the
// reference Rust reader makes is made here (RELIABILITY.md S1–S22), each with its own SafetensorsErrorKind.
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

enum class SafetensorsErrorKind {
  kHeaderTooSmall,          // file shorter than 8 bytes, or N == 0 ... (see safetensors_header.cpp)
  kHeaderTooLarge,          // N > kMaxSafetensorsHeaderBytes
  kInvalidHeaderLength,     // N > file size - 8
  kInvalidHeaderUtf8,       // header bytes are not valid UTF-8, or contain NUL
  kInvalidHeaderJson,       // not JSON, not an object, nested too deep
  kInvalidTensorEntry,      // a tensor entry is not an object with exactly dtype, shape, data_offsets
  kInvalidDType,            // unknown or unsupported dtype
  kInvalidShape,            // shape not an array of non-negative integers, or rank too high
  kInvalidOffset,           // offsets not unsigned integers, begin > end, gaps, overlaps, not starting at 0
  kValidationOverflow,      // shape product or byte size overflows 64 bits
  kTensorInvalidInfo,       // element count × dtype size != end - begin
  kMetadataIncompleteBuffer,// data section does not end exactly at the end of the file
  kDuplicateName,           // the same tensor name twice
  kInvalidMetadata,         // __metadata__ not a string→string object
  kInvalidName,             // empty name, control characters, too long
  kMissingTensor,           // a tensor asked for is not in the file
  kInvalidIndex,            // model.safetensors.index.json problems (missing shard, duplicates, bad paths)
};

std::string_view safetensors_error_kind_name(SafetensorsErrorKind kind);

// A specific, user-facing safetensors problem naming the file and, where there is one, the tensor.
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
  core::DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t num_elements() const;
  uint64_t num_bytes() const { return end - begin; }
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;              // sorted by begin offset (file order)
  std::map<std::string, std::string> metadata;  // __metadata__
  uint64_t header_length = 0;                   // N
  uint64_t data_offset() const { return 8 + header_length; }
  uint64_t data_size = 0;                       // file size - 8 - N
  // Index into `tensors`, or -1.
  int64_t find(std::string_view name) const;
};

// Reads N from the first 8 bytes and checks it against the cap and the file size (S1–S4).
// `prefix` must hold at least min(8, file_size) bytes.
uint64_t parse_safetensors_header_length(std::string_view prefix, uint64_t file_size, const std::string& file);

// Validates the whole header: `file_bytes` holds at least the first 8 + N bytes of a file of `file_size` bytes.
SafetensorsHeader parse_safetensors_header(std::string_view file_bytes, uint64_t file_size, const std::string& file);

// Serializes a header for the writer: JSON with tensors in the given order, padded with spaces to a multiple of 8.
// Returns the 8-byte length prefix followed by the padded JSON.
std::string serialize_safetensors_header(const std::vector<TensorInfo>& tensors,
                                         const std::map<std::string, std::string>& metadata);

}  // namespace freehold::io
