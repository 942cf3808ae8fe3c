// The BPE model: merge order, both merge file forms, byte fallback, unknown handling, ignore_merges.
#include "data/bpe_model.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "tests/data/tokenizer_test_util.h"

namespace freehold::data {
namespace {

using testing::bpe_document;
using testing::json;
using testing::load;
using testing::tokens_of;

using Strings = std::vector<std::string>;

Strings encode_tokens(const json& doc, const std::string& text) {
  Tokenizer tokenizer = load(doc);
  return tokens_of(tokenizer, tokenizer.encode(text, false));
}

TEST(BpeModel, LowestRankFirstLeftmostOnTies) {
  // "aaa" with merge (a,a): the left pair merges first. "abc": (b,c) outranks (a,b).
  json doc = bpe_document({"a", "b", "c", "aa", "ab", "bc"}, {{"b", "c"}, {"a", "a"}, {"a", "b"}});
  EXPECT_EQ(encode_tokens(doc, "aaa"), (Strings{"aa", "a"}));
  EXPECT_EQ(encode_tokens(doc, "abc"), (Strings{"a", "bc"}));
  EXPECT_EQ(encode_tokens(doc, "aaaa"), (Strings{"aa", "aa"}));
}

TEST(BpeModel, MergesAsStringsAndAsPairsAreTheSame) {
  json pairs = bpe_document({"h", "e", "l", "o", "he", "ll", "llo", "hello"},
                            {{"h", "e"}, {"l", "l"}, {"ll", "o"}, {"he", "llo"}});
  json strings = pairs;
  strings["model"]["merges"] = json::array({"h e", "l l", "ll o", "he llo"});
  EXPECT_EQ(encode_tokens(pairs, "hello"), (Strings{"hello"}));
  EXPECT_EQ(encode_tokens(strings, "hello"), (Strings{"hello"}));
  EXPECT_EQ(encode_tokens(strings, "helo"), (Strings{"he", "l", "o"}));
  EXPECT_EQ(encode_tokens(pairs, "helo"), encode_tokens(strings, "helo"));
}

TEST(BpeModel, ByteFallbackSpellsUnknownCharactersAsBytes) {
  std::vector<std::string> vocab = {"<unk>", "a"};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab.push_back(name);
  }
  json doc = bpe_document(vocab, {});
  doc["model"]["byte_fallback"] = true;
  doc["model"]["unk_token"] = "<unk>";
  EXPECT_EQ(encode_tokens(doc, "a€a"), (Strings{"a", "<0xE2>", "<0x82>", "<0xAC>", "a"}));
  doc["model"]["byte_fallback"] = false;
  EXPECT_EQ(encode_tokens(doc, "a€a"), (Strings{"a", "<unk>", "a"}));
}

TEST(BpeModel, FuseUnkJoinsConsecutiveUnknowns) {
  json doc = bpe_document({"<unk>", "a"}, {});
  doc["model"]["unk_token"] = "<unk>";
  EXPECT_EQ(encode_tokens(doc, "xyaz"), (Strings{"<unk>", "<unk>", "a", "<unk>"}));
  doc["model"]["fuse_unk"] = true;
  EXPECT_EQ(encode_tokens(doc, "xyaz"), (Strings{"<unk>", "a", "<unk>"}));
  doc["model"]["unk_token"] = nullptr;  // no unknown token: unknown characters are dropped, as the library does
  EXPECT_EQ(encode_tokens(doc, "xyaz"), (Strings{"a"}));
  doc["model"]["unk_token"] = "<missing>";
  Tokenizer tokenizer = load(doc);
  EXPECT_THROW(tokenizer.encode("x"), core::DataError);
}

TEST(BpeModel, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  // "abc" is in the vocabulary but no merge sequence reaches it.
  json doc = bpe_document({"a", "b", "c", "ab", "abc"}, {{"a", "b"}});
  EXPECT_EQ(encode_tokens(doc, "abc"), (Strings{"ab", "c"}));
  doc["model"]["ignore_merges"] = true;
  EXPECT_EQ(encode_tokens(doc, "abc"), (Strings{"abc"}));
}

TEST(BpeModel, DuplicateIdsAreRejected) {
  json doc = bpe_document({"a", "b"}, {});
  doc["model"]["vocab"]["b"] = 0;
  EXPECT_THROW(load(doc), core::FormatError);
}

}  // namespace
}  // namespace freehold::data
