// What a checkpoint remembers of each training source, so that a resumed run can tell its data changed
// (RELIABILITY.md R9, C12): the data position a checkpoint stores only means something for the same data.
//
// Two kinds of fingerprint:
//   prepared  a freehold prepared HDF5 file: the SHA-256 of its source_fingerprint and tokenizer_sha256 attributes
//             (what `prepare` made it from: the inputs' names, sizes and mtimes, the tokenizer, the options).
//   sampled   any other file (JSONL, text, users' row HDF5): the SHA-256 of its size, its first and last MiB and
//             16 blocks of 64 KiB evenly spaced between (the whole file when it is under 3 MiB). At most 3 MiB is
//             read whatever the size; an edit of the same length that misses every sampled block goes unseen.
// Size and mtime are recorded too. The digest decides: another digest is a changed dataset and resume refuses
// (unless FREEHOLD_ALLOW_DATA_CHANGE=1, then it warns); the same digest with another mtime or path (a copy, a
// move, a touch) is only a warning.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/data_options.h"
#include "nlohmann/json.hpp"

namespace freehold::data {

struct DataFingerprint {
  std::string path;
  std::string kind;    // "prepared" or "sampled"
  std::string digest;  // 64 hex digits
  int64_t size = 0;    // bytes
  int64_t mtime_ns = 0;

  nlohmann::json to_json() const;
  // Throws FormatError naming `where` for a record that is not a fingerprint.
  static DataFingerprint from_json(const nlohmann::json& record, const std::string& where);
  // "prepared 3fa2c1d09b7e (412.0 KiB, modified 2026-11-25 18:02:11 UTC)"
  std::string describe() const;
};

// Throws SystemError naming the path when it cannot be read; FormatError for a prepared file that is unreadable.
DataFingerprint fingerprint_data_file(const std::string& path);

// The fingerprints of `sources`, in order, as the JSON array trainer_state.json keeps under "data_fingerprints".
nlohmann::json fingerprint_sources(const std::vector<DataSource>& sources);

// The environment variable that turns a changed-data refusal into a warning.
inline constexpr const char* kAllowDataChangeVariable = "FREEHOLD_ALLOW_DATA_CHANGE";

struct FingerprintComparison {
  std::vector<std::string> changed;  // sources whose data differs (or whose count differs): refuse
  std::vector<std::string> notes;    // same data under another path or mtime: warn
};

// Compares `saved` (trainer_state.json's "data_fingerprints") with the files of `sources` as they are now.
FingerprintComparison compare_data_fingerprints(const nlohmann::json& saved, const std::vector<DataSource>& sources,
                                                const std::string& where);

// The resume check: logs the notes; with changes, throws UsageError naming each file and both fingerprints, unless
// FREEHOLD_ALLOW_DATA_CHANGE=1 (then each change is logged as a warning). A checkpoint without fingerprints (made
// before they were recorded) gives one warning. `state_path` names trainer_state.json in messages.
void check_resume_data(const nlohmann::json& trainer_state, const std::vector<DataSource>& sources,
                       const std::string& state_path);

}  // namespace freehold::data
