// All tensors of a model directory or a single safetensors file, as one name → tensor table over one or more
// SafetensorsFiles. Sharded directories are read through model.safetensors.index.json, which is cross-checked
// against the shards' own headers (S23). Pickles are refused, never loaded (S25).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_header.h"

namespace freehold::io {

class WeightFiles {
 public:
  // Picks the weights of a model directory the way transformers does: model.safetensors when present, else
  // model.safetensors.index.json and its shards, else the only *.safetensors file. A directory with several
  // *.safetensors files and no index, or none at all, is an error; one that holds only pytorch_model.bin / *.bin /
  // *.pt / *.pth is refused with kNotSafetensors and a hint on converting it.
  static WeightFiles open_model_dir(const std::string& dir);
  // One safetensors file (an adapter, a checkpoint file, a file given to `inspect`).
  static WeightFiles open_file(const std::string& path);

  // All tensor names, sorted.
  std::vector<std::string> names() const;
  size_t size() const { return entries_.size(); }
  bool contains(std::string_view name) const;
  // Throws kMissingTensor naming the directory, the tensor and a few names that exist.
  const TensorInfo& info(std::string_view name) const;
  // Zero-copy view of the shard's mapping (see SafetensorsFile::tensor).
  at::Tensor tensor(std::string_view name) const;
  // A pread copy that refuses a shard changed since it was opened (see SafetensorsFile::read_copy). For export.
  at::Tensor read_copy(std::string_view name) const;
  // Path of the file that holds `name`.
  const std::string& file_of(std::string_view name) const;
  const std::vector<std::string>& shard_paths() const { return shard_paths_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  // Sum of all tensors' bytes.
  uint64_t total_bytes() const { return total_bytes_; }
  // The first file's __metadata__ (transformers writes the same {"format": "pt"} into every shard).
  const std::map<std::string, std::string>& metadata() const;
  // The directory or file this was opened from, for messages.
  const std::string& source() const { return source_; }

 private:
  struct Entry {
    size_t file = 0;  // index into files_
    const TensorInfo* info = nullptr;
  };

  const Entry& entry(std::string_view name) const;
  void add_file(std::shared_ptr<SafetensorsFile> file);

  std::string source_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::vector<std::string> shard_paths_;
  std::unordered_map<std::string, Entry> entries_;
  uint64_t total_bytes_ = 0;
};

}  // namespace freehold::io
