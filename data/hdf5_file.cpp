// Checked HDF5 calls; strict reading; the streamed writer of prepared datasets.
#include "data/hdf5_file.h"

#include <H5PLpublic.h>

#include <cerrno>
#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/file.h"

namespace freehold::data::hdf5 {
namespace {

std::recursive_mutex& hdf5_mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

herr_t collect_message(unsigned n, const H5E_error2_t* error, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (n > 0) *out += "; ";
  *out += error->desc != nullptr ? error->desc : "?";
  if (error->func_name != nullptr) absl::StrAppend(out, " (", error->func_name, ")");
  return 0;
}

[[noreturn]] void fail(const std::string& context) {
  std::string messages;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_message, &messages);
  H5Eclear2(H5E_DEFAULT);
  throw core::FormatError(absl::StrCat(context, ": HDF5: ", messages.empty() ? "failed" : messages));
}

}  // namespace

std::unique_lock<std::recursive_mutex> lock() {
  std::unique_lock<std::recursive_mutex> guard(hdf5_mutex());
  static const bool initialized = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors become exceptions, never printed by the library
    H5PLset_loading_state(0);                     // never load filter plugins from files' requests
    return true;
  }();
  (void)initialized;
  return guard;
}

void check(herr_t status, const std::string& context) {
  if (status < 0) fail(context);
}

hid_t check_id(hid_t id, const std::string& context) {
  if (id < 0) fail(context);
  return id;
}

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    other.id_ = -1;
  }
  return *this;
}

void Handle::reset() {
  if (id_ < 0) return;
  auto guard = lock();
  // Close whatever kind of object this is; failures here leave nothing to recover.
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    default: break;
  }
  H5Eclear2(H5E_DEFAULT);
  id_ = -1;
}

// ---------------------------------------------------------------------------------------------------------------

ReadFile::ReadFile(const std::string& path) : path_(path) {
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) throw core::SystemError(absl::StrCat("opening HDF5 file ", path), errno);
  auto guard = lock();
  Handle fapl(check_id(H5Pcreate(H5P_FILE_ACCESS), path));
  check(H5Pset_file_locking(fapl.get(), false, true), path);
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (file < 0) {
    std::string messages;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_message, &messages);
    H5Eclear2(H5E_DEFAULT);
    throw core::FormatError(absl::StrCat(path, ": not a readable HDF5 file (truncated, corrupt or another format): ",
                                         messages));
  }
  file_ = Handle(file);
}

bool ReadFile::has_dataset(const std::string& name) const {
  auto guard = lock();
  htri_t exists = H5Lexists(file_.get(), name.c_str(), H5P_DEFAULT);
  check(exists, absl::StrCat(path_, ": looking up ", name));
  if (exists == 0) return false;
  H5L_info_t link;
  check(H5Lget_info(file_.get(), name.c_str(), &link, H5P_DEFAULT), absl::StrCat(path_, ": link ", name));
  if (link.type != H5L_TYPE_HARD) {
    throw core::FormatError(absl::StrCat(path_, ": ", name, " is a ", link.type == H5L_TYPE_EXTERNAL ? "external" : "soft",
                                         " link; only datasets stored in the file itself are read (HDF5 SECURITY)"));
  }
  H5O_info_t object;
  check(H5Oget_info_by_name(file_.get(), name.c_str(), &object, H5P_DEFAULT), absl::StrCat(path_, ": object ", name));
  if (object.type != H5O_TYPE_DATASET) throw core::FormatError(absl::StrCat(path_, ": ", name, " is not a dataset"));
  return true;
}

Handle ReadFile::open_dataset(const std::string& name) const {
  if (!has_dataset(name)) throw core::FormatError(absl::StrCat(path_, ": dataset ", name, " is missing"));
  auto guard = lock();
  const std::string where = absl::StrCat(path_, ": dataset ", name);
  Handle dapl(check_id(H5Pcreate(H5P_DATASET_ACCESS), where));
  check(H5Pset_chunk_cache(dapl.get(), 521, size_t{16} << 20, 1.0), where);
  Handle dataset(check_id(H5Dopen2(file_.get(), name.c_str(), dapl.get()), where));
  Handle dcpl(check_id(H5Dget_create_plist(dataset.get()), where));
  H5D_layout_t layout = H5Pget_layout(dcpl.get());
  if (layout != H5D_CONTIGUOUS && layout != H5D_CHUNKED && layout != H5D_COMPACT) {
    throw core::FormatError(absl::StrCat(where, " has a virtual or unknown layout; refused"));
  }
  int external = H5Pget_external_count(dcpl.get());
  check(external, where);
  if (external > 0) throw core::FormatError(absl::StrCat(where, " keeps its data in external files; refused"));
  int filters = H5Pget_nfilters(dcpl.get());
  check(filters, where);
  for (int i = 0; i < filters; ++i) {
    unsigned flags = 0;
    size_t n_values = 0;
    char filter_name[64] = {0};
    unsigned config = 0;
    H5Z_filter_t filter = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &n_values, nullptr,
                                         sizeof(filter_name), filter_name, &config);
    check(filter, where);
    if (filter != H5Z_FILTER_DEFLATE && filter != H5Z_FILTER_SHUFFLE && filter != H5Z_FILTER_FLETCHER32) {
      throw core::FormatError(absl::StrCat(where, " uses filter ", filter, " (\"", filter_name,
                                           "\"); only shuffle, deflate and fletcher32 are read (no plugins)"));
    }
  }
  return dataset;
}

std::vector<hsize_t> ReadFile::shape(hid_t dataset, const std::string& name) const {
  auto guard = lock();
  const std::string where = absl::StrCat(path_, ": dataset ", name);
  Handle space(check_id(H5Dget_space(dataset), where));
  int rank = H5Sget_simple_extent_ndims(space.get());
  check(rank, where);
  if (rank > 4) throw core::FormatError(absl::StrCat(where, " has rank ", rank));
  std::vector<hsize_t> dims(rank);
  check(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), where);
  return dims;
}

void ReadFile::expect_integer(hid_t dataset, const std::string& name) const {
  auto guard = lock();
  const std::string where = absl::StrCat(path_, ": dataset ", name);
  Handle type(check_id(H5Dget_type(dataset), where));
  if (H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_size(type.get()) > 8) {
    throw core::FormatError(absl::StrCat(where, " is not of an integer type"));
  }
}

void ReadFile::read_1d(hid_t dataset, const std::string& name, hid_t memory_type, hsize_t start, hsize_t count,
                       void* out) const {
  if (count == 0) return;
  auto guard = lock();
  const std::string where = absl::StrCat(path_, ": dataset ", name, " elements [", start, ", ", start + count, ")");
  Handle space(check_id(H5Dget_space(dataset), where));
  check(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr), where);
  Handle memory(check_id(H5Screate_simple(1, &count, nullptr), where));
  check(H5Dread(dataset, memory_type, memory.get(), space.get(), H5P_DEFAULT, out),
        absl::StrCat(where, " (a chunk there failed to read: corrupt data or a checksum mismatch)"));
}

void ReadFile::read_rows(hid_t dataset, const std::string& name, hid_t memory_type, hsize_t row, hsize_t rows,
                         hsize_t width, void* out) const {
  if (rows == 0) return;
  auto guard = lock();
  const std::string where = absl::StrCat(path_, ": dataset ", name, " rows [", row, ", ", row + rows, ")");
  Handle space(check_id(H5Dget_space(dataset), where));
  hsize_t start[2] = {row, 0};
  hsize_t count[2] = {rows, width};
  check(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), where);
  Handle memory(check_id(H5Screate_simple(2, count, nullptr), where));
  check(H5Dread(dataset, memory_type, memory.get(), space.get(), H5P_DEFAULT, out),
        absl::StrCat(where, " (a chunk there failed to read: corrupt data or a checksum mismatch)"));
}

// The prologue both attribute readers share: absent → invalid handle; present → opened, of class `expected`, one
// element (scalar or [1]).
Handle ReadFile::open_scalar_attribute(const std::string& name, H5T_class_t expected, const char* kind) const {
  const std::string where = absl::StrCat(path_, ": attribute ", name);
  htri_t exists = H5Aexists(file_.get(), name.c_str());
  check(exists, where);
  if (exists == 0) return Handle();
  Handle attribute(check_id(H5Aopen(file_.get(), name.c_str(), H5P_DEFAULT), where));
  Handle type(check_id(H5Aget_type(attribute.get()), where));
  if (H5Tget_class(type.get()) != expected) throw core::FormatError(absl::StrCat(where, " is not ", kind));
  Handle space(check_id(H5Aget_space(attribute.get()), where));
  if (H5Sget_simple_extent_npoints(space.get()) != 1) throw core::FormatError(absl::StrCat(where, " is not a scalar"));
  return attribute;
}

std::optional<std::string> ReadFile::string_attribute(const std::string& name) const {
  auto guard = lock();
  Handle attribute = open_scalar_attribute(name, H5T_STRING, "a string");
  if (!attribute.valid()) return std::nullopt;
  const std::string where = absl::StrCat(path_, ": attribute ", name);
  Handle type(check_id(H5Aget_type(attribute.get()), where));
  htri_t variable = H5Tis_variable_str(type.get());
  check(variable, where);
  if (variable > 0) {
    // Never read from the global heap (no checksum; libhdf5 1.10 crashes on some corrupt ones).
    throw core::FormatError(absl::StrCat(where, " is a variable-length string; freehold prepare writes fixed-length "
                                         "ones (was this file made by another tool?)"));
  }
  size_t size = H5Tget_size(type.get());
  if (size == 0 || size > (1 << 20)) throw core::FormatError(absl::StrCat(where, " has size ", size));
  std::string out(size, '\0');
  check(H5Aread(attribute.get(), type.get(), out.data()), where);
  out.resize(out.find('\0') == std::string::npos ? size : out.find('\0'));
  return out;
}

std::optional<int64_t> ReadFile::int_attribute(const std::string& name) const {
  auto guard = lock();
  Handle attribute = open_scalar_attribute(name, H5T_INTEGER, "an integer");
  if (!attribute.valid()) return std::nullopt;
  int64_t value = 0;
  check(H5Aread(attribute.get(), H5T_NATIVE_INT64, &value), absl::StrCat(path_, ": attribute ", name));
  return value;
}

std::vector<std::string> ReadFile::attribute_names() const {
  auto guard = lock();
  const std::string where = absl::StrCat(path_, ": attributes of /");
  H5O_info_t info;
  check(H5Oget_info2(file_.get(), &info, H5O_INFO_NUM_ATTRS), where);
  if (info.num_attrs > 1024) throw core::FormatError(absl::StrCat(where, ": ", info.num_attrs, " attributes"));
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.num_attrs; ++i) {
    char buffer[256] = {0};
    ssize_t length = H5Aget_name_by_idx(file_.get(), ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, i, buffer, sizeof(buffer),
                                        H5P_DEFAULT);
    if (length < 0) {
      // Without creation-order tracking (files of other tools), names come in name order.
      H5Eclear2(H5E_DEFAULT);
      length = H5Aget_name_by_idx(file_.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, buffer, sizeof(buffer), H5P_DEFAULT);
    }
    check(static_cast<herr_t>(length < 0 ? -1 : 0), where);
    names.emplace_back(buffer);
  }
  return names;
}

std::string ReadFile::attribute_text(const std::string& name) const {
  auto guard = lock();
  const std::string where = absl::StrCat(path_, ": attribute ", name);
  Handle attribute(check_id(H5Aopen(file_.get(), name.c_str(), H5P_DEFAULT), where));
  Handle type(check_id(H5Aget_type(attribute.get()), where));
  const H5T_class_t type_class = H5Tget_class(type.get());
  if (type_class == H5T_STRING) return absl::StrCat("\"", *string_attribute(name), "\"");
  if (type_class == H5T_INTEGER) return absl::StrCat(*int_attribute(name));
  Handle space(check_id(H5Aget_space(attribute.get()), where));
  if (type_class == H5T_FLOAT && H5Sget_simple_extent_npoints(space.get()) == 1) {
    double value = 0;
    check(H5Aread(attribute.get(), H5T_NATIVE_DOUBLE, &value), where);
    return absl::StrCat(value);
  }
  return absl::StrCat("(HDF5 type class ", static_cast<int>(type_class), ", ", H5Sget_simple_extent_npoints(space.get()),
                      " element(s); not shown)");
}

DatasetLayout ReadFile::layout(hid_t dataset, const std::string& name) const {
  auto guard = lock();
  const std::string where = absl::StrCat(path_, ": dataset ", name);
  DatasetLayout out;
  out.shape = shape(dataset, name);
  Handle type(check_id(H5Dget_type(dataset), where));
  const size_t bytes = H5Tget_size(type.get());
  switch (H5Tget_class(type.get())) {
    case H5T_INTEGER:
      out.type = absl::StrCat(H5Tget_sign(type.get()) == H5T_SGN_NONE ? "uint" : "int", 8 * bytes);
      break;
    case H5T_FLOAT: out.type = absl::StrCat("float", 8 * bytes); break;
    case H5T_STRING: out.type = "string"; break;
    default: out.type = absl::StrCat("class ", static_cast<int>(H5Tget_class(type.get()))); break;
  }
  Handle dcpl(check_id(H5Dget_create_plist(dataset), where));
  if (H5Pget_layout(dcpl.get()) == H5D_CHUNKED) {
    out.chunk.resize(out.shape.size());
    check(H5Pget_chunk(dcpl.get(), static_cast<int>(out.chunk.size()), out.chunk.data()), where);
  }
  int filters = H5Pget_nfilters(dcpl.get());
  check(filters, where);
  for (int i = 0; i < filters; ++i) {
    unsigned flags = 0, config = 0;
    size_t n_values = 0;
    char filter_name[64] = {0};
    H5Z_filter_t filter = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &n_values, nullptr,
                                         sizeof(filter_name), filter_name, &config);
    check(filter, where);
    switch (filter) {
      case H5Z_FILTER_SHUFFLE: out.filters.push_back("shuffle"); break;
      case H5Z_FILTER_DEFLATE: out.filters.push_back("deflate"); break;
      case H5Z_FILTER_FLETCHER32: out.filters.push_back("fletcher32"); break;
      default: out.filters.push_back(filter_name); break;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------

namespace {

Handle create_extendible(hid_t file, const std::string& path, const char* name, hid_t file_type, hsize_t chunk) {
  const std::string where = absl::StrCat(path, ": creating ", name);
  hsize_t initial = 0, maximum = H5S_UNLIMITED;
  Handle space(check_id(H5Screate_simple(1, &initial, &maximum), where));
  Handle dcpl(check_id(H5Pcreate(H5P_DATASET_CREATE), where));
  check(H5Pset_chunk(dcpl.get(), 1, &chunk), where);
  check(H5Pset_shuffle(dcpl.get()), where);
  check(H5Pset_deflate(dcpl.get(), 4), where);
  check(H5Pset_fletcher32(dcpl.get()), where);
  return Handle(check_id(H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), where));
}

}  // namespace

TokenFileWriter::TokenFileWriter(const std::string& path) : path_(path) {
  auto guard = lock();
  // The 1.10 file format: superblock v3, object headers v2 and chunk indexes with checksums, so corrupt metadata
  // is detected by a checksum instead of being interpreted (h5py, and any HDF5 1.10 or later, read it).
  Handle fapl(check_id(H5Pcreate(H5P_FILE_ACCESS), path));
  check(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_LATEST), path);
  core::create_file_if_missing(path);  // owner-only; H5F_ACC_TRUNC keeps the mode of an existing file
  file_ = Handle(check_id(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()),
                          absl::StrCat("creating ", path, " (on a filesystem without flock, such as some NFS mounts, "
                                       "set HDF5_USE_FILE_LOCKING=FALSE)")));
  tokens_ = create_extendible(file_.get(), path_, "tokens", H5T_STD_I32LE, kTokenChunk);
  mask_ = create_extendible(file_.get(), path_, "loss_mask", H5T_STD_U8LE, kTokenChunk);
  offsets_ = create_extendible(file_.get(), path_, "doc_offsets", H5T_STD_I64LE, kOffsetChunk);
  pending_offsets_.push_back(0);
}

TokenFileWriter::~TokenFileWriter() = default;

void TokenFileWriter::append(const std::vector<int32_t>& ids, const std::vector<uint8_t>& mask) {
  FH_CHECK(ids.size() == mask.size() && !closed_);
  pending_ids_.insert(pending_ids_.end(), ids.begin(), ids.end());
  pending_mask_.insert(pending_mask_.end(), mask.begin(), mask.end());
  num_tokens_ += static_cast<int64_t>(ids.size());
  ++num_docs_;
  pending_offsets_.push_back(num_tokens_);
  if (pending_ids_.size() >= 16 * kTokenChunk || pending_offsets_.size() >= 16 * kOffsetChunk) flush();
}

void TokenFileWriter::extend_and_write(hid_t dataset, const std::string& name, hid_t memory_type, hsize_t old_size,
                                       hsize_t count, const void* data) {
  if (count == 0) return;
  const std::string where = absl::StrCat(path_, ": writing ", name);
  hsize_t new_size = old_size + count;
  check(H5Dset_extent(dataset, &new_size), where);
  Handle space(check_id(H5Dget_space(dataset), where));
  check(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, &old_size, nullptr, &count, nullptr), where);
  Handle memory(check_id(H5Screate_simple(1, &count, nullptr), where));
  check(H5Dwrite(dataset, memory_type, memory.get(), space.get(), H5P_DEFAULT, data), where);
}

void TokenFileWriter::flush() {
  auto guard = lock();
  extend_and_write(tokens_.get(), "/tokens", H5T_NATIVE_INT32, written_tokens_, pending_ids_.size(), pending_ids_.data());
  extend_and_write(mask_.get(), "/loss_mask", H5T_NATIVE_UINT8, written_tokens_, pending_mask_.size(), pending_mask_.data());
  written_tokens_ += pending_ids_.size();
  extend_and_write(offsets_.get(), "/doc_offsets", H5T_NATIVE_INT64, written_offsets_, pending_offsets_.size(),
                   pending_offsets_.data());
  written_offsets_ += pending_offsets_.size();
  pending_ids_.clear();
  pending_mask_.clear();
  pending_offsets_.clear();
}

void TokenFileWriter::set_string_attribute(const std::string& name, const std::string& value) {
  auto guard = lock();
  const std::string where = absl::StrCat(path_, ": attribute ", name);
  // Fixed-length: stored in the (checksummed) object header. A variable-length string would live in the global
  // heap, which has no checksum, and libhdf5 1.10 crashes on some corrupt global heaps.
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  Handle type(check_id(H5Tcopy(H5T_C_S1), where));
  check(H5Tset_size(type.get(), padded.size()), where);
  check(H5Tset_strpad(type.get(), H5T_STR_NULLPAD), where);
  check(H5Tset_cset(type.get(), H5T_CSET_UTF8), where);
  Handle space(check_id(H5Screate(H5S_SCALAR), where));
  Handle attribute(check_id(H5Acreate2(file_.get(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), where));
  check(H5Awrite(attribute.get(), type.get(), padded.data()), where);
}

void TokenFileWriter::set_int_attribute(const std::string& name, int64_t value) {
  auto guard = lock();
  const std::string where = absl::StrCat(path_, ": attribute ", name);
  Handle space(check_id(H5Screate(H5S_SCALAR), where));
  Handle attribute(
      check_id(H5Acreate2(file_.get(), name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), where));
  check(H5Awrite(attribute.get(), H5T_NATIVE_INT64, &value), where);
}

void TokenFileWriter::close() {
  if (closed_) return;
  flush();
  auto guard = lock();
  tokens_.reset();
  mask_.reset();
  offsets_.reset();
  check(H5Fflush(file_.get(), H5F_SCOPE_GLOBAL), absl::StrCat(path_, ": flushing"));
  hid_t file = file_.release();
  check(H5Fclose(file), absl::StrCat(path_, ": closing"));
  closed_ = true;
}

}  // namespace freehold::data::hdf5
