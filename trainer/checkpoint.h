// Checkpoint directories on disk (DESIGN.md §5, RELIABILITY.md §2): written into a temporary directory, each file
// fsynced, manifest.json (the SHA-256 and size of every file) written last, the directory fsynced and renamed to
// checkpoints/step-NNNNNN, the parent fsynced. A directory is committed exactly when its manifest is present and
// every file matches it; LATEST is only a hint for people (the loader scans). Old checkpoints are deleted only after
// the new one is committed (C9). At start-up, temporary, uncommitted and corrupt directories are skipped with a
// warning and removed (C1–C3, C10, C16); a manifest of a newer format version is refused with the version (C17).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace freehold::trainer {

inline constexpr int kCheckpointFormatVersion = 1;
inline constexpr char kManifestFile[] = "manifest.json";
inline constexpr char kOptimizerFile[] = "optimizer.safetensors";
inline constexpr char kTrainerStateFile[] = "trainer_state.json";
inline constexpr char kLatestFile[] = "LATEST";

// "step-000100"
std::string checkpoint_dir_name(int64_t step);

// Writes checkpoint `step` under `checkpoints_dir`: `write_files(tmp_dir)` writes the files, then the manifest, the
// fsyncs and the rename commit it, LATEST is updated, and committed checkpoints beyond the newest `keep_last`
// (0: keep all) are deleted. A checkpoint of the same step already there is replaced. Returns the final directory.
// `before_commit`, when given, runs after the manifest is written and before the rename: the ranks' vote (C7); if
// it throws, the temporary directory is removed and nothing is committed.
std::string commit_checkpoint(const std::string& checkpoints_dir, int64_t step,
                              const std::function<void(const std::string& dir)>& write_files, int64_t keep_last,
                              const std::function<void()>& before_commit = {});

// Why `dir` is not a usable committed checkpoint ("" when it is): no manifest (uncommitted), a manifest that does
// not parse, a listed file missing or with another size or SHA-256. Throws core::FormatError for a manifest of an
// unknown format or newer version (C17): that is not damage, and deleting it would lose a good checkpoint.
std::string check_checkpoint(const std::string& dir);

// Whether the committed checkpoint `dir` holds everything to resume (adapter, optimizer state, trainer state);
// an adapter-only directory is refused as a resume point (C15) by the caller with this reason. "" when complete.
std::string missing_for_resume(const std::string& dir);

// Committed checkpoints under `checkpoints_dir`, newest first, after removing (with a warning each) temporary
// directories, step directories without a manifest and corrupt ones.
std::vector<std::string> scan_checkpoints(const std::string& checkpoints_dir);

// The newest committed checkpoint, or nullopt.
std::optional<std::string> find_latest_checkpoint(const std::string& checkpoints_dir);

}  // namespace freehold::trainer
