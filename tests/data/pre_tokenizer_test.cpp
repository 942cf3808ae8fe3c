// Pre-tokenizers: the split patterns (GPT-2, Llama-3), Split behaviors, Metaspace prepend schemes, ByteLevel.
#include "data/pre_tokenizer.h"

#include <gtest/gtest.h>

#include "data/unicode_regex.h"

namespace freehold::data {
namespace {

using Strings = std::vector<std::string>;

Strings pre_tokenize(const Json& config, const std::string& text, bool at_start = true) {
  auto pre_tokenizer = PreTokenizer::from_json(config, {"test.json", "pre_tokenizer"});
  std::vector<PreToken> tokens = {{text, at_start}};
  pre_tokenizer->pre_tokenize(tokens);
  Strings out;
  for (const PreToken& t : tokens) out.push_back(t.text);
  return out;
}

Json split(const std::string& pattern, const std::string& behavior, bool regex = true) {
  return {{"type", "Split"}, {"pattern", {{regex ? "Regex" : "String", pattern}}}, {"behavior", behavior},
          {"invert", false}};
}

const char* kLlama3 = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

TEST(UnicodeRegex, WhitespaceIsUnicodeWhiteSpace) {
  EXPECT_EQ(oniguruma_to_pcre2(R"(\s+(?!\S)|[^\s\d]\\s)"), R"(\p{White_Space}+(?!\P{White_Space})|[^\p{White_Space}\d]\\s)");
  // Letters and numbers gain what Unicode 15-16 added: U+1C89 (Unicode 16) is a letter to the library.
  std::string letters = oniguruma_to_pcre2(R"(\p{L}[^\p{N}]\P{L})");
  EXPECT_EQ(letters.rfind("[\\p{L}\\x{1C89}", 0), 0u) << letters;
  EXPECT_NE(letters.find("[^\\p{N}\\x{10D40}"), std::string::npos) << letters;
  EXPECT_NE(letters.find("[^\\p{L}\\x{1C89}"), std::string::npos) << letters;
  EXPECT_TRUE(UnicodeRegex(R"(\p{L})", "test").matches_at("\xE1\xB2\x89", 0));
  UnicodeRegex regex("\\s", "test");
  std::vector<ByteSpan> matches;
  regex.find_all("a\xC2\x85" "b\xE3\x80\x80" "c\x1F" "d", matches);  // U+0085 and U+3000 are, U+001F is not
  EXPECT_EQ(matches.size(), 2u);
}

TEST(UnicodeRegex, EmptyMatchesAdvanceOneCharacter) {
  UnicodeRegex regex("x*", "test");
  std::vector<ByteSpan> matches;
  regex.find_all("ax\xC3\xA9", matches);  // the onig crate's find_iter: (0,0) (1,2) (4,4); (2,2) follows a match
  ASSERT_EQ(matches.size(), 3u);
  EXPECT_EQ(matches[1].start, 1u);
  EXPECT_EQ(matches[1].end, 2u);
  EXPECT_EQ(matches[2].start, 4u);
}

TEST(PreTokenizer, Llama3PatternGroupsDigitsByThreeAndKeepsContractions) {
  Json config = split(kLlama3, "Isolated");
  EXPECT_EQ(pre_tokenize(config, "I'M 1234567 they're"), (Strings{"I", "'M", " ", "123", "456", "7", " they", "'re"}));
  EXPECT_EQ(pre_tokenize(config, "a  \n\n b"), (Strings{"a", "  \n\n", " b"}));
}

TEST(PreTokenizer, SplitBehaviors) {
  EXPECT_EQ(pre_tokenize(split("-", "Removed", false), "a-b--c"), (Strings{"a", "b", "c"}));
  EXPECT_EQ(pre_tokenize(split("-", "Isolated", false), "a-b--c"), (Strings{"a", "-", "b", "-", "-", "c"}));
  EXPECT_EQ(pre_tokenize(split("-", "MergedWithPrevious", false), "a-b--c"), (Strings{"a-", "b-", "-", "c"}));
  EXPECT_EQ(pre_tokenize(split("-", "MergedWithNext", false), "a-b--c"), (Strings{"a", "-b", "-", "-c"}));
  EXPECT_EQ(pre_tokenize(split("-", "Contiguous", false), "a-b--c"), (Strings{"a", "-", "b", "--", "c"}));
  Json inverted = split("-", "Isolated", false);
  inverted["invert"] = true;
  EXPECT_EQ(pre_tokenize(inverted, "a-b--c"), (Strings{"a", "-", "b", "-", "-", "c"}));
}

TEST(PreTokenizer, MetaspacePrependSchemes) {
  Json config = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}, {"split", true}};
  EXPECT_EQ(pre_tokenize(config, "Hey  you", true), (Strings{"▁Hey", "▁", "▁you"}));
  EXPECT_EQ(pre_tokenize(config, "Hey", false), (Strings{"Hey"}));  // not at the start of the input
  config["prepend_scheme"] = "always";
  EXPECT_EQ(pre_tokenize(config, "Hey", false), (Strings{"▁Hey"}));
  config["prepend_scheme"] = "never";
  config["split"] = false;
  EXPECT_EQ(pre_tokenize(config, "Hey you", true), (Strings{"Hey▁you"}));
}

TEST(PreTokenizer, ByteLevelMapsBytesAndSplitsLikeGpt2) {
  Json config = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  EXPECT_EQ(pre_tokenize(config, "Hello world's  é"), (Strings{"Hello", "Ġworld", "'s", "Ġ", "ĠÃ©"}));
  config["add_prefix_space"] = true;
  EXPECT_EQ(pre_tokenize(config, "Hi"), (Strings{"ĠHi"}));
}

}  // namespace
}  // namespace freehold::data
