// `freehold generate`'s streaming: a character split over byte-fallback tokens is written only once complete
// (never a U+FFFD in between), the pieces add up to the tokenizer's decode of all ids, an incomplete character
// at the end is still written by finish(), and ids outside the vocabulary are left out and counted.
#include "launch/text_streamer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/data/tokenizer_test_util.h"

namespace freehold::launch {
namespace {

// SentencePiece-style BPE with byte fallback: "a", "b", "▁", and the bytes of "é" (C3 A9) and "€" (E2 82 AC).
data::Tokenizer byte_fallback_tokenizer() {
  auto doc = data::testing::bpe_document({"a", "b", "\xE2\x96\x81", "<0xC3>", "<0xA9>", "<0xE2>", "<0x82>", "<0xAC>"}, {});
  doc["model"]["byte_fallback"] = true;
  doc["decoder"] = {{"type", "Sequence"},
                    {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
                                  {{"type", "ByteFallback"}},
                                  {{"type", "Fuse"}}}}};
  return data::testing::load(doc);
}

struct Recorder {
  std::vector<std::string> pieces;
  std::function<void(std::string_view)> sink() {
    return [this](std::string_view s) { pieces.emplace_back(s); };
  }
  std::string joined() const {
    std::string out;
    for (const auto& p : pieces) out += p;
    return out;
  }
};

TEST(TextStreamerTest, HoldsBackASplitCharacterUntilItIsComplete) {
  data::Tokenizer tok = byte_fallback_tokenizer();
  Recorder rec;
  TextStreamer streamer(tok, rec.sink());
  const std::vector<int32_t> ids = {0, 3, 4, 2, 5, 6, 7, 1};  // a é ▁ € b
  std::vector<size_t> pieces_after;
  for (int32_t id : ids) {
    streamer.add(id);
    pieces_after.push_back(rec.pieces.size());
  }
  streamer.finish();
  for (const std::string& p : rec.pieces) EXPECT_EQ(p.find("\xEF\xBF\xBD"), std::string::npos) << p;
  EXPECT_EQ(rec.joined(), tok.decode(ids, true));
  EXPECT_EQ(rec.joined(), "a\xC3\xA9 \xE2\x82\xAC" "b");
  // Nothing is written while a character is incomplete: after <0xC3>, <0xE2> and <0x82>.
  EXPECT_EQ(pieces_after[1], pieces_after[0]);
  EXPECT_EQ(pieces_after[5], pieces_after[4]);
  EXPECT_EQ(pieces_after[6], pieces_after[3] + 1);
}

TEST(TextStreamerTest, FinishWritesAnIncompleteCharacterAndUnknownIdsAreLeftOut) {
  data::Tokenizer tok = byte_fallback_tokenizer();
  Recorder rec;
  TextStreamer streamer(tok, rec.sink());
  streamer.add(0);
  streamer.add(5000);  // a padded embedding row the tokenizer does not know
  streamer.add(-1);
  streamer.add(5);  // <0xE2> alone
  EXPECT_EQ(rec.joined(), "a");
  streamer.finish();
  EXPECT_EQ(rec.joined(), tok.decode({0, 5}, true));
  EXPECT_EQ(streamer.unknown_ids(), 2);
}

}  // namespace
}  // namespace freehold::launch
