// The LibTorch half of io/safetensors.h: mapping and views, pread copies, and the atomic (sharded) writer.
#include "io/safetensors.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/ScalarType.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/checked_math.h"
#include "core/error.h"
#include "core/file.h"
#include "nlohmann/json.hpp"

namespace freehold::io {

// Tensor bytes go to and from disk as they are in memory; safetensors is little-endian.
static_assert(std::endian::native == std::endian::little, "freehold reads and writes safetensors on little-endian hosts");

namespace {

using Kind = SafetensorsErrorKind;

// Reads up to `size` bytes at `offset`, retrying short reads; returns fewer only at end of file.
size_t pread_fully(int fd, void* buffer, size_t size, uint64_t offset, const std::string& path) {
  auto* out = static_cast<char*>(buffer);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw core::SystemError(absl::StrCat("cannot read ", path), errno);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Called only when the length prefix is already invalid, since a valid header length can start with 0x80 0x02.
bool looks_like_pytorch_file(std::string_view prefix, const std::string& path) {
  if (prefix.size() >= 2 && static_cast<uint8_t>(prefix[0]) == 0x80 && prefix[1] >= 2 && prefix[1] <= 5) {
    return true;  // pickle protocol 2..5 (legacy torch.save)
  }
  if (prefix.substr(0, 4) == std::string_view("PK\x03\x04", 4)) return true;  // zip (torch.save since 1.6)
  return ends_with(path, ".bin") || ends_with(path, ".pt") || ends_with(path, ".pth");
}

std::string describe_shape(at::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

// The dtype a tensor is written as, or kInvalidDType naming it.
core::DType dtype_for_write(const at::Tensor& tensor, const std::string& file, const std::string& name) {
  try {
    return from_scalar_type(tensor.scalar_type());
  } catch (const core::Error& e) {
    throw SafetensorsError(Kind::kInvalidDType, file, name, e.what());
  }
}

// Byte size of a shape, or kValidationOverflow / kInvalidShape.
uint64_t checked_num_bytes(core::DType dtype, at::IntArrayRef shape, const std::string& file, const std::string& name) {
  if (shape.size() > static_cast<size_t>(kMaxTensorRank)) {
    throw SafetensorsError(Kind::kInvalidShape, file, name,
                           absl::StrCat("rank ", shape.size(), " is above the maximum of ", kMaxTensorRank));
  }
  uint64_t bytes = static_cast<uint64_t>(core::dtype_size(dtype));
  for (int64_t d : shape) {
    if (d < 0) throw SafetensorsError(Kind::kInvalidShape, file, name, absl::StrCat("shape ", describe_shape(shape)));
    std::optional<uint64_t> next = core::checked_mul(bytes, static_cast<uint64_t>(d));
    if (!next || *next > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw SafetensorsError(Kind::kValidationOverflow, file, name,
                             absl::StrCat("shape ", describe_shape(shape), " is more bytes than fit in 63 bits"));
    }
    bytes = *next;
  }
  return bytes;
}

// Streams one tensor's bytes (contiguous, CPU, little-endian) into `out`.
void write_tensor_data(core::AtomicFile& out, const at::Tensor& tensor, const TensorInfo& info) {
  if (tensor.layout() != at::kStrided) {
    throw SafetensorsError(Kind::kInvalidDType, out.path(), info.name, "only dense (strided) tensors can be written");
  }
  // resolve_conj/resolve_neg: a lazily negated view has the right values but not the right bytes.
  at::Tensor t = tensor.resolve_conj().resolve_neg();
  if (!t.device().is_cpu()) t = t.cpu();
  t = t.contiguous();
  FH_CHECK(static_cast<uint64_t>(t.nbytes()) == info.num_bytes(), info.name, ": ", t.nbytes(),
           " bytes in memory, ", info.num_bytes(), " in the header");
  if (info.num_bytes() > 0) out.write(t.const_data_ptr(), info.num_bytes());
}

std::string shard_file_name(size_t index, size_t count) {
  if (count == 1) return std::string(kSingleWeightsFile);
  return absl::StrFormat("model-%05d-of-%05d.safetensors", index + 1, count);
}

// model-00001-of-00003.safetensors, with exactly five digits each.
bool is_shard_file_name(std::string_view name) {
  constexpr std::string_view kPrefix = "model-", kMiddle = "-of-", kSuffix = ".safetensors";
  if (name.size() != kPrefix.size() + 5 + kMiddle.size() + 5 + kSuffix.size()) return false;
  auto digits = [&](size_t at) {
    return std::all_of(name.begin() + at, name.begin() + at + 5, [](char c) { return c >= '0' && c <= '9'; });
  };
  return name.substr(0, kPrefix.size()) == kPrefix && digits(kPrefix.size()) &&
         name.substr(kPrefix.size() + 5, kMiddle.size()) == kMiddle &&
         digits(kPrefix.size() + 5 + kMiddle.size()) && ends_with(name, kSuffix);
}

// Removes weight files of an earlier save that are not among `keep`, so no reader (ours or transformers', which
// prefers model.safetensors over an index) can pick them up.
void remove_stale_weight_files(const std::string& dir, const std::vector<std::string>& keep) {
  std::set<std::string> kept(keep.begin(), keep.end());
  if (keep.size() > 1) kept.insert(std::string(kWeightsIndexFile));
  std::error_code ec;
  bool removed = false;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    bool ours = name == kSingleWeightsFile || name == kWeightsIndexFile || is_shard_file_name(name);
    if (!ours || kept.count(name) != 0) continue;
    if (::unlink(entry.path().c_str()) != 0 && errno != ENOENT) {
      throw core::SystemError(absl::StrCat("cannot remove the stale weight file ", entry.path().string()), errno);
    }
    removed = true;
  }
  if (ec) throw core::SystemError(absl::StrCat("cannot list ", dir), ec.value());
  if (removed) core::fsync_directory(dir);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// dtypes

at::ScalarType to_scalar_type(core::DType dtype) {
  switch (dtype) {
    case core::DType::kF64: return at::kDouble;
    case core::DType::kF32: return at::kFloat;
    case core::DType::kF16: return at::kHalf;
    case core::DType::kBF16: return at::kBFloat16;
    case core::DType::kI64: return at::kLong;
    case core::DType::kI32: return at::kInt;
    case core::DType::kI16: return at::kShort;
    case core::DType::kI8: return at::kChar;
    case core::DType::kU8: return at::kByte;
    case core::DType::kBool: return at::kBool;
  }
  FH_CHECK(false, "unknown DType ", static_cast<int>(dtype));
}

core::DType from_scalar_type(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return core::DType::kF64;
    case at::kFloat: return core::DType::kF32;
    case at::kHalf: return core::DType::kF16;
    case at::kBFloat16: return core::DType::kBF16;
    case at::kLong: return core::DType::kI64;
    case at::kInt: return core::DType::kI32;
    case at::kShort: return core::DType::kI16;
    case at::kChar: return core::DType::kI8;
    case at::kByte: return core::DType::kU8;
    case at::kBool: return core::DType::kBool;
    default:
      throw core::Error(absl::StrCat("tensor type ", c10::toString(type),
                                     " cannot be stored; supported safetensors dtypes: ", core::supported_dtype_names()));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Reading

struct SafetensorsFile::Mapping {
  void* address = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (address != nullptr) ::munmap(address, size);
  }
};

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw core::SystemError(absl::StrCat("cannot open ", path), errno);
  FdCloser closer(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw core::SystemError(absl::StrCat("cannot stat ", path), errno);
  if (!S_ISREG(st.st_mode)) throw core::FormatError(absl::StrCat(path, ": not a regular file"));
  const auto file_size = static_cast<uint64_t>(st.st_size);

  // The length first, from at most 8 bytes: nothing is allocated from an untrusted length before it is checked.
  char prefix_bytes[8] = {};
  const size_t prefix_size = pread_fully(fd, prefix_bytes, std::min<uint64_t>(8, file_size), 0, path);
  const std::string_view prefix(prefix_bytes, prefix_size);
  if (prefix_size < std::min<uint64_t>(8, file_size)) {
    throw SafetensorsError(Kind::kHeaderTooSmall, path, "", "the file shrank while it was being opened");
  }
  uint64_t n = 0;
  try {
    n = parse_safetensors_header_length(prefix, file_size, path);
  } catch (const SafetensorsError& e) {
    if (looks_like_pytorch_file(prefix, path)) {
      throw SafetensorsError(
          Kind::kNotSafetensors, path, "",
          absl::StrCat("this looks like a PyTorch pickle/zip file (torch.save), not safetensors. freehold never "
                       "unpickles (loading a pickle can run arbitrary code). Convert it once, in Python you trust: "
                       "python -c \"import torch; from safetensors.torch import save_file; "
                       "save_file(torch.load('IN.bin', weights_only=True), 'model.safetensors', "
                       "metadata={'format': 'pt'})\" (for a whole model: AutoModelForCausalLM.from_pretrained(DIR)"
                       ".save_pretrained(OUT, safe_serialization=True)). Reader said: ",
                       e.what()));
    }
    throw;
  }
  std::string bytes(8 + n, '\0');
  std::memcpy(bytes.data(), prefix_bytes, 8);
  const size_t got = pread_fully(fd, bytes.data() + 8, n, 8, path);
  if (got != n) {
    throw SafetensorsError(Kind::kInvalidHeaderLength, path, "",
                           absl::StrCat("the file ended after ", 8 + got, " bytes while reading the ", n,
                                        "-byte header (was it truncated while being opened?)"));
  }
  SafetensorsHeader header = parse_safetensors_header(bytes, file_size, path);

  // Private, copy-on-write: an accidental write through a view changes our copy of the page, never the file.
  // MAP_NORESERVE: nothing is written in normal use, so reserving swap for the whole file would only make a large
  // model fail to map on machines with strict overcommit accounting.
  void* address = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
  if (address == MAP_FAILED) throw core::SystemError(absl::StrCat("cannot mmap ", path), errno);
  auto mapping = std::make_shared<Mapping>();
  mapping->address = address;
  mapping->size = file_size;
  return std::make_shared<SafetensorsFile>(PrivateTag{}, path, closer.release(), file_size, mtime_ns(st),
                                           std::move(header), std::move(mapping));
}

SafetensorsFile::SafetensorsFile(PrivateTag, std::string path, int fd, uint64_t file_size, int64_t mtime_ns,
                                 SafetensorsHeader header, std::shared_ptr<Mapping> mapping)
    : path_(std::move(path)),
      fd_(fd),
      file_size_(file_size),
      mtime_ns_(mtime_ns),
      header_(std::move(header)),
      mapping_(std::move(mapping)) {
  by_name_.reserve(header_.tensors.size());
  for (size_t i = 0; i < header_.tensors.size(); ++i) by_name_.emplace(header_.tensors[i].name, i);
}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) ::close(fd_);
}

bool SafetensorsFile::contains(std::string_view name) const { return by_name_.count(std::string(name)) != 0; }

const TensorInfo& SafetensorsFile::info(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  if (it == by_name_.end()) {
    std::vector<std::string> some;
    for (size_t i = 0; i < header_.tensors.size() && i < 5; ++i) some.push_back(header_.tensors[i].name);
    throw SafetensorsError(
        Kind::kMissingTensor, path_, std::string(name),
        absl::StrCat("not in the file, which has ", header_.tensors.size(), " tensors",
                     some.empty() ? "" : absl::StrCat(", e.g. ", absl::StrJoin(some, ", "),
                                                      header_.tensors.size() > some.size() ? ", …" : "")));
  }
  return header_.tensors[it->second];
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(header_.tensors.size());
  for (const TensorInfo& t : header_.tensors) out.push_back(t.name);
  return out;
}

at::Tensor SafetensorsFile::tensor(std::string_view name) const {
  const TensorInfo& t = info(name);
  const auto options = at::TensorOptions().dtype(to_scalar_type(t.dtype)).device(at::kCPU);
  if (t.num_bytes() == 0) return at::empty(t.shape, options);  // never forms a pointer into the mapping (S20)
  char* data = static_cast<char*>(mapping_->address) + header_.data_offset() + t.begin;
  if (reinterpret_cast<uintptr_t>(data) % static_cast<uintptr_t>(core::dtype_size(t.dtype)) != 0) {
    // Writers that do not pad the header leave the data unaligned; ATen kernels assume natural alignment.
    at::Tensor copy = at::empty(t.shape, options);
    std::memcpy(copy.data_ptr(), data, t.num_bytes());
    return copy;
  }
  std::shared_ptr<Mapping> keep_alive = mapping_;
  return at::from_blob(data, t.shape, [keep_alive](void*) {}, options);
}

void SafetensorsFile::check_unchanged() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw core::SystemError(absl::StrCat("cannot stat ", path_), errno);
  if (static_cast<uint64_t>(st.st_size) != file_size_ || mtime_ns(st) != mtime_ns_) {
    throw SafetensorsError(Kind::kMetadataIncompleteBuffer, path_, "",
                           absl::StrCat("the file changed since it was opened (", file_size_, " bytes then, ",
                                        st.st_size, " now, or a new modification time); refusing to read "
                                        "tensors from it. Do not modify a model while freehold reads it."));
  }
}

at::Tensor SafetensorsFile::read_copy(std::string_view name) const {
  const TensorInfo& t = info(name);
  at::Tensor out = at::empty(t.shape, at::TensorOptions().dtype(to_scalar_type(t.dtype)).device(at::kCPU));
  if (t.num_bytes() == 0) return out;
  check_unchanged();
  const size_t got = pread_fully(fd_, out.data_ptr(), t.num_bytes(), header_.data_offset() + t.begin, path_);
  if (got != t.num_bytes()) {
    throw SafetensorsError(Kind::kMetadataIncompleteBuffer, path_, t.name,
                           absl::StrCat("the file ended after ", got, " of the tensor's ", t.num_bytes(),
                                        " bytes (truncated since it was opened?)"));
  }
  check_unchanged();  // and not during the read either
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Writing

void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<TensorInfo> infos;
  infos.reserve(tensors.size());
  uint64_t offset = 0;
  for (const NamedTensor& nt : tensors) {
    validate_tensor_name(nt.name, path);
    if (!nt.tensor.defined()) throw SafetensorsError(Kind::kInvalidDType, path, nt.name, "the tensor is undefined");
    TensorInfo info;
    info.name = nt.name;
    info.dtype = dtype_for_write(nt.tensor, path, nt.name);
    info.shape = nt.tensor.sizes().vec();
    const uint64_t bytes = checked_num_bytes(info.dtype, nt.tensor.sizes(), path, nt.name);
    std::optional<uint64_t> end = core::checked_add(offset, bytes);
    if (!end) throw SafetensorsError(Kind::kValidationOverflow, path, nt.name, "the file would exceed 2^64 bytes");
    info.begin = offset;
    info.end = *end;
    offset = *end;
    infos.push_back(std::move(info));
  }
  // Validates names, duplicates and metadata before anything touches the disk.
  const std::string header = serialize_safetensors_header(infos, metadata, path);
  core::AtomicFile out(path);
  out.write(header);
  for (size_t i = 0; i < tensors.size(); ++i) write_tensor_data(out, tensors[i].tensor, infos[i]);
  FH_CHECK(out.bytes_written() == header.size() + offset, path, ": wrote ", out.bytes_written(), " bytes");
  out.commit();
}

struct ShardedSafetensorsWriter::Shard {
  std::string file_name;
  std::string header;  // length prefix + padded JSON
  std::vector<TensorInfo> tensors;
  uint64_t data_bytes = 0;
  std::unique_ptr<core::AtomicFile> file;  // opened at its first tensor
};

ShardedSafetensorsWriter::ShardedSafetensorsWriter(std::string dir, std::vector<TensorPlan> plan,
                                                   uint64_t max_shard_bytes, std::map<std::string, std::string> metadata)
    : dir_(std::move(dir)), plan_(std::move(plan)) {
  if (max_shard_bytes == 0) throw core::UsageError("the maximum shard size must be at least 1 byte");
  metadata.emplace("format", "pt");
  const std::string index_path = absl::StrCat(dir_, "/", kWeightsIndexFile);

  // Greedy in plan order, as transformers does: a shard is closed when the next tensor would take it over the
  // limit, unless it is still empty (so a tensor larger than the limit gets a shard of its own).
  std::set<std::string_view> names;
  uint64_t shard_bytes = 0;
  for (size_t i = 0; i < plan_.size(); ++i) {
    const TensorPlan& p = plan_[i];
    validate_tensor_name(p.name, index_path);
    if (!names.insert(p.name).second) {
      throw SafetensorsError(Kind::kDuplicateName, index_path, p.name, "two tensors in the plan have this name");
    }
    const uint64_t bytes = checked_num_bytes(p.dtype, p.shape, index_path, p.name);
    plan_bytes_.push_back(bytes);
    std::optional<uint64_t> total = core::checked_add(total_bytes_, bytes);
    if (!total) throw SafetensorsError(Kind::kValidationOverflow, index_path, p.name, "the model exceeds 2^64 bytes");
    total_bytes_ = *total;
    std::optional<uint64_t> grown = core::checked_add(shard_bytes, bytes);
    const bool new_shard = shards_.empty() || (!shards_.back()->tensors.empty() && (!grown || *grown > max_shard_bytes));
    if (new_shard) {
      shards_.push_back(std::make_unique<Shard>());
      shard_bytes = 0;
    }
    Shard& shard = *shards_.back();
    TensorInfo info;
    info.name = p.name;
    info.dtype = p.dtype;
    info.shape = p.shape;
    info.begin = shard.data_bytes;
    info.end = shard.data_bytes + bytes;  // cannot overflow: bounded by total_bytes_
    shard.data_bytes = info.end;
    shard.tensors.push_back(std::move(info));
    shard_bytes += bytes;
    shard_of_.push_back(shards_.size() - 1);
  }
  if (shards_.empty()) shards_.push_back(std::make_unique<Shard>());  // an empty model is one empty file

  for (size_t s = 0; s < shards_.size(); ++s) {
    Shard& shard = *shards_[s];
    shard.file_name = shard_file_name(s, shards_.size());
    shard.header = serialize_safetensors_header(shard.tensors, metadata, absl::StrCat(dir_, "/", shard.file_name));
  }

  core::create_directories(dir_);
}

ShardedSafetensorsWriter::~ShardedSafetensorsWriter() = default;

std::vector<std::string> ShardedSafetensorsWriter::shard_file_names() const {
  std::vector<std::string> out;
  for (const auto& shard : shards_) out.push_back(shard->file_name);
  return out;
}

void ShardedSafetensorsWriter::add(const std::string& name, const at::Tensor& tensor) {
  FH_CHECK(!finished_, "add(", name, ") after finish() in ", dir_);
  FH_CHECK(next_ < plan_.size(), "add(", name, ") after all ", plan_.size(), " planned tensors in ", dir_);
  const TensorPlan& p = plan_[next_];
  FH_CHECK(name == p.name, "tensors must be added in plan order: expected ", p.name, ", got ", name);
  Shard& shard = *shards_[shard_of_[next_]];
  const std::string path = absl::StrCat(dir_, "/", shard.file_name);
  if (!tensor.defined()) throw SafetensorsError(Kind::kTensorInvalidInfo, path, name, "the tensor is undefined");
  const core::DType dtype = dtype_for_write(tensor, path, name);
  if (dtype != p.dtype || tensor.sizes() != at::IntArrayRef(p.shape)) {
    throw SafetensorsError(Kind::kTensorInvalidInfo, path, name,
                           absl::StrCat("the tensor is ", std::string(core::dtype_name(dtype)), " ", describe_shape(tensor.sizes()),
                                        " but the plan says ", std::string(core::dtype_name(p.dtype)), " ",
                                        describe_shape(p.shape)));
  }
  if (!shard.file) {
    shard.file = std::make_unique<core::AtomicFile>(path);
    shard.file->write(shard.header);
  }
  const TensorInfo* info = nullptr;
  for (const TensorInfo& t : shard.tensors) {
    if (t.name == name) info = &t;
  }
  FH_CHECK(info != nullptr);
  write_tensor_data(*shard.file, tensor, *info);
  ++next_;
}

void ShardedSafetensorsWriter::finish() {
  FH_CHECK(!finished_, "finish() twice in ", dir_);
  FH_CHECK(next_ == plan_.size(), "finish() after ", next_, " of ", plan_.size(), " planned tensors in ", dir_);
  for (auto& shard : shards_) {
    if (!shard->file) {  // only a shard of an empty plan
      shard->file = std::make_unique<core::AtomicFile>(absl::StrCat(dir_, "/", shard->file_name));
      shard->file->write(shard->header);
    }
    FH_CHECK(shard->file->bytes_written() == shard->header.size() + shard->data_bytes, shard->file_name, ": wrote ",
             shard->file->bytes_written(), " bytes");
  }
  for (auto& shard : shards_) shard->file->commit();
  if (shards_.size() > 1) {
    nlohmann::json weight_map = nlohmann::json::object();
    for (size_t i = 0; i < plan_.size(); ++i) weight_map[plan_[i].name] = shards_[shard_of_[i]]->file_name;
    nlohmann::json index = {{"metadata", {{"total_size", total_bytes_}}}, {"weight_map", std::move(weight_map)}};
    core::write_file_atomic(absl::StrCat(dir_, "/", kWeightsIndexFile), index.dump(2) + "\n");
  }
  remove_stale_weight_files(dir_, shard_file_names());
  finished_ = true;
}

void save_sharded_safetensors(const std::string& dir, const std::vector<NamedTensor>& tensors,
                              uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  std::vector<TensorPlan> plan;
  plan.reserve(tensors.size());
  for (const NamedTensor& nt : tensors) {
    if (!nt.tensor.defined()) throw SafetensorsError(Kind::kTensorInvalidInfo, dir, nt.name, "the tensor is undefined");
    plan.push_back({nt.name, dtype_for_write(nt.tensor, dir, nt.name), nt.tensor.sizes().vec()});
  }
  ShardedSafetensorsWriter writer(dir, std::move(plan), max_shard_bytes, metadata);
  for (const NamedTensor& nt : tensors) writer.add(nt.name, nt.tensor);
  writer.finish();
}

uint64_t parse_size(std::string_view text) {
  auto bad = [&](std::string_view why) -> core::UsageError {
    return core::UsageError(absl::StrCat(
        "size '", std::string(text), "' ", std::string(why),
        "; use an integer with an optional unit: B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024), "
        "e.g. 5GB"));
  };
  size_t digits = 0;
  uint64_t value = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    std::optional<uint64_t> next = core::checked_mul(value, 10);
    if (next) next = core::checked_add(*next, static_cast<uint64_t>(text[digits] - '0'));
    if (!next) throw bad("is too large");
    value = *next;
    ++digits;
  }
  if (digits == 0) throw bad("does not start with a number");
  const std::string_view written = text.substr(digits);
  std::string unit(written);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (!written.empty() && written.back() == 'b' && unit.find('I') == std::string::npos) {
    throw bad("ends in a lowercase b, which transformers reads as bits; write B for bytes");
  }
  static const std::pair<std::string_view, uint64_t> kUnits[] = {
      {"", 1},           {"B", 1},           {"KB", 1000},          {"MB", 1000'000},
      {"GB", 1000'000'000}, {"KIB", uint64_t{1} << 10}, {"MIB", uint64_t{1} << 20}, {"GIB", uint64_t{1} << 30},
  };
  for (const auto& [name, scale] : kUnits) {
    if (unit != name) continue;
    std::optional<uint64_t> bytes = core::checked_mul(value, scale);
    if (!bytes) throw bad("is too large");
    if (*bytes == 0) throw bad("is zero");
    return *bytes;
  }
  throw bad(absl::StrCat("has an unknown unit '", std::string(text.substr(digits)), "'"));
}

}  // namespace freehold::io
