// Decoders: byte-level, the SentencePiece chain (Replace, ByteFallback, Fuse, Strip), Metaspace.
#include "data/decoder.h"

#include <gtest/gtest.h>

namespace freehold::data {
namespace {

std::string decode(const Json& config, std::vector<std::string> tokens) {
  return Decoder::from_json(config, {"test.json", "decoder"})->decode(std::move(tokens));
}

const Json kSentencePiece = {
    {"type", "Sequence"},
    {"decoders", Json::array({{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                              {{"type", "ByteFallback"}},
                              {{"type", "Fuse"}},
                              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};

TEST(Decoder, SentencePieceChain) {
  EXPECT_EQ(decode(kSentencePiece, {"▁Hello", "▁wor", "ld"}), "Hello world");
  EXPECT_EQ(decode(kSentencePiece, {"▁a", "<0xE2>", "<0x82>", "<0xAC>", "b"}), "a€b");
  // Bytes that are not valid UTF-8 become one U+FFFD each.
  EXPECT_EQ(decode(kSentencePiece, {"a", "<0xE2>", "<0x82>", "b"}), "a\xEF\xBF\xBD\xEF\xBF\xBD" "b");
}

TEST(Decoder, ByteLevelPassesNonAlphabetTokensThroughAndReplacesInvalidUtf8) {
  Json config = {{"type", "ByteLevel"}};
  EXPECT_EQ(decode(config, {"Hello", "Ġworld", "<|im_end|>", "ĠÃ©"}), "Hello world<|im_end|> é");
  EXPECT_EQ(decode(config, {"Ã"}), "\xEF\xBF\xBD");  // a lone lead byte
}

TEST(Decoder, MetaspaceDropsTheFirstTokensReplacements) {
  Json config = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}, {"split", true}};
  EXPECT_EQ(decode(config, {"▁Hey", "▁friend"}), "Hey friend");
  config["prepend_scheme"] = "never";
  EXPECT_EQ(decode(config, {"▁Hey", "▁friend"}), " Hey friend");
}

}  // namespace
}  // namespace freehold::data
