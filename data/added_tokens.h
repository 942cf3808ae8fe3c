// Added and special tokens of a tokenizer.json ("added_tokens"): found in the text before pre-tokenization, each
// becoming one id. Tokens with normalized=false are matched in the raw text, the others in the normalized text.
// Matching is leftmost-longest, with the single_word / lstrip / rstrip rules of the tokenizers library.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "data/string_map.h"
#include "data/tokenizer_json.h"

namespace freehold::data {

class BpeModel;
class Normalizer;

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A piece of the text after added-token splitting: bytes [start, end); `id` is the added token's id, or -1 for
// text still to be tokenized.
struct TextPiece {
  size_t start = 0;
  size_t end = 0;
  int32_t id = -1;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // Reads the "added_tokens" array (nullptr: none). Ids are assigned as the library assigns them (the token's id
  // in the model vocabulary, else the next free id after it); a stated id that disagrees is logged as a warning,
  // as the library does. `normalizer` (may be null) gives the normalized tokens' patterns.
  static AddedVocabulary from_json(const Json* value, const JsonPath& at, const BpeModel& model,
                                   const Normalizer* normalizer);

  // Splits `text` at the raw (normalized=false) or normalized tokens; appends pieces covering all of `text`.
  void split(std::string_view text, bool normalized, std::vector<TextPiece>& out) const;
  bool has_normalized_tokens() const { return !normalized_trie_.empty(); }

  std::optional<int32_t> token_to_id(std::string_view content) const;
  const AddedToken* find_by_id(int32_t id) const;
  bool is_special(std::string_view content) const { return special_contents_.contains(content); }
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // A byte trie over the patterns, for leftmost-longest matching.
  class Trie {
   public:
    void insert(std::string_view pattern, int32_t value);
    bool empty() const { return values_.size() <= 1; }
    // The leftmost-longest match starting at or after `from`: {start, end, value}, or start == npos.
    struct Match {
      size_t start;
      size_t end;
      int32_t value;
    };
    Match find(std::string_view text, size_t from) const;

   private:
    absl::flat_hash_map<uint64_t, int32_t> edges_;  // (node << 8 | byte) → child node
    std::vector<int32_t> values_{-1};               // node → value of the pattern ending there, or -1
    bool first_bytes_[256] = {};
  };

  std::vector<AddedToken> tokens_;  // in file order, with their assigned ids
  StringMap<int32_t> content_to_id_;
  absl::flat_hash_map<int32_t, size_t> id_to_index_;  // id → index in tokens_
  StringSet special_contents_;
  Trie raw_trie_;         // values: index in tokens_
  Trie normalized_trie_;  // values: index in tokens_
};

}  // namespace freehold::data
