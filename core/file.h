// Files on disk: whole-file reads with a size bound, and atomic writes (temp file in the same directory, write,
// fsync, close, rename, fsync the directory) so a crash leaves either the old file or the new one, never a mix.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace freehold::core {

// Reads a whole file; throws if it is larger than max_bytes (never allocates more than that).
std::string read_file(const std::string& path, uint64_t max_bytes = uint64_t{1} << 30);

// A file that appears at `path` only when commit() succeeds. Until then it is `path.tmp.<pid>.<n>` beside it;
// the destructor removes that temp file if commit() was not reached. Every write, fsync and close is checked.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  uint64_t bytes_written() const { return bytes_written_; }
  // fsync, close, rename over `path`, fsync the directory.
  void commit();
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  uint64_t bytes_written_ = 0;
  bool committed_ = false;
};

// Writes `bytes` to `path` atomically.
void write_file_atomic(const std::string& path, std::string_view bytes);

// fsync on a directory, so a rename inside it is durable.
void fsync_directory(const std::string& dir);

// The directory part of a path ("." when there is none).
std::string parent_directory(const std::string& path);

}  // namespace freehold::core
