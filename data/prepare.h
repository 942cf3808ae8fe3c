// `freehold prepare`: input files → one prepared HDF5 dataset (DESIGN.md §5), streamed with bounded memory,
// tokenized on every core, written to a temp file beside the output and renamed into place only when complete and
// within max_bad_fraction. Re-running with unchanged inputs, tokenizer and options is skipped: the output's
// source_fingerprint attribute already says it was made from them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/data_options.h"
#include "data/formats.h"

namespace freehold::data {

struct PrepareOptions {
  std::string tokenizer_path;                // tokenizer.json, or a directory holding one
  std::vector<std::string> inputs;           // .jsonl / .json (JSONL) or plain text files
  std::string out;                           // FILE.h5
  std::optional<std::string> format;         // text | alpaca | chat; default: from the first record's keys
  std::optional<std::string> template_name;  // llama3 | chatml | mistral; default for chat: from the tokenizer
  std::optional<ChatTemplateSpec> custom_template;
  std::string train_on = "assistant";
  int64_t seq_len = 0;                       // 0: no truncation
  double max_bad_fraction = 0.01;
  int threads = 0;                           // 0: every core
  bool progress = false;                     // a progress line on stderr
  bool force = false;                        // rebuild even when the fingerprint matches
};

struct PrepareResult {
  bool skipped = false;  // the output was already made from these inputs
  int64_t records = 0, bad_records = 0, documents = 0, tokens = 0, target_tokens = 0, truncated = 0;
  std::string fingerprint;
};

PrepareResult prepare_dataset(const PrepareOptions& options);

// tokenizer.json itself, or PATH/tokenizer.json when PATH is a directory.
std::string resolve_tokenizer_json(const std::string& path);

// The format of a JSONL file from its first record's keys: messages → chat, instruction → alpaca, text → text;
// plain text files are text. Throws UsageError when it cannot tell.
InputFormat detect_format(const std::string& path);
// The built-in template whose special tokens the tokenizer has (llama3, chatml, mistral), if exactly one fits.
std::optional<std::string> detect_template(const class Tokenizer& tokenizer);

inline constexpr const char* kPreparedFormat = "freehold.tokens";
inline constexpr int64_t kPreparedVersion = 1;

}  // namespace freehold::data
