// Files on disk: whole-file reads with a size bound, and atomic writes (temp file in the same directory, write,
// fsync, close, rename, fsync the directory) so a crash leaves either the old file or the new one, never a mix.
// What freehold creates is readable by its owner only unless a caller passes another mode: checkpoints, adapters,
// exports, prepared datasets, rejects files and metrics can all hold (or be derived from) private data.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace freehold::core {

// Reads a whole file; throws if it is larger than max_bytes (never allocates more than that).
std::string read_file(const std::string& path, uint64_t max_bytes = uint64_t{1} << 30);

// Modes of the files and directories freehold creates (the umask can only take bits away). A user who shares a
// run with a group changes it afterwards (`chmod -R g+rX runs/NAME`); existing files and directories keep theirs.
inline constexpr mode_t kPrivateFileMode = 0600;
inline constexpr mode_t kPrivateDirMode = 0700;

// A file that appears at `path` only when commit() succeeds, with `mode` (the umask applies). Until then it is
// `path.tmp.<pid>.<n>` beside it; the destructor removes that temp file if commit() was not reached. Every write,
// fsync and close is checked.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path, mode_t mode = kPrivateFileMode);
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
void write_file_atomic(const std::string& path, std::string_view bytes, mode_t mode = kPrivateFileMode);

// Creates the directory `path` and its missing parents, each with `mode`; directories that exist keep their mode.
// Throws SystemError naming the directory that could not be created (or a non-directory in the way).
void create_directories(const std::string& path, mode_t mode = kPrivateDirMode);

// Creates `path` empty with `mode` if nothing is there (an existing file keeps its mode and contents), for writers
// that open files themselves (stdio, iostreams, HDF5): they then open an existing file instead of creating one
// with the umask's 0644.
void create_file_if_missing(const std::string& path, mode_t mode = kPrivateFileMode);

// fsync on a directory, so a rename inside it is durable.
void fsync_directory(const std::string& dir);

// The directory part of a path ("." when there is none).
std::string parent_directory(const std::string& path);

}  // namespace freehold::core
