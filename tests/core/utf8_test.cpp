#include "core/utf8.h"

#include <gtest/gtest.h>

#include <string>

namespace freehold::core {
namespace {

TEST(Utf8Test, AcceptsAsciiAndMultibyte) {
  EXPECT_TRUE(is_valid_utf8("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(is_valid_utf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"));  // é € 😀
  EXPECT_TRUE(is_valid_utf8(""));
}

TEST(Utf8Test, RejectsInvalidSequencesAtTheirOffset) {
  EXPECT_EQ(find_invalid_utf8("ab\xFF"), 2u);
  EXPECT_EQ(find_invalid_utf8("\xC0\xAF"), 0u);              // overlong '/'
  EXPECT_EQ(find_invalid_utf8("x\xE0\x80\xAF"), 1u);         // overlong 3-byte
  EXPECT_EQ(find_invalid_utf8("\xED\xA0\x80"), 0u);          // surrogate U+D800
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);      // above U+10FFFF
  EXPECT_EQ(find_invalid_utf8("ok\xE2\x82"), 2u);            // truncated
  EXPECT_EQ(find_invalid_utf8("\x80"), 0u);                  // lone continuation
}

TEST(Utf8Test, ReplaceInvalidSubstitutesMaximalSubparts) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(replace_invalid_utf8("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_EQ(replace_invalid_utf8("a\xE2\x82" "b"), "a" + r + "b");         // truncated 3-byte: one U+FFFD
  EXPECT_EQ(replace_invalid_utf8("\xC0\xAF"), r + r);                      // overlong: each byte
  EXPECT_EQ(replace_invalid_utf8("\xED\xA0\x80"), r + r + r);              // surrogate: each byte
  EXPECT_EQ(replace_invalid_utf8("\xF0\x9F\x98" "x"), r + "x");           // truncated 4-byte
  EXPECT_EQ(replace_invalid_utf8("\xF4\x90\x80\x80"), r + r + r + r);     // above U+10FFFF
  EXPECT_EQ(replace_invalid_utf8("\xFF\xFE"), r + r);
}

}  // namespace
}  // namespace freehold::core
