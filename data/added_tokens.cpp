#include "data/added_tokens.h"

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/log.h"
#include "core/utf8.h"
#include "data/bpe_model.h"
#include "data/normalizer.h"
#include "data/unicode_regex.h"

namespace freehold::data {
namespace {

constexpr size_t kMaxAddedTokens = 1 << 18;

uint32_t decode_at(std::string_view s, size_t i, size_t* length) {
  auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[i + k])); };
  uint32_t lead = b(0);
  if (lead < 0x80) return *length = 1, lead;
  if (lead < 0xE0) return *length = 2, ((lead & 0x1F) << 6) | (b(1) & 0x3F);
  if (lead < 0xF0) return *length = 3, ((lead & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
  return *length = 4, ((lead & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
}

// Unicode White_Space, what `\s` means to the regex crate the library uses for lstrip and rstrip.
bool is_white_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// `\w` of the regex crate: Alphabetic, marks, decimal digits, connector punctuation, joiners.
const UnicodeRegex& word_char() {
  static const UnicodeRegex regex(R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}])", "word-character class");
  return regex;
}

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return word_char().matches_at(s, i);
}

bool starts_with_word(std::string_view s) { return !s.empty() && word_char().matches_at(s, 0); }

// Start of the run of whitespace that ends `s` (s.size() when none).
size_t trailing_space_start(std::string_view s) {
  size_t start = s.size();
  size_t i = 0, length = 0;
  size_t run_start = 0;
  bool in_run = false;
  while (i < s.size()) {
    uint32_t cp = decode_at(s, i, &length);
    if (is_white_space(cp)) {
      if (!in_run) run_start = i, in_run = true;
    } else {
      in_run = false;
    }
    i += length;
  }
  if (in_run) start = run_start;
  return start;
}

// Length of the run of whitespace that starts `s`.
size_t leading_space_length(std::string_view s) {
  size_t i = 0, length = 0;
  while (i < s.size() && is_white_space(decode_at(s, i, &length))) i += length;
  return i;
}

}  // namespace

void AddedVocabulary::Trie::insert(std::string_view pattern, int32_t value) {
  if (pattern.empty()) return;  // the library ignores empty tokens
  int32_t node = 0;
  for (char c : pattern) {
    uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c);
    auto it = edges_.find(key);
    if (it == edges_.end()) {
      auto child = static_cast<int32_t>(values_.size());
      values_.push_back(-1);
      it = edges_.emplace(key, child).first;
    }
    node = it->second;
  }
  if (values_[node] < 0) values_[node] = value;  // the first of equal patterns wins
  first_bytes_[static_cast<uint8_t>(pattern[0])] = true;
}

AddedVocabulary::Trie::Match AddedVocabulary::Trie::find(std::string_view text, size_t from) const {
  for (size_t start = from; start < text.size(); ++start) {
    if (!first_bytes_[static_cast<uint8_t>(text[start])]) continue;
    int32_t node = 0;
    Match best{std::string_view::npos, 0, -1};
    for (size_t i = start; i < text.size(); ++i) {
      auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(text[i]));
      if (it == edges_.end()) break;
      node = it->second;
      if (values_[node] >= 0) best = {start, i + 1, values_[node]};
    }
    if (best.start != std::string_view::npos) return best;
  }
  return {std::string_view::npos, 0, -1};
}

AddedVocabulary AddedVocabulary::from_json(const Json* value, const JsonPath& at, const BpeModel& model,
                                           const Normalizer* normalizer) {
  AddedVocabulary vocabulary;
  if (value == nullptr) return vocabulary;
  require_array(*value, at);
  int64_t max_added = -1;  // the largest id given to an added token so far
  if (value->size() > kMaxAddedTokens) fail_at(at, absl::StrCat("has ", value->size(), " tokens; at most ", kMaxAddedTokens));
  for (size_t i = 0; i < value->size(); ++i) {
    const Json& entry = (*value)[i];
    JsonPath entry_at = at.index(i);
    require_object(entry, entry_at);
    AddedToken token;
    token.content = read_string(entry, entry_at, "content");
    if (!core::is_valid_utf8(token.content)) fail_at(entry_at.child("content"), "is not valid UTF-8");
    const Json& id_value = require_field(entry, entry_at, "id");
    auto stated_id = static_cast<int32_t>(read_int(id_value, entry_at.child("id"), 0, (int64_t{1} << 31) - 2));
    token.single_word = read_bool_or(entry, entry_at, "single_word", false);
    token.lstrip = read_bool_or(entry, entry_at, "lstrip", false);
    token.rstrip = read_bool_or(entry, entry_at, "rstrip", false);
    token.special = read_bool_or(entry, entry_at, "special", false);
    token.normalized = read_bool_or(entry, entry_at, "normalized", !token.special);
    if (token.content.empty()) continue;

    // The library's add_tokens: an identical token is ignored; otherwise the id is the content's existing id
    // (added before, or in the model vocabulary), else one past the largest added id (at least vocab_size).
    std::optional<int32_t> id = vocabulary.token_to_id(token.content);
    if (id) {
      const AddedToken& t = vocabulary.tokens_[vocabulary.id_to_index_.at(*id)];
      if (t.content == token.content && t.single_word == token.single_word && t.lstrip == token.lstrip &&
          t.rstrip == token.rstrip && t.normalized == token.normalized && t.special == token.special) {
        continue;
      }
    }
    if (token.special) vocabulary.special_contents_.insert(token.content);
    if (!id) id = model.token_to_id(token.content);
    if (!id) {
      auto vocab_size = static_cast<int64_t>(model.vocab_size());
      int64_t next = max_added < 0 ? vocab_size : (max_added >= vocab_size || vocab_size == 0) ? max_added + 1 : vocab_size;
      if (next > (int64_t{1} << 31) - 2) fail_at(entry_at, "would get an id beyond 2^31");
      id = static_cast<int32_t>(next);
    }
    if (*id != stated_id) {
      core::log_warning(entry_at.describe(), ": token \"", token.content, "\" states id ", stated_id,
                        " but the tokenizers library gives it id ", *id, "; using ", *id);
    }
    token.id = *id;
    max_added = std::max<int64_t>(max_added, token.id);
    vocabulary.content_to_id_.insert_or_assign(token.content, token.id);
    vocabulary.id_to_index_.insert_or_assign(token.id, vocabulary.tokens_.size());
    vocabulary.tokens_.push_back(std::move(token));
  }
  // Patterns: special tokens first, then the others, as the library orders them (equal patterns: first wins).
  for (bool special : {true, false}) {
    for (size_t i = 0; i < vocabulary.tokens_.size(); ++i) {
      const AddedToken& token = vocabulary.tokens_[i];
      if (token.special != special) continue;
      auto index = static_cast<int32_t>(vocabulary.id_to_index_.at(vocabulary.content_to_id_.at(token.content)));
      if (!token.normalized) {
        vocabulary.raw_trie_.insert(token.content, index);
      } else {
        vocabulary.normalized_trie_.insert(normalizer ? normalizer->normalize(token.content) : token.content, index);
      }
    }
  }
  return vocabulary;
}

std::optional<int32_t> AddedVocabulary::token_to_id(std::string_view content) const {
  auto it = content_to_id_.find(content);
  if (it == content_to_id_.end()) return std::nullopt;
  return it->second;
}

const AddedToken* AddedVocabulary::find_by_id(int32_t id) const {
  auto it = id_to_index_.find(id);
  return it == id_to_index_.end() ? nullptr : &tokens_[it->second];
}

void AddedVocabulary::split(std::string_view text, bool normalized, std::vector<TextPiece>& out) const {
  const Trie& trie = normalized ? normalized_trie_ : raw_trie_;
  size_t start_offset = 0;  // end of the last emitted piece
  size_t search_from = 0;   // the matcher resumes after the previous match, not after its stripped spaces
  while (!trie.empty()) {
    Trie::Match match = trie.find(text, search_from);
    if (match.start == std::string_view::npos) break;
    search_from = match.end;
    const AddedToken& token = tokens_[match.value];
    size_t start = match.start, stop = match.end;
    if (token.single_word) {
      bool space_before = start == 0 || !ends_with_word(text.substr(0, start));
      bool space_after = stop == text.size() || !starts_with_word(text.substr(stop));
      if (!space_before || !space_after) continue;
    }
    if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
    if (token.rstrip) stop += leading_space_length(text.substr(stop));
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, token.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

}  // namespace freehold::data
