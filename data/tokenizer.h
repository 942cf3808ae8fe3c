// A Hugging Face tokenizer.json, loaded and applied exactly as the tokenizers library (0.23) does for the model
// families freehold trains: byte-level BPE (GPT-2, Llama-3, Qwen2 split patterns) and SentencePiece-style BPE
// (Metaspace or Prepend+Replace, byte fallback; Llama-2, Mistral), with added/special tokens and BOS/EOS
// templates. Anything else in the file is a FormatError naming the key, the value and what is supported.
//
// Text is UTF-8. encode() rejects invalid UTF-8 (DataError with the byte offset): the library only ever sees
// Python str, so there is no "its" answer for invalid bytes; callers decide (`freehold tokenize` replaces them
// with U+FFFD as Python's errors="replace" does, `prepare` counts the record as bad).
//
// Thread-safe: encode and decode may run concurrently on one Tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/added_tokens.h"

namespace freehold::data {

class BpeModel;
class Decoder;
class Normalizer;
class PostProcessor;
class PreTokenizer;

class Tokenizer {
 public:
  // Reads and parses `path` (at most kMaxFileBytes). Throws FormatError / SystemError naming the path.
  static Tokenizer load(const std::string& path);
  // Parses tokenizer.json text; `source` names it in errors.
  static Tokenizer from_json_text(std::string_view json_text, const std::string& source);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of `text`; with add_special_tokens, the post-processor's template (BOS/EOS) is applied.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // The text of `ids`; skip_special_tokens drops added tokens marked special. Throws DataError for an id that is
  // in neither the vocabulary nor the added tokens (the library silently drops those).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  // One more than the largest id of the vocabulary and the added tokens: the rows an embedding needs.
  int64_t id_limit() const;
  const AddedVocabulary& added_tokens() const { return added_; }
  // Where it came from (a path, or the name given to from_json_text), and the SHA-256 of the file's bytes when it
  // was loaded from a file ("" otherwise): what a prepared dataset's tokenizer_sha256 attribute is compared with.
  const std::string& source() const { return source_; }
  const std::string& sha256() const { return sha256_; }

  static constexpr uint64_t kMaxFileBytes = uint64_t{512} << 20;
  static constexpr int kMaxJsonDepth = 64;

 private:
  Tokenizer();

  std::string source_;
  std::string sha256_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  AddedVocabulary added_;
};

}  // namespace freehold::data
