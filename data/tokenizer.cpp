#include "data/tokenizer.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/json_depth.h"
#include "core/sha256.h"
#include "core/file.h"
#include "core/utf8.h"
#include "data/bpe_model.h"
#include "data/decoder.h"
#include "data/normalizer.h"
#include "data/post_processor.h"
#include "data/pre_tokenizer.h"
#include "data/tokenizer_json.h"

namespace freehold::data {

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& path) {
  const std::string bytes = core::read_file(path, kMaxFileBytes);
  Tokenizer tokenizer = from_json_text(bytes, path);
  tokenizer.sha256_ = core::sha256_hex(bytes);
  return tokenizer;
}

Tokenizer Tokenizer::from_json_text(std::string_view json_text, const std::string& source) {
  const JsonPath root{source, ""};
  if (json_text.size() > kMaxFileBytes) {
    fail_at(root, absl::StrCat("is ", json_text.size(), " bytes; a tokenizer.json is at most ", kMaxFileBytes));
  }
  if (int depth = core::json_depth(json_text); depth > kMaxJsonDepth) {
    fail_at(root, absl::StrCat("nests arrays and objects ", depth, " deep; at most ", kMaxJsonDepth));
  }
  Json json;
  try {
    json = Json::parse(json_text);
  } catch (const Json::exception& e) {
    fail_at(root, absl::StrCat("is not valid JSON (", e.what(), ")"));
  }
  require_object(json, root);

  Tokenizer tokenizer;
  tokenizer.source_ = source;
  // truncation and padding are ignored, as transformers ignores them: it sets both for each call, and the
  // default call neither truncates nor pads. freehold cuts sequences to seq_len itself.
  tokenizer.model_ = BpeModel::from_json(require_field(json, root, "model"), root.child("model"));
  static const Json kNull;
  auto component = [&](const char* key) -> const Json& {
    const Json* value = find_field(json, root, key);
    return value ? *value : kNull;
  };
  tokenizer.normalizer_ = Normalizer::from_json(component("normalizer"), root.child("normalizer"));
  tokenizer.pre_tokenizer_ = PreTokenizer::from_json(component("pre_tokenizer"), root.child("pre_tokenizer"));
  tokenizer.post_processor_ = PostProcessor::from_json(component("post_processor"), root.child("post_processor"));
  tokenizer.decoder_ = Decoder::from_json(component("decoder"), root.child("decoder"));
  tokenizer.added_ = AddedVocabulary::from_json(find_field(json, root, "added_tokens"), root.child("added_tokens"),
                                                *tokenizer.model_, tokenizer.normalizer_.get());
  // The library would emit a template id it cannot decode; freehold refuses the file instead, since such an id
  // has no row in the model's embedding either.
  if (tokenizer.post_processor_) {
    for (const PostProcessor::StatedId& stated : tokenizer.post_processor_->stated_ids()) {
      if (!tokenizer.id_to_token(stated.id)) {
        throw core::FormatError(absl::StrCat(stated.where, " is ", stated.id, ", which is neither in model.vocab "
                                             "nor an added token"));
      }
    }
  }
  return tokenizer;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (size_t bad = core::find_invalid_utf8(text); bad != std::string_view::npos) {
    throw core::DataError(absl::StrCat("tokenizer: the text is not valid UTF-8 (byte ", bad, " of ", text.size(),
                                       "); replace or drop invalid sequences before encoding"));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<TextPiece> raw_pieces;
  std::vector<TextPiece> normalized_pieces;
  std::vector<PreToken> words;
  added_.split(text, /*normalized=*/false, raw_pieces);
  for (const TextPiece& raw : raw_pieces) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    std::string_view piece = text.substr(raw.start, raw.end - raw.start);
    std::string normalized = normalizer_ ? normalizer_->normalize(piece) : std::string(piece);
    normalized_pieces.clear();
    if (added_.has_normalized_tokens()) {
      added_.split(normalized, /*normalized=*/true, normalized_pieces);
    } else if (!normalized.empty()) {
      normalized_pieces.push_back({0, normalized.size(), -1});
    }
    for (const TextPiece& sub : normalized_pieces) {
      if (sub.id >= 0) {
        ids.push_back(sub.id);
        continue;
      }
      if (sub.end == sub.start) continue;
      words.clear();
      words.push_back({normalized.substr(sub.start, sub.end - sub.start), raw.start == 0 && sub.start == 0});
      if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(words);
      for (const PreToken& word : words) model_->encode_word(word.text, ids);
    }
  }
  if (add_special_tokens && post_processor_) return post_processor_->apply(ids);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = nullptr;
    if (const AddedToken* added = added_.find_by_id(id)) {
      token = &added->content;
    } else {
      token = model_->id_to_token(id);
    }
    if (token == nullptr) {
      throw core::DataError(absl::StrCat("tokenizer ", source_, ": id ", id, " is neither in the vocabulary nor an "
                                         "added token (ids go up to ", id_limit() - 1, ")"));
    }
    if (skip_special_tokens && added_.is_special(*token)) continue;
    tokens.push_back(*token);
  }
  if (decoder_) return decoder_->decode(std::move(tokens));
  return absl::StrJoin(tokens, " ");
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto id = added_.token_to_id(token)) return id;
  return model_->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* added = added_.find_by_id(id)) return added->content;
  if (const std::string* token = model_->id_to_token(id)) return *token;
  return std::nullopt;
}

int64_t Tokenizer::id_limit() const {
  int64_t limit = static_cast<int64_t>(model_->max_id()) + 1;
  for (const AddedToken& token : added_.tokens()) limit = std::max<int64_t>(limit, int64_t{token.id} + 1);
  return limit;
}

}  // namespace freehold::data
