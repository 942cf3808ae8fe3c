// Added tokens: leftmost-longest matching before pre-tokenization, the single_word / lstrip / rstrip flags,
// normalized and raw tokens, and id assignment.
#include "data/added_tokens.h"

#include <gtest/gtest.h>

#include "tests/data/tokenizer_test_util.h"

namespace freehold::data {
namespace {

using testing::added_token;
using testing::bpe_document;
using testing::json;
using testing::load;
using testing::tokens_of;

using Strings = std::vector<std::string>;

// A character-level vocabulary (every token a single character) plus the given added tokens.
json char_document(const std::vector<json>& added) {
  std::vector<std::string> vocab;
  for (const char* ch : {"a", "b", "c", "d", " ", "\t", "<", ">", "m", "s", "k", "x", "y", "▁"}) vocab.push_back(ch);
  json doc = bpe_document(vocab, {});
  int id = static_cast<int>(vocab.size());
  for (json token : added) {
    token["id"] = id++;
    doc["added_tokens"].push_back(token);
  }
  return doc;
}

json flagged(const std::string& content, bool single_word, bool lstrip, bool rstrip, bool normalized = false) {
  json token = added_token(content, 0, false);
  token["single_word"] = single_word;
  token["lstrip"] = lstrip;
  token["rstrip"] = rstrip;
  token["normalized"] = normalized;
  return token;
}

Strings encode_tokens(const json& doc, const std::string& text) {
  Tokenizer tokenizer = load(doc);
  return tokens_of(tokenizer, tokenizer.encode(text, false));
}

TEST(AddedTokens, LeftmostLongestMatch) {
  json doc = char_document({added_token("<s>", 0), added_token("<s><s>", 0), added_token("s>", 0)});
  EXPECT_EQ(encode_tokens(doc, "a<s><s>b<s>s>"), (Strings{"a", "<s><s>", "b", "<s>", "s>"}));
  EXPECT_EQ(encode_tokens(doc, "<s"), (Strings{"<", "s"}));
}

TEST(AddedTokens, LstripAndRstripTakeTheSurroundingWhitespace) {
  json doc = char_document({flagged("<m>", false, true, true)});
  // The whitespace around the token is part of it: nothing of it is left to encode.
  EXPECT_EQ(encode_tokens(doc, "a  <m>\t b"), (Strings{"a", "<m>", "b"}));
  json left = char_document({flagged("<m>", false, true, false)});
  EXPECT_EQ(encode_tokens(left, "a  <m> b"), (Strings{"a", "<m>", " ", "b"}));
}

TEST(AddedTokens, SingleWordMatchesOnlyWholeWords) {
  json doc = char_document({flagged("ab", true, false, false)});
  EXPECT_EQ(encode_tokens(doc, "ab cab abc ab"), (Strings{"ab", " ", "c", "a", "b", " ", "a", "b", "c", " ", "ab"}));
  EXPECT_EQ(encode_tokens(doc, "<ab>"), (Strings{"<", "ab", ">"}));  // punctuation is not part of a word
}

TEST(AddedTokens, NormalizedTokensMatchTheNormalizedText) {
  // Replace("x", "y"): a normalized token "y" also matches an "x" of the input; a raw token "x" matches first.
  json doc = char_document({flagged("y", false, false, false, true)});
  doc["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", "x"}}}, {"content", "y"}};
  Tokenizer tokenizer = load(doc);
  std::vector<int32_t> ids = tokenizer.encode("axb", false);
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[1], *tokenizer.token_to_id("y"));
  EXPECT_TRUE(tokenizer.added_tokens().has_normalized_tokens());
}

TEST(AddedTokens, IdsFollowTheLibrary) {
  // A token already in the vocabulary keeps that id; a new one gets the next id after the vocabulary.
  json doc = char_document({});
  doc["added_tokens"] = json::array({added_token("a", 0), added_token("<new>", 99)});
  Tokenizer tokenizer = load(doc);
  EXPECT_EQ(*tokenizer.token_to_id("a"), 0);
  EXPECT_EQ(*tokenizer.token_to_id("<new>"), 14);  // vocab has 14 entries; the file's 99 is overruled
  EXPECT_EQ(tokenizer.id_limit(), 15);
}

TEST(AddedTokens, SpecialTokensAreSkippedWhenDecodingOnRequest) {
  json doc = char_document({added_token("<s>", 0, true), added_token("kk", 0, false)});
  Tokenizer tokenizer = load(doc);
  std::vector<int32_t> ids = tokenizer.encode("<s>akk", false);
  EXPECT_EQ(tokenizer.decode(ids, false), "<s> a kk");
  EXPECT_EQ(tokenizer.decode(ids, true), "a kk");
}

}  // namespace
}  // namespace freehold::data
