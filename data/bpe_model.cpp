#include "data/bpe_model.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/error.h"
#include "core/utf8.h"

namespace freehold::data {
namespace {

constexpr int64_t kMaxId = (int64_t{1} << 31) - 2;

size_t utf8_length(unsigned char lead) { return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }

// The code point of the single UTF-8 character `ch` (valid UTF-8 assumed).
uint32_t decode_char(std::string_view ch) {
  auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(ch[i])); };
  switch (ch.size()) {
    case 1: return b(0);
    case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

bool is_one_char(std::string_view s) { return !s.empty() && utf8_length(static_cast<unsigned char>(s[0])) == s.size(); }

// One symbol of a word being merged: a doubly linked list over a vector, so merges never move memory.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

struct Candidate {
  int32_t rank;
  int32_t pos;  // index of the left symbol
  int32_t new_id;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

std::unique_ptr<BpeModel> BpeModel::from_json(const Json& value, const JsonPath& at) {
  require_object(value, at);
  if (find_field(value, at, "type") != nullptr) {
    read_type(value, at, {"BPE"});
  } else if (find_field(value, at, "merges") == nullptr) {
    fail_at(at, "has no \"type\" and no \"merges\"; freehold supports the BPE model only");
  }
  auto model = std::unique_ptr<BpeModel>(new BpeModel());

  if (const Json* dropout = find_field(value, at, "dropout")) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0) {
      fail_at(at.child("dropout"), absl::StrCat("is ", show_value(*dropout), "; freehold tokenizes "
                                                "deterministically and supports only null or 0"));
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!read_string_or(value, at, key, "").empty()) {
      fail_at(at.child(key), absl::StrCat("is ", show_value(value[key]), "; freehold supports only null (the "
                                          "byte-level and SentencePiece BPE families set none)"));
    }
  }
  model->byte_fallback_ = read_bool_or(value, at, "byte_fallback", false);
  model->fuse_unk_ = read_bool_or(value, at, "fuse_unk", false);
  model->ignore_merges_ = read_bool_or(value, at, "ignore_merges", false);
  if (find_field(value, at, "unk_token") != nullptr) model->unk_token_ = read_string(value, at, "unk_token");

  const JsonPath vocab_at = at.child("vocab");
  const Json& vocab = require_field(value, at, "vocab");
  require_object(vocab, vocab_at);
  model->vocab_.reserve(vocab.size());
  model->id_to_token_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const std::string& token = it.key();
    JsonPath entry_at = vocab_at.child(absl::StrCat("\"", token.substr(0, 40), "\""));
    auto id = static_cast<int32_t>(read_int(it.value(), entry_at, 0, kMaxId));
    if (!core::is_valid_utf8(token)) fail_at(entry_at, "is a token that is not valid UTF-8");
    auto [existing, inserted] = model->id_to_token_.emplace(id, token);
    if (!inserted) {
      fail_at(entry_at, absl::StrCat("has id ", id, ", which \"", existing->second.substr(0, 40),
                                     "\" has too; ids must be unique"));
    }
    model->vocab_.emplace(token, id);
    model->max_id_ = std::max(model->max_id_, id);
  }

  model->bmp_char_ids_.assign(0x10000, -1);
  for (const auto& [token, id] : model->vocab_) {
    if (is_one_char(token)) {
      uint32_t cp = decode_char(token);
      if (cp < 0x10000) model->bmp_char_ids_[cp] = id;
    }
  }
  model->byte_fallback_ids_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    auto it = model->vocab_.find(absl::StrFormat("<0x%02X>", b));
    if (it != model->vocab_.end()) model->byte_fallback_ids_[b] = it->second;
  }

  const JsonPath merges_at = at.child("merges");
  const Json* merges = find_field(value, at, "merges");
  if (merges != nullptr) {
    require_array(*merges, merges_at);
    model->merges_.reserve(merges->size());
    for (size_t rank = 0; rank < merges->size(); ++rank) {
      const Json& merge = (*merges)[rank];
      JsonPath merge_at = merges_at.index(rank);
      std::string left, right;
      if (merge.is_string()) {
        // Older files: "a b", exactly one space (so neither part can contain a space).
        const std::string& line = merge.get_ref<const std::string&>();
        size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
          fail_at(merge_at, absl::StrCat("is ", show_value(merge), "; expected \"left right\" (two tokens "
                                         "separated by one space) or [\"left\", \"right\"]"));
        }
        left = line.substr(0, space);
        right = line.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      } else {
        fail_at(merge_at, absl::StrCat("is ", show_value(merge), "; expected \"left right\" or [\"left\", \"right\"]"));
      }
      auto lookup = [&](const std::string& token) {
        auto it = model->vocab_.find(token);
        if (it == model->vocab_.end()) {
          fail_at(merge_at, absl::StrCat("is ", show_value(merge), ", but \"", token.substr(0, 40),
                                         "\" is not in model.vocab"));
        }
        return it->second;
      };
      int32_t left_id = lookup(left);
      int32_t right_id = lookup(right);
      int32_t new_id = lookup(left + right);
      // A repeated pair takes the later rank, as the library's map insertion does.
      model->merges_.insert_or_assign(pair_key(left_id, right_id), Merge{static_cast<int32_t>(rank), new_id});
    }
  }
  return model;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  auto it = id_to_token_.find(id);
  return it == id_to_token_.end() ? nullptr : &it->second;
}

int32_t BpeModel::char_id(std::string_view ch) const {
  if (ch.size() <= 3) return bmp_char_ids_[decode_char(ch)];
  auto it = vocab_.find(ch);
  return it == vocab_.end() ? -1 : it->second;
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  auto add = [&](int32_t id) {
    auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, -1, true});
    if (n > 0) symbols[n - 1].next = n;
  };
  auto unk_id = [&]() -> int32_t {
    auto it = vocab_.find(*unk_token_);
    if (it == vocab_.end()) {
      throw core::DataError(absl::StrCat("tokenizer: the unknown token \"", *unk_token_,
                                         "\" (model.unk_token) is not in model.vocab, and the text needs it"));
    }
    return it->second;
  };

  // Characters → initial symbols. A pending unknown is held back so fuse_unk can extend it; the order of
  // operations (byte-fallback tokens do not flush a pending unknown) is the library's.
  bool have_unk = false;
  int32_t pending_unk = -1;
  for (size_t i = 0; i < word.size();) {
    size_t n = std::min(utf8_length(static_cast<unsigned char>(word[i])), word.size() - i);
    std::string_view ch = word.substr(i, n);
    i += n;
    int32_t id = char_id(ch);
    if (id >= 0) {
      if (have_unk) {
        add(pending_unk);
        have_unk = false;
      }
      add(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all = all && byte_fallback_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (char c : ch) add(byte_fallback_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    if (unk_token_) {
      if (have_unk && fuse_unk_) continue;  // the pending unknown now covers this character too
      if (have_unk) add(pending_unk);
      pending_unk = unk_id();
      have_unk = true;
    }
  }
  if (have_unk) add(pending_unk);

  // Merges: lowest rank first, leftmost on ties; a candidate is stale when its symbols changed since.
  thread_local std::vector<Candidate> queue;  // a min-heap on (rank, pos)
  queue.clear();
  const auto later = [](const Candidate& a, const Candidate& b) { return a > b; };
  auto push_pair = [&](int32_t left) {
    int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (it == merges_.end()) return;
    queue.push_back({it->second.rank, left, it->second.new_id});
    std::push_heap(queue.begin(), queue.end(), later);
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), later);
    Candidate top = queue.back();
    queue.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  if (word.size() > kMaxCachedWordBytes) {
    merge_word(word, ids);
    return;
  }
  CacheShard& shard = cache_[StringViewHash{}(word) % kCacheShards];
  {
    absl::ReaderMutexLock lock(&shard.mutex);
    auto it = shard.words.find(word);
    if (it != shard.words.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t first = ids.size();
  merge_word(word, ids);
  absl::MutexLock lock(&shard.mutex);
  if (shard.words.size() < kCacheEntriesPerShard) {
    shard.words.emplace(std::string(word), std::vector<int32_t>(ids.begin() + first, ids.end()));
  }
}

}  // namespace freehold::data
