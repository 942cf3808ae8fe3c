// Input files → samples, on every core, in input order: the main thread reads lines in blocks, worker threads parse
// and tokenize whole blocks, and results come back in the order the lines were read. Bad records are counted by
// reason with file:line and written to a rejects file (RELIABILITY.md R5); over max_bad_fraction the caller stops
// with exit code 3. Shared by `prepare` and the loader's on-the-fly JSONL sources.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "data/formats.h"
#include "data/sample_builder.h"

namespace freehold::data {

// Where a record came from.
struct RecordOrigin {
  int file = 0;          // index into the inputs
  int64_t line = 0;      // 1-based
  uint64_t offset = 0;   // byte offset of the line's start
};

struct ProcessedRecord {
  RecordOrigin origin;
  BuiltSamples built;    // samples, or the rejection
};

// Counts of usable and bad records, per reason; optionally writes one JSON line per bad record to a file.
class BadRecords {
 public:
  BadRecords() = default;
  ~BadRecords();
  // Writes rejects to `path` (created or truncated); each line {"file","line","reason","detail"}.
  void open_rejects_file(const std::string& path);
  // Closes the rejects file; removes it when no record was bad.
  void close_rejects_file();
  void add_good() { ++good_; }
  void add_bad(const std::string& file, int64_t line, const Rejection& rejection);
  int64_t good() const { return good_; }
  int64_t bad() const { return bad_; }
  int64_t count(RejectReason reason) const { return by_reason_[static_cast<int>(reason)]; }
  // "3 bad of 100 records (malformed_json 2, unknown_role 1)".
  std::string summary() const;
  // Throws DataError (exit code 3) when bad / (good + bad) > max_fraction, naming the counts and the rejects file.
  void enforce(double max_fraction, const std::string& what) const;

 private:
  int64_t good_ = 0, bad_ = 0;
  std::array<int64_t, kNumRejectReasons> by_reason_{};
  std::FILE* rejects_ = nullptr;
  std::string rejects_path_;
};

struct PipelineProgress {
  int64_t records = 0;
  int64_t tokens = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_total = 0;
};

// Whether a path is read as JSONL (.jsonl, .json) or as plain text lines (anything else, e.g. .txt).
bool is_jsonl_path(const std::string& path);

// Reads `inputs` in order and calls `sink` for each record (blank lines skipped) in input order, with `threads`
// workers (0: all cores). `progress`, when set, is called about twice a second on the calling thread.
void process_records(const std::vector<std::string>& inputs, InputFormat format, const SampleBuilder& builder,
                     int threads, const std::function<void(const ProcessedRecord&)>& sink,
                     const std::function<void(const PipelineProgress&)>& progress = {});

// Builds the samples of one line of input (parsing included): what a worker does per record.
BuiltSamples build_line(std::string_view line, bool too_long, bool jsonl, InputFormat format,
                        const SampleBuilder& builder);

}  // namespace freehold::data
