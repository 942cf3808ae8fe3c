// Atomic checkpoint directories and their recovery scan; see checkpoint.h.
#include "trainer/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "io/peft_adapter.h"
#include "nlohmann/json.hpp"
#include "core/sha256.h"

namespace freehold::trainer {
namespace fs = std::filesystem;
namespace {

constexpr char kStepPrefix[] = "step-";
constexpr char kTempPrefix[] = ".tmp-";
constexpr char kManifestFormat[] = "freehold.checkpoint";

// step-NNNNNN with only digits after the prefix → the step.
std::optional<int64_t> parse_step_name(const std::string& name) {
  if (name.rfind(kStepPrefix, 0) != 0) return std::nullopt;
  std::string digits = name.substr(sizeof(kStepPrefix) - 1);
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  int64_t step = 0;
  if (!absl::SimpleAtoi(digits, &step)) return std::nullopt;
  return step;
}

void fsync_file(const std::string& path) {
  // Files written by the writers here are already fsynced (AtomicFile); this covers anything else in the dir.
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw core::SystemError("open " + path, errno);
  const int rc = ::fsync(fileno(f));
  const int err = errno;
  std::fclose(f);
  if (rc != 0) throw core::SystemError("fsync " + path, err);
}

void remove_all_logged(const fs::path& path, const std::string& why) {
  core::log_warning("checkpoint ", path.string(), ": ", why, "; removing it");
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) core::log_warning("could not remove ", path.string(), ": ", ec.message());
}

}  // namespace

std::string checkpoint_dir_name(int64_t step) { return absl::StrFormat("%s%06d", kStepPrefix, step); }

std::string commit_checkpoint(const std::string& checkpoints_dir, int64_t step,
                              const std::function<void(const std::string& dir)>& write_files, int64_t keep_last,
                              const std::function<void()>& before_commit) {
  core::create_directories(checkpoints_dir);
  const std::string name = checkpoint_dir_name(step);
  const fs::path final_dir = fs::path(checkpoints_dir) / name;
  const fs::path tmp_dir = fs::path(checkpoints_dir) / absl::StrCat(kTempPrefix, name, ".", ::getpid());
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  core::create_directories(tmp_dir.string());
  try {
    write_files(tmp_dir.string());
    nlohmann::ordered_json manifest;
    manifest["format"] = kManifestFormat;
    manifest["version"] = kCheckpointFormatVersion;
    manifest["step"] = step;
    nlohmann::ordered_json files = nlohmann::ordered_json::object();
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(tmp_dir)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    for (const std::string& file : names) {
      const std::string path = (tmp_dir / file).string();
      fsync_file(path);
      files[file] = {{"bytes", fs::file_size(path)}, {"sha256", core::sha256_file_hex(path)}};
    }
    manifest["files"] = files;
    core::write_file_atomic((tmp_dir / kManifestFile).string(), manifest.dump(2) + "\n");
    core::fsync_directory(tmp_dir.string());
    if (before_commit) before_commit();
  } catch (...) {
    fs::remove_all(tmp_dir, ec);  // never a marker: the previous checkpoint stays the newest committed one
    throw;
  }
  // A checkpoint of the same step (a run restarted with resume: never) is moved aside, then removed.
  fs::path replaced;
  if (fs::exists(final_dir)) {
    replaced = fs::path(checkpoints_dir) / absl::StrCat(kTempPrefix, name, ".replaced.", ::getpid());
    fs::remove_all(replaced, ec);
    fs::rename(final_dir, replaced);
  }
  fs::rename(tmp_dir, final_dir);
  core::fsync_directory(checkpoints_dir);
  if (!replaced.empty()) fs::remove_all(replaced, ec);
  core::write_file_atomic((fs::path(checkpoints_dir) / kLatestFile).string(), name + "\n");

  if (keep_last > 0) {
    std::vector<std::pair<int64_t, fs::path>> committed;
    for (const auto& entry : fs::directory_iterator(checkpoints_dir)) {
      auto s = parse_step_name(entry.path().filename().string());
      if (s && entry.is_directory() && fs::exists(entry.path() / kManifestFile)) committed.push_back({*s, entry.path()});
    }
    std::sort(committed.begin(), committed.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t i = static_cast<size_t>(keep_last); i < committed.size(); ++i) {
      if (committed[i].second == final_dir) continue;
      fs::remove_all(committed[i].second, ec);
      if (ec) core::log_warning("could not remove old checkpoint ", committed[i].second.string(), ": ", ec.message());
    }
    core::fsync_directory(checkpoints_dir);
  }
  return final_dir.string();
}

std::string check_checkpoint(const std::string& dir) {
  const fs::path manifest_path = fs::path(dir) / kManifestFile;
  if (!fs::exists(manifest_path)) return "no manifest.json (never committed)";
  nlohmann::json manifest;
  try {
    manifest = nlohmann::json::parse(core::read_file(manifest_path.string(), 1 << 20));
  } catch (const std::exception& e) {
    return absl::StrCat("manifest.json is unreadable (", e.what(), ")");
  }
  if (!manifest.is_object() || !manifest.contains("format") || !manifest.contains("version") ||
      !manifest["version"].is_number_integer() || !manifest.contains("files") || !manifest["files"].is_object()) {
    return "manifest.json lacks format, version or files";
  }
  if (manifest["format"] != kManifestFormat || manifest["version"].get<int64_t>() > kCheckpointFormatVersion ||
      manifest["version"].get<int64_t>() < 1) {
    throw core::FormatError(absl::StrCat(dir, ": checkpoint format ", manifest["format"].dump(), " version ",
                                         manifest["version"].dump(), "; this freehold reads \"", kManifestFormat,
                                         "\" versions 1 to ", kCheckpointFormatVersion,
                                         " (a newer freehold wrote it?)"));
  }
  for (const auto& [file, info] : manifest["files"].items()) {
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
      return absl::StrCat("manifest.json names an invalid file \"", file, "\"");
    }
    const fs::path path = fs::path(dir) / file;
    if (!fs::is_regular_file(path)) return absl::StrCat(file, " is missing");
    if (!info.is_object() || !info.contains("bytes") || !info.contains("sha256") || !info["sha256"].is_string()) {
      return absl::StrCat("manifest.json entry for ", file, " is malformed");
    }
    if (!info["bytes"].is_number_unsigned() || info["bytes"].get<uint64_t>() != fs::file_size(path)) {
      return absl::StrCat(file, " has ", fs::file_size(path), " bytes; the manifest says ", info["bytes"].dump());
    }
    if (core::sha256_file_hex(path.string()) != info["sha256"].get<std::string>()) {
      return absl::StrCat(file, " does not match its SHA-256 in manifest.json (corrupted)");
    }
  }
  return "";
}

std::string missing_for_resume(const std::string& dir) {
  nlohmann::json manifest = nlohmann::json::parse(core::read_file((fs::path(dir) / kManifestFile).string(), 1 << 20));
  std::vector<std::string> missing;
  for (const char* file : {io::kAdapterWeightsFile, io::kAdapterConfigFile, kOptimizerFile, kTrainerStateFile}) {
    if (!manifest["files"].contains(file)) missing.push_back(file);
  }
  if (missing.empty()) return "";
  std::string list;
  for (const std::string& m : missing) absl::StrAppend(&list, list.empty() ? "" : ", ", m);
  return absl::StrCat(dir, " has no ", list,
                      ": it cannot be resumed from (a resume continues the optimizer exactly). To start a new run "
                      "from its adapter weights, set adapter.init_from: ", dir, " and resume: never");
}

std::vector<std::string> scan_checkpoints(const std::string& checkpoints_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  if (!fs::is_directory(checkpoints_dir)) return {};
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir)) entries.push_back(entry.path());
  for (const fs::path& path : entries) {
    const std::string name = path.filename().string();
    if (name.rfind(kTempPrefix, 0) == 0) {
      remove_all_logged(path, "temporary directory of an interrupted save");
      continue;
    }
    auto step = parse_step_name(name);
    if (!step || !fs::is_directory(path)) continue;
    std::string problem = check_checkpoint(path.string());
    if (!problem.empty()) {
      remove_all_logged(path, problem);
      continue;
    }
    found.push_back({*step, path.string()});
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

std::optional<std::string> find_latest_checkpoint(const std::string& checkpoints_dir) {
  auto all = scan_checkpoints(checkpoints_dir);
  if (all.empty()) return std::nullopt;
  return all.front();
}

}  // namespace freehold::trainer
