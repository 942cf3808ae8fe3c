// The HDF5 C API, checked: every call's return code is tested where it is made, HDF5's own error-stack printing is
// off, and a failure becomes a freehold error naming the file, the dataset and HDF5's message. One process-wide
// mutex serializes HDF5 calls (Debian's serial library is not thread-safe; the loader reads ahead on a thread).
//
// Reading is strict (RELIABILITY.md R1–R3): links must be hard links inside the file (external and soft links are
// refused before anything follows them), datasets must be contiguous or chunked in the file (no external storage,
// no virtual datasets), filters only shuffle, deflate and Fletcher32 (whose check stays on), and filter plugins
// are never loaded. File locking is off for readers (many ranks read one file, often over NFS or Lustre, where
// flock may be missing: R4); `prepare` writes a temp file and renames it, so readers never see a partial file.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace freehold::data::hdf5 {

// The lock every HDF5 call runs under; also installs the error handling on first use.
std::unique_lock<std::recursive_mutex> lock();

// Throws FormatError "<context>: HDF5: <messages of the error stack>" when status < 0 (or id < 0).
void check(herr_t status, const std::string& context);
hid_t check_id(hid_t id, const std::string& context);

// An owned HDF5 identifier, closed with the matching H5*close.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  Handle(Handle&& other) noexcept : id_(other.id_) { other.id_ = -1; }
  Handle& operator=(Handle&& other) noexcept;
  ~Handle() { reset(); }
  void reset();
  hid_t release() { hid_t id = id_; id_ = -1; return id; }  // the caller closes it
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = -1;
};

// How a dataset is stored, for `freehold inspect`.
struct DatasetLayout {
  std::vector<hsize_t> shape;
  std::string type;                  // "int32", "uint8", "float32", ...
  std::vector<hsize_t> chunk;        // empty when not chunked
  std::vector<std::string> filters;  // "shuffle", "deflate", "fletcher32", in pipeline order
};

// An HDF5 file opened read-only, strictly.
class ReadFile {
 public:
  explicit ReadFile(const std::string& path);  // FormatError / SystemError naming the path
  const std::string& path() const { return path_; }
  hid_t id() const { return file_.get(); }

  bool has_dataset(const std::string& name) const;  // a hard link to a dataset; refuses other links
  // Opens a dataset after checking its link, layout, storage and filters.
  Handle open_dataset(const std::string& name) const;
  // Shape of an open dataset.
  std::vector<hsize_t> shape(hid_t dataset, const std::string& name) const;
  // Element type class check: integer of any size (HDF5 converts on read).
  void expect_integer(hid_t dataset, const std::string& name) const;
  // Reads elements [start, start + count) of a 1-D dataset (or the rows of a 2-D one) converted to `memory_type`.
  void read_1d(hid_t dataset, const std::string& name, hid_t memory_type, hsize_t start, hsize_t count, void* out) const;
  void read_rows(hid_t dataset, const std::string& name, hid_t memory_type, hsize_t row, hsize_t rows, hsize_t width,
                 void* out) const;

  // Attributes of the root group: nullopt when absent; FormatError when of another type or not one element.
  std::optional<std::string> string_attribute(const std::string& name) const;
  std::optional<int64_t> int_attribute(const std::string& name) const;
  // Names of the root group's attributes, and one as display text (strings quoted, numbers as numbers).
  std::vector<std::string> attribute_names() const;
  std::string attribute_text(const std::string& name) const;
  // Shape, element type, chunking and filters of an open dataset.
  DatasetLayout layout(hid_t dataset, const std::string& name) const;

 private:
  Handle open_scalar_attribute(const std::string& name, H5T_class_t expected, const char* kind) const;
  std::string path_;
  Handle file_;
};

// The writer side of the prepared-dataset schema (DESIGN.md §5): extendible chunked datasets with shuffle, deflate
// and Fletcher32, appended in blocks, so memory stays bounded whatever the size.
class TokenFileWriter {
 public:
  explicit TokenFileWriter(const std::string& path);  // creates (truncates) `path`
  ~TokenFileWriter();
  void append(const std::vector<int32_t>& ids, const std::vector<uint8_t>& mask);  // one document
  void set_string_attribute(const std::string& name, const std::string& value);
  void set_int_attribute(const std::string& name, int64_t value);
  // Writes what is buffered and closes the file (then it may be fsynced and renamed).
  void close();
  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_docs() const { return static_cast<int64_t>(num_docs_); }

  static constexpr hsize_t kTokenChunk = 1 << 16;
  static constexpr hsize_t kOffsetChunk = 1 << 13;

 private:
  void flush();
  void extend_and_write(hid_t dataset, const std::string& name, hid_t memory_type, hsize_t old_size, hsize_t count,
                        const void* data);
  std::string path_;
  Handle file_, tokens_, mask_, offsets_;
  std::vector<int32_t> pending_ids_;
  std::vector<uint8_t> pending_mask_;
  std::vector<int64_t> pending_offsets_;
  int64_t num_tokens_ = 0;        // appended so far
  hsize_t written_tokens_ = 0;    // in the file
  hsize_t num_docs_ = 0;
  hsize_t written_offsets_ = 0;   // entries of /doc_offsets in the file
  bool closed_ = false;
};

}  // namespace freehold::data::hdf5
