// Fingerprints of training sources and the resume check built on them.
#include "data/data_fingerprint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sha256.h"
#include "data/document_source.h"
#include "data/hdf5_file.h"
#include "data/prepare.h"

namespace freehold::data {
namespace {

constexpr int64_t kEdgeBytes = int64_t{1} << 20;  // head and tail
constexpr int64_t kBlockBytes = int64_t{64} << 10;
constexpr int kMiddleBlocks = 16;

// Hashes [offset, offset + count) of `fd` into `sha` (pread: no shared file position).
void hash_range(int fd, const std::string& path, int64_t offset, int64_t count, core::Sha256* sha) {
  std::string buffer(static_cast<size_t>(std::min<int64_t>(count, kEdgeBytes)), '\0');
  while (count > 0) {
    const ssize_t n = ::pread(fd, buffer.data(), static_cast<size_t>(std::min<int64_t>(count, buffer.size())), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw core::SystemError(absl::StrCat("fingerprinting ", path), errno);
    }
    if (n == 0) throw core::DataError(absl::StrCat("fingerprinting ", path, ": the file shrank while it was read"));
    sha->update(buffer.data(), static_cast<size_t>(n));
    offset += n;
    count -= n;
  }
}

std::string sampled_digest(const std::string& path, int64_t size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw core::SystemError(absl::StrCat("fingerprinting ", path), errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  core::Sha256 sha;
  sha.update(absl::StrCat("freehold.sampled/1 size ", size, "\n"));
  if (size <= 2 * kEdgeBytes + kMiddleBlocks * kBlockBytes) {
    hash_range(fd, path, 0, size, &sha);
  } else {
    hash_range(fd, path, 0, kEdgeBytes, &sha);
    // Blocks centred in equal slices of the middle part.
    const int64_t middle = size - 2 * kEdgeBytes;
    for (int i = 0; i < kMiddleBlocks; ++i) {
      const int64_t offset = kEdgeBytes + (middle * (2 * i + 1)) / (2 * kMiddleBlocks) - kBlockBytes / 2;
      hash_range(fd, path, offset, kBlockBytes, &sha);
    }
    hash_range(fd, path, size - kEdgeBytes, kEdgeBytes, &sha);
  }
  return sha.hex_digest();
}

std::string format_mtime(int64_t mtime_ns) {
  const time_t seconds = static_cast<time_t>(mtime_ns / 1'000'000'000);
  struct tm utc {};
  if (gmtime_r(&seconds, &utc) == nullptr) return "?";
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S UTC", &utc);
  return text;
}

std::string format_size(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  if (bytes < (int64_t{1} << 20)) return absl::StrFormat("%.1f KiB", bytes / 1024.0);
  if (bytes < (int64_t{1} << 30)) return absl::StrFormat("%.1f MiB", bytes / 1048576.0);
  return absl::StrFormat("%.2f GiB", bytes / 1073741824.0);
}

bool allow_data_change() {
  const char* value = std::getenv(kAllowDataChangeVariable);
  return value != nullptr && std::string(value) == "1";
}

}  // namespace

nlohmann::json DataFingerprint::to_json() const {
  return {{"path", path}, {"kind", kind}, {"digest", digest}, {"size", size}, {"mtime_ns", mtime_ns}};
}

DataFingerprint DataFingerprint::from_json(const nlohmann::json& record, const std::string& where) {
  DataFingerprint f;
  try {
    f.path = record.at("path").get<std::string>();
    f.kind = record.at("kind").get<std::string>();
    f.digest = record.at("digest").get<std::string>();
    f.size = record.at("size").get<int64_t>();
    f.mtime_ns = record.at("mtime_ns").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw core::FormatError(absl::StrCat(where, ": a data fingerprint needs path, kind, digest, size and mtime_ns (",
                                         e.what(), "): ", record.dump().substr(0, 200)));
  }
  return f;
}

std::string DataFingerprint::describe() const {
  return absl::StrCat(kind, " ", digest.substr(0, 16), " (", format_size(size), ", modified ", format_mtime(mtime_ns),
                      ")");
}

DataFingerprint fingerprint_data_file(const std::string& path) {
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) throw core::SystemError(absl::StrCat("fingerprinting ", path), errno);
  if (!S_ISREG(info.st_mode)) throw core::UsageError(absl::StrCat(path, " is not a regular file"));
  DataFingerprint f;
  f.path = path;
  f.size = static_cast<int64_t>(info.st_size);
  f.mtime_ns = static_cast<int64_t>(info.st_mtim.tv_sec) * 1'000'000'000 + info.st_mtim.tv_nsec;
  if (is_hdf5_path(path)) {
    hdf5::ReadFile file(path);
    if (file.has_dataset("/tokens") && file.string_attribute("format") == kPreparedFormat) {
      std::optional<std::string> source = file.string_attribute("source_fingerprint");
      std::optional<std::string> tokenizer = file.string_attribute("tokenizer_sha256");
      if (source && tokenizer) {
        f.kind = "prepared";
        f.digest = core::sha256_hex(absl::StrCat("freehold.prepared/1\nsource_fingerprint ", *source,
                                                 "\ntokenizer_sha256 ", *tokenizer, "\n"));
        return f;
      }
    }
  }
  f.kind = "sampled";
  f.digest = sampled_digest(path, f.size);
  return f;
}

nlohmann::json fingerprint_sources(const std::vector<DataSource>& sources) {
  nlohmann::json out = nlohmann::json::array();
  for (const DataSource& source : sources) out.push_back(fingerprint_data_file(source.path).to_json());
  return out;
}

FingerprintComparison compare_data_fingerprints(const nlohmann::json& saved, const std::vector<DataSource>& sources,
                                                const std::string& where) {
  if (!saved.is_array()) throw core::FormatError(absl::StrCat(where, ": data_fingerprints is not an array"));
  std::vector<DataFingerprint> before;
  for (const nlohmann::json& record : saved) before.push_back(DataFingerprint::from_json(record, where));
  FingerprintComparison result;
  if (before.size() != sources.size()) {
    std::vector<std::string> now_paths;
    for (const DataSource& s : sources) now_paths.push_back(s.path);
    result.changed.push_back(absl::StrCat(
        "data.train: the checkpoint was trained on ", before.size(), " source(s) [",
        absl::StrJoin(before, ", ", [](std::string* out, const DataFingerprint& f) { out->append(f.path); }),
        "], this run has ", sources.size(), " [", absl::StrJoin(now_paths, ", "), "]"));
    return result;
  }
  for (size_t i = 0; i < before.size(); ++i) {
    const std::string key = absl::StrCat("data.train[", i, "]");
    DataFingerprint now;
    try {
      now = fingerprint_data_file(sources[i].path);
    } catch (const core::Error& e) {
      result.changed.push_back(absl::StrCat(key, " ", sources[i].path, ": cannot be fingerprinted (", e.what(),
                                            "); the checkpoint has ", before[i].describe()));
      continue;
    }
    if (now.kind != before[i].kind || now.digest != before[i].digest) {
      result.changed.push_back(absl::StrCat(key, " ", sources[i].path, " changed since the checkpoint: fingerprint was ",
                                            before[i].describe(), (before[i].path != now.path ? " at " + before[i].path : ""),
                                            ", is now ", now.describe()));
    } else if (now.path != before[i].path) {
      result.notes.push_back(absl::StrCat(key, ": ", before[i].path, " is now read from ", now.path,
                                          " (same fingerprint ", now.digest.substr(0, 16), ")"));
    } else if (now.mtime_ns != before[i].mtime_ns) {
      result.notes.push_back(absl::StrCat(key, " ", now.path, ": modified ", format_mtime(now.mtime_ns), " (was ",
                                          format_mtime(before[i].mtime_ns), "), its fingerprint ",
                                          now.digest.substr(0, 16), " is the same"));
    }
  }
  return result;
}

void check_resume_data(const nlohmann::json& trainer_state, const std::vector<DataSource>& sources,
                       const std::string& state_path) {
  if (!trainer_state.contains("data_fingerprints")) {
    core::log_warning("resume: ", state_path, " records no data fingerprints (an older checkpoint); cannot check "
                      "that data.train is the data it was trained on");
    return;
  }
  FingerprintComparison c = compare_data_fingerprints(trainer_state.at("data_fingerprints"), sources, state_path);
  for (const std::string& note : c.notes) core::log_warning("resume: ", note);
  if (c.changed.empty()) return;
  if (allow_data_change()) {
    for (const std::string& change : c.changed) {
      core::log_warning("resume: ", change, " (", kAllowDataChangeVariable, "=1: continuing at the saved data position)");
    }
    return;
  }
  throw core::UsageError(absl::StrCat(
      "resume: the training data is not the data of checkpoint ", state_path, ":\n  ", absl::StrJoin(c.changed, "\n  "),
      "\nThe saved data position only means something for the same data. Restore the data, start a new run "
      "(another output.dir or resume: never), or set ", kAllowDataChangeVariable, "=1 to continue at the saved "
      "position anyway"));
}

}  // namespace freehold::data
