// The BPE model of a tokenizer.json: vocabulary, ranked merges, unknown token, byte fallback (<0xNN> tokens),
// fuse_unk and ignore_merges. Encodes one pre-tokenized word at a time, exactly as the tokenizers library does:
// start from the word's characters, then apply the lowest-ranked merge present (leftmost on ties) until none is.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "data/string_map.h"
#include "absl/synchronization/mutex.h"
#include "data/tokenizer_json.h"

namespace freehold::data {

class BpeModel {
 public:
  // Reads `value` (the "model" object) at `at`. Merges may be "a b" strings (older files) or ["a", "b"] pairs.
  // Throws FormatError naming the key for: another model type, a merge whose tokens or result are not in the
  // vocabulary, dropout, continuing_subword_prefix / end_of_word_suffix, duplicate ids.
  static std::unique_ptr<BpeModel> from_json(const Json& value, const JsonPath& at);

  // Appends the ids of `word` (one pre-token, valid UTF-8) to `ids`. Throws DataError when a character needs an
  // unknown token that is missing from the vocabulary (the library fails there too).
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;
  // Number of vocabulary entries (the library's get_vocab_size; added tokens not counted).
  size_t vocab_size() const { return vocab_.size(); }
  int32_t max_id() const { return max_id_; }

 private:
  BpeModel() = default;
  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;
  int32_t char_id(std::string_view ch) const;  // -1 when the character is not in the vocabulary

  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  StringMap<int32_t> vocab_;
  absl::flat_hash_map<int32_t, std::string> id_to_token_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::vector<int32_t> bmp_char_ids_;  // code point < 0x10000 → id of that one-character token, or -1
  std::optional<std::string> unk_token_;
  std::array<int32_t, 256> byte_fallback_ids_{};  // <0xNN> → id, or -1
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  int32_t max_id_ = -1;

  // Words already encoded (the library keeps a cache too; results are the same either way). Sharded so the
  // threads of `prepare` rarely wait on each other; a shard stops growing when full.
  static constexpr size_t kCacheShards = 32;
  static constexpr size_t kCacheEntriesPerShard = 16384;
  static constexpr size_t kMaxCachedWordBytes = 64;
  struct CacheShard {
    mutable absl::Mutex mutex;
    StringMap<std::vector<int32_t>> words ABSL_GUARDED_BY(mutex);
  };
  mutable std::array<CacheShard, kCacheShards> cache_;
};

}  // namespace freehold::data
