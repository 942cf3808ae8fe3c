// Reading and writing safetensors files with LibTorch. Reading maps the file copy-on-write after its header has
// been validated (io/safetensors_header.h) and hands out zero-copy CPU views; writing is atomic (temp file, fsync,
// rename) and streams one tensor at a time, also into transformers-style shards with an index.
//
// A file that is changed while it is open (S26): mapped views see in-place writes and fault (SIGBUS) on
// truncation, which is acceptable for the training read path but not for export, so export reads with
// read_copy(), which uses pread and refuses a file whose size or modification time changed since open(). A file
// replaced by rename (as our own writer does, S27) is never seen: the open descriptor and mapping keep the old one.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "io/safetensors_header.h"

namespace freehold::io {

at::ScalarType to_scalar_type(core::DType dtype);
// Throws core::Error naming the type and the supported ones for anything without a safetensors dtype here.
core::DType from_scalar_type(at::ScalarType type);

// One open safetensors file: the validated header, the descriptor (for pread) and a private mapping.
class SafetensorsFile {
 public:
  // fstat, pread the length and the header, validate, and only then mmap the whole file MAP_PRIVATE with
  // PROT_READ|PROT_WRITE: writes to a view copy the page and never reach the file. Throws SafetensorsError for
  // bad contents (kNotSafetensors for a PyTorch pickle or zip), core::SystemError for I/O errors.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  uint64_t file_size() const { return file_size_; }
  bool contains(std::string_view name) const;
  // Throws kMissingTensor naming the file, the tensor and a few names the file does have.
  const TensorInfo& info(std::string_view name) const;
  // In file (offset) order.
  std::vector<std::string> names() const;

  // A CPU tensor viewing the mapping: no copy unless the data is misaligned for its dtype. The mapping lives as
  // long as any such tensor. Zero-element tensors never touch the mapping (S20).
  at::Tensor tensor(std::string_view name) const;
  // A fresh CPU tensor filled with pread: independent of the mapping, and refuses (kMetadataIncompleteBuffer) a
  // file that was truncated, grown or rewritten since open(). Export uses this (S26).
  at::Tensor read_copy(std::string_view name) const;

  struct Mapping;  // munmaps on destruction

 private:
  struct PrivateTag {};

 public:
  SafetensorsFile(PrivateTag, std::string path, int fd, uint64_t file_size, int64_t mtime_ns, SafetensorsHeader header,
                  std::shared_ptr<Mapping> mapping);

 private:
  void check_unchanged() const;

  std::string path_;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  int64_t mtime_ns_ = 0;
  SafetensorsHeader header_;
  std::unordered_map<std::string, size_t> by_name_;
  std::shared_ptr<Mapping> mapping_;
};

struct NamedTensor {
  std::string name;
  at::Tensor tensor;
};

// Writes one safetensors file atomically (temp file, fsync, rename, fsync directory), so writing over a file that
// is currently open or mapped as a source is safe (S27). The header is padded so the data starts 8-byte aligned;
// tensors are written in the given order, each made contiguous and CPU first. Rejects duplicate and invalid names
// (kDuplicateName, kInvalidName) and dtypes without a safetensors name (kInvalidDType).
void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// One tensor of a sharded write, known before any data is.
struct TensorPlan {
  std::string name;
  core::DType dtype = core::DType::kF32;
  std::vector<int64_t> shape;
};

inline constexpr char kSingleWeightsFile[] = "model.safetensors";
inline constexpr char kWeightsIndexFile[] = "model.safetensors.index.json";

// Writes a model as transformers' save_pretrained does: tensors assigned to shards greedily in plan order so no
// shard holds more than max_shard_bytes of tensor data (a larger tensor gets a shard of its own), shards named
// model-00001-of-00003.safetensors plus model.safetensors.index.json, or a single model.safetensors and no index
// when everything fits in one shard. Each shard's header is known from the plan, so add() streams a tensor
// straight into its (temporary) shard file: peak memory is one tensor, not the model. Nothing appears under the
// final names until finish(); destroying the writer before finish() removes the temporary files. Every shard's
// metadata gets "format": "pt" unless given (transformers refuses shards with other metadata but no format).
// After the new files are committed, finish() removes weight files of an earlier save into the same directory
// that are not part of this one, so readers never pick up a stale index or single file.
class ShardedSafetensorsWriter {
 public:
  ShardedSafetensorsWriter(std::string dir, std::vector<TensorPlan> plan, uint64_t max_shard_bytes,
                           std::map<std::string, std::string> metadata = {});
  ~ShardedSafetensorsWriter();
  ShardedSafetensorsWriter(const ShardedSafetensorsWriter&) = delete;
  ShardedSafetensorsWriter& operator=(const ShardedSafetensorsWriter&) = delete;

  // Tensors must come in plan order; the dtype and shape must match the plan (kTensorInvalidInfo otherwise).
  void add(const std::string& name, const at::Tensor& tensor);
  // Commits every shard, then the index. All tensors of the plan must have been added.
  void finish();

  size_t num_shards() const { return shards_.size(); }
  // Final file names, in shard order ("model.safetensors" alone for one shard).
  std::vector<std::string> shard_file_names() const;
  // Sum of tensor bytes (the index's total_size).
  uint64_t total_bytes() const { return total_bytes_; }

 private:
  struct Shard;

  std::string dir_;
  std::vector<TensorPlan> plan_;
  std::vector<uint64_t> plan_bytes_;
  std::vector<size_t> shard_of_;  // plan index → shard index
  std::vector<std::unique_ptr<Shard>> shards_;
  size_t next_ = 0;
  uint64_t total_bytes_ = 0;
  bool finished_ = false;
};

// Convenience: a plan from the tensors themselves, then add each and finish.
void save_sharded_safetensors(const std::string& dir, const std::vector<NamedTensor>& tensors,
                              uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata = {});

// Parses a --max-shard-size value as transformers does: an integer with a unit, KB, MB, GB (powers of 1000) or
// KiB, MiB, GiB (powers of 1024), case-insensitive, or B or no unit for bytes. transformers reads a final lowercase
// "b" of KB/MB/GB as bits ("5Gb" is 625 MB there), so those spellings are refused rather than read differently.
// Throws core::UsageError for anything else, for 0 and for sizes that overflow.
uint64_t parse_size(std::string_view text);

}  // namespace freehold::io
