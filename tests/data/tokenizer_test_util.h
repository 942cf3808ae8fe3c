// Small tokenizer.json documents built in code for the unit tests: a BPE model over a given vocabulary and
// merges, with the other components set by each test.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "data/tokenizer.h"
#include "nlohmann/json.hpp"

namespace freehold::data::testing {

using nlohmann::json;

// {"model": BPE(vocab: tokens numbered in order, merges as ["a","b"] pairs)} and null components.
inline json bpe_document(const std::vector<std::string>& tokens,
                         const std::vector<std::pair<std::string, std::string>>& merges) {
  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  json merge_list = json::array();
  for (const auto& [a, b] : merges) merge_list.push_back({a, b});
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", nullptr},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}}}};
}

inline Tokenizer load(const json& document) { return Tokenizer::from_json_text(document.dump(), "test.json"); }

inline json added_token(const std::string& content, int id, bool special = true) {
  return {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", !special}, {"special", special}};
}

// The tokens of `ids`, for readable expectations.
inline std::vector<std::string> tokens_of(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(tokenizer.id_to_token(id).value_or("?"));
  return out;
}

}  // namespace freehold::data::testing
