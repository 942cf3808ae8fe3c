// Choosing a model directory's weight files and cross-checking a sharded model's index against its shards.
#include "io/weight_files.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"

namespace freehold::io {
namespace {

using Kind = SafetensorsErrorKind;

constexpr uint64_t kMaxIndexBytes = uint64_t{64} << 20;  // a 10,000-tensor index is about 1 MB

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);  // follows symlinks, as the HF cache uses them
}

std::string join_path(const std::string& dir, std::string_view name) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, std::string(name));
  return absl::StrCat(dir, "/", std::string(name));
}

// Plain file names in `dir`, sorted.
std::vector<std::string> list_files(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (is_regular_file(entry.path().string())) out.push_back(entry.path().filename().string());
  }
  if (ec) throw core::SystemError(absl::StrCat("cannot list the model directory ", dir), ec.value());
  std::sort(out.begin(), out.end());
  return out;
}

std::string pickle_refusal(const std::string& dir, const std::vector<std::string>& pickles) {
  return absl::StrCat(
      "the directory holds only PyTorch pickle weights (", absl::StrJoin(pickles, ", "),
      ") and no safetensors. freehold never unpickles: loading a pickle can run arbitrary code. Convert the model "
      "once, in a Python environment you trust, e.g.\n"
      "  python -c \"from transformers import AutoModelForCausalLM; "
      "AutoModelForCausalLM.from_pretrained('", dir, "').save_pretrained('", dir, "', safe_serialization=True)\"\n"
      "or, for a single file:\n"
      "  python -c \"import torch; from safetensors.torch import save_file; "
      "save_file(torch.load('", pickles.front(), "', weights_only=True), 'model.safetensors', "
      "metadata={'format': 'pt'})\"");
}

}  // namespace

void WeightFiles::add_file(std::shared_ptr<SafetensorsFile> file) {
  const size_t index = files_.size();
  for (const TensorInfo& t : file->header().tensors) {
    auto [it, inserted] = entries_.emplace(t.name, Entry{index, &t});
    if (!inserted) {
      throw SafetensorsError(Kind::kInvalidIndex, source_, t.name,
                             absl::StrCat("the tensor is in both ", files_[it->second.file]->path(), " and ",
                                          file->path(), "; each tensor must be in exactly one shard"));
    }
    total_bytes_ += t.num_bytes();
  }
  shard_paths_.push_back(file->path());
  files_.push_back(std::move(file));
}

WeightFiles WeightFiles::open_file(const std::string& path) {
  WeightFiles out;
  out.source_ = path;
  out.add_file(SafetensorsFile::open(path));
  return out;
}

WeightFiles WeightFiles::open_model_dir(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) throw core::SystemError(absl::StrCat("cannot open the model directory ", dir), errno);
  if (!S_ISDIR(st.st_mode)) throw core::FormatError(absl::StrCat(dir, ": not a directory (a model is a directory)"));

  const std::string single = join_path(dir, kSingleWeightsFile);
  const std::string index_path = join_path(dir, kWeightsIndexFile);
  const bool has_single = is_regular_file(single);
  const bool has_index = is_regular_file(index_path);

  if (has_single) {
    // transformers prefers the single file too; loading the same weights as the reference matters more here.
    if (has_index) core::log_warning(dir, ": has both ", kSingleWeightsFile, " and ", kWeightsIndexFile, "; using ",
                                     kSingleWeightsFile, " as transformers does");
    WeightFiles out = open_file(single);
    out.source_ = dir;
    return out;
  }

  if (has_index) {
    const SafetensorsIndex index = parse_safetensors_index(core::read_file(index_path, kMaxIndexBytes), index_path);
    WeightFiles out;
    out.source_ = dir;
    for (const std::string& shard : index.shard_names()) {
      const std::string shard_path = join_path(dir, shard);
      if (!is_regular_file(shard_path)) {
        throw SafetensorsError(Kind::kInvalidIndex, index_path, "",
                               absl::StrCat("weight_map names the shard ", shard, ", but ", shard_path,
                                            " does not exist or is not a file (incomplete download?)"));
      }
      std::shared_ptr<SafetensorsFile> file = SafetensorsFile::open(shard_path);
      // Every tensor of the shard must be mapped to this very shard.
      for (const TensorInfo& t : file->header().tensors) {
        auto it = index.weight_map.find(t.name);
        if (it == index.weight_map.end()) {
          throw SafetensorsError(Kind::kInvalidIndex, index_path, t.name,
                                 absl::StrCat("the tensor is in ", shard, " but not in the index's weight_map"));
        }
        if (it->second != shard) {
          throw SafetensorsError(Kind::kInvalidIndex, index_path, t.name,
                                 absl::StrCat("the tensor is in ", shard, " but the index places it in ", it->second,
                                              "; each tensor must be in exactly one shard"));
        }
      }
      out.add_file(std::move(file));
    }
    // And every tensor of the index must be in its shard.
    for (const auto& [name, shard] : index.weight_map) {
      if (out.entries_.count(name) == 0) {
        throw SafetensorsError(Kind::kInvalidIndex, index_path, name,
                               absl::StrCat("the index places the tensor in ", shard, ", which does not contain it"));
      }
    }
    return out;
  }

  const std::vector<std::string> files = list_files(dir);
  std::vector<std::string> safetensors, pickles;
  for (const std::string& name : files) {
    if (ends_with(name, ".safetensors")) safetensors.push_back(name);
    if (ends_with(name, ".bin") || ends_with(name, ".pt") || ends_with(name, ".pth")) pickles.push_back(name);
  }
  if (safetensors.size() == 1) {
    WeightFiles out = open_file(join_path(dir, safetensors.front()));
    out.source_ = dir;
    return out;
  }
  if (safetensors.size() > 1) {
    throw SafetensorsError(Kind::kInvalidIndex, dir, "",
                           absl::StrCat("the directory has ", safetensors.size(), " safetensors files (",
                                        absl::StrJoin(safetensors, ", "), ") but no ", kSingleWeightsFile, " and no ",
                                        kWeightsIndexFile, " saying which hold the model"));
  }
  if (!pickles.empty()) throw SafetensorsError(Kind::kNotSafetensors, dir, "", pickle_refusal(dir, pickles));
  throw core::FormatError(absl::StrCat(dir, ": no model weights: expected ", kSingleWeightsFile, " or ",
                                       kWeightsIndexFile, " with its shards"));
}

std::vector<std::string> WeightFiles::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

bool WeightFiles::contains(std::string_view name) const { return entries_.count(std::string(name)) != 0; }

const WeightFiles::Entry& WeightFiles::entry(std::string_view name) const {
  auto it = entries_.find(std::string(name));
  if (it != entries_.end()) return it->second;
  // Suggest names that differ by a prefix (a "model." too many or too few is the usual mistake), else a few names.
  std::vector<std::string> all = names();
  std::vector<std::string> near;
  for (const std::string& candidate : all) {
    if (near.size() < 3 && (ends_with(candidate, name) || ends_with(name, candidate))) near.push_back(candidate);
  }
  const bool close = !near.empty();
  if (!close) {
    for (size_t i = 0; i < all.size() && i < 5; ++i) near.push_back(all[i]);
  }
  throw SafetensorsError(Kind::kMissingTensor, source_, std::string(name),
                         absl::StrCat("no such tensor among the ", all.size(), close ? "; did you mean " : "; e.g. ",
                                      absl::StrJoin(near, ", "), close || all.size() <= near.size() ? "" : ", …"));
}

const TensorInfo& WeightFiles::info(std::string_view name) const { return *entry(name).info; }

at::Tensor WeightFiles::tensor(std::string_view name) const {
  return files_[entry(name).file]->tensor(name);
}

at::Tensor WeightFiles::read_copy(std::string_view name) const {
  return files_[entry(name).file]->read_copy(name);
}

const std::string& WeightFiles::file_of(std::string_view name) const { return files_[entry(name).file]->path(); }

const std::map<std::string, std::string>& WeightFiles::metadata() const {
  static const std::map<std::string, std::string> kNone;
  return files_.empty() ? kNone : files_.front()->metadata();
}

}  // namespace freehold::io
