// Input records of the formats users bring (DESIGN.md §3, issue 4), parsed strictly and without LibTorch (fuzzed):
//   text    JSONL {"text": "..."}; or a plain .txt file, one document per non-blank line
//   alpaca  JSONL {"instruction": "...", "input": "..." (optional), "output": "..."}
//   chat    JSONL {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
// A record that cannot be used is a Rejection with a reason (counted per reason, RELIABILITY.md R5/R6) and a
// detail naming what was wrong; blank lines are skipped, a UTF-8 BOM on the first line and CR before LF dropped.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace freehold::data {

enum class InputFormat { kText, kAlpaca, kChat };
// "text" | "alpaca" | "chat"; throws UsageError otherwise.
InputFormat parse_input_format(std::string_view name);
const char* input_format_name(InputFormat format);

enum class RejectReason : int {
  kMalformedJson = 0,   // not JSON, not an object, duplicate keys, nested too deeply
  kInvalidUtf8,         // the line is not valid UTF-8 (or holds a NUL byte)
  kMissingField,        // a required field is missing or not a string
  kUnknownRole,         // a chat role other than system / user / assistant
  kBadStructure,        // empty conversation, roles out of order, content not a string, a role the template refuses
  kNoTargets,           // nothing left to train on (after truncation)
  kDoubleBos,           // the tokenized sample starts with BOS twice (template text plus tokenizer, R8)
  kTooLong,             // a line longer than kMaxRecordBytes
};
inline constexpr int kNumRejectReasons = 8;
const char* reject_reason_name(RejectReason reason);

struct Message {
  std::string role;
  std::string content;
};

// One parsed record. Exactly the fields of its format are set.
struct Record {
  std::string text;                                    // text
  std::string instruction, input, output;              // alpaca
  std::vector<Message> messages;                       // chat
};

struct Rejection {
  RejectReason reason;
  std::string detail;
};

struct ParsedRecord {
  std::optional<Record> record;        // set when the line is usable
  std::optional<Rejection> rejection;  // set when it is not; neither when the line is blank
};

// Parses one line (without its line ending) of a JSONL file (`jsonl`) or of a plain text file.
ParsedRecord parse_record(std::string_view line, InputFormat format, bool jsonl);

inline constexpr size_t kMaxRecordBytes = size_t{64} << 20;
inline constexpr int kMaxJsonDepth = 64;

// Reads a file line by line with bounded memory: a line longer than kMaxRecordBytes is skipped to its end and
// reported as too long instead of being held. Drops "\r" before "\n" and a UTF-8 BOM at the start of the file.
class LineReader {
 public:
  explicit LineReader(const std::string& path);  // throws SystemError naming the path
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next line into *line; false at the end. *too_long is set when the line was skipped for its length.
  bool next(std::string* line, bool* too_long);
  int64_t line_number() const { return line_number_; }  // 1-based number of the line last returned
  uint64_t byte_offset() const { return line_start_; }  // where the line last returned starts in the file
  void seek(uint64_t byte_offset, int64_t line_number);  // continue at a line start recorded earlier
  uint64_t file_size() const { return file_size_; }

 private:
  bool fill();
  std::string path_;
  std::FILE* file_ = nullptr;
  std::string buffer_;
  size_t begin_ = 0, end_ = 0;
  uint64_t buffer_file_offset_ = 0;  // file offset of buffer_[0]
  uint64_t line_start_ = 0;
  uint64_t file_size_ = 0;
  int64_t line_number_ = 0;
  bool eof_ = false;
};

// Python's str.strip() (what Jinja's `trim` filter does): removes leading and trailing characters for which
// str.isspace() is true. `text` is valid UTF-8.
std::string_view python_strip(std::string_view text);

}  // namespace freehold::data
