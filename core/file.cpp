#include "core/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>

#include "core/error.h"

namespace freehold::core {
namespace {

std::atomic<uint64_t> g_temp_counter{0};

void close_or_throw(int fd, const std::string& path) {
  if (::close(fd) != 0) throw SystemError(absl::StrCat("close ", path), errno);
}

}  // namespace

std::string parent_directory(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string read_file(const std::string& path, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw SystemError(absl::StrCat("cannot open ", path), errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw SystemError(absl::StrCat("cannot stat ", path), e);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw FormatError(absl::StrCat(path, ": not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    throw FormatError(absl::StrCat(path, ": file is ", st.st_size, " bytes, more than the ", max_bytes,
                                   " bytes accepted for this kind of file"));
  }
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pread(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      throw SystemError(absl::StrCat("cannot read ", path), e);
    }
    if (n == 0) break;  // the file shrank under us
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  bytes.resize(done);
  return bytes;
}

AtomicFile::AtomicFile(std::string path, mode_t mode) : path_(std::move(path)) {
  temp_path_ = absl::StrCat(path_, ".tmp.", ::getpid(), ".", g_temp_counter.fetch_add(1));
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd_ < 0) throw SystemError(absl::StrCat("cannot create ", temp_path_), errno);
}

AtomicFile::~AtomicFile() {
  if (!committed_) {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(temp_path_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t size) {
  FH_CHECK(fd_ >= 0 && !committed_, "write after commit on ", path_);
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw SystemError(absl::StrCat("cannot write ", temp_path_), errno);
    p += n;
    size -= static_cast<size_t>(n);
    bytes_written_ += static_cast<uint64_t>(n);
  }
}

void AtomicFile::commit() {
  FH_CHECK(fd_ >= 0 && !committed_, "double commit of ", path_);
  if (::fsync(fd_) != 0) throw SystemError(absl::StrCat("cannot fsync ", temp_path_), errno);
  int fd = fd_;
  fd_ = -1;
  close_or_throw(fd, temp_path_);
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    throw SystemError(absl::StrCat("cannot rename ", temp_path_, " to ", path_), errno);
  }
  committed_ = true;
  fsync_directory(parent_directory(path_));
}

void write_file_atomic(const std::string& path, std::string_view bytes, mode_t mode) {
  AtomicFile file(path, mode);
  file.write(bytes);
  file.commit();
}

void create_directories(const std::string& path, mode_t mode) {
  FH_CHECK(!path.empty(), "create_directories of an empty path");
  // Parents first: each prefix ending before a '/' (the root and repeated slashes are skipped).
  for (size_t end = path.find('/', 1);; end = path.find('/', end + 1)) {
    const std::string prefix = path.substr(0, end);
    if (!prefix.empty() && prefix.back() != '/' && ::mkdir(prefix.c_str(), mode) != 0) {
      const int e = errno;
      struct stat st {};
      if (e != EEXIST) throw SystemError(absl::StrCat("cannot create directory ", prefix), e);
      if (::stat(prefix.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        throw SystemError(absl::StrCat("cannot create directory ", prefix, ": something else is there"), ENOTDIR);
      }
    }
    if (end == std::string::npos) break;
  }
}

void create_file_if_missing(const std::string& path, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, mode);
  if (fd < 0) throw SystemError(absl::StrCat("cannot create ", path), errno);
  close_or_throw(fd, path);
}

void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw SystemError(absl::StrCat("cannot open directory ", dir), errno);
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    throw SystemError(absl::StrCat("cannot fsync directory ", dir), e);
  }
  close_or_throw(fd, dir);
}

}  // namespace freehold::core
