// Loading tokenizer.json: errors that name the key, the value and what is supported; the pipeline end to end
// (added tokens, normalizer, template) on small documents built in code.
#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "tests/data/tokenizer_test_util.h"

namespace freehold::data {
namespace {

using testing::added_token;
using testing::bpe_document;
using testing::json;
using testing::load;
using testing::tokens_of;

using Strings = std::vector<std::string>;

// The FormatError message of loading `document`.
std::string load_error(const json& document) {
  try {
    load(document);
  } catch (const core::FormatError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a FormatError";
  return "";
}

void expect_contains(const std::string& message, const Strings& parts) {
  for (const std::string& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message << "\nmissing: " << part;
}

TEST(TokenizerLoad, UnsupportedModelNamesKeyValueAndSupported) {
  json doc = bpe_document({"a"}, {});
  doc["model"]["type"] = "WordPiece";
  expect_contains(load_error(doc), {"test.json", "model.type", "\"WordPiece\"", "BPE"});
  doc["model"]["type"] = "Unigram";
  expect_contains(load_error(doc), {"model.type", "\"Unigram\""});
}

TEST(TokenizerLoad, UnsupportedComponentsNameTheirPath) {
  json doc = bpe_document({"a"}, {});
  doc["normalizer"] = {{"type", "Lowercase"}};
  expect_contains(load_error(doc), {"normalizer.type", "\"Lowercase\"", "Prepend", "Replace", "NFC"});

  doc = bpe_document({"a"}, {});
  doc["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", json::array({{{"type", "ByteLevel"}}, {{"type", "Digits"}}})}};
  expect_contains(load_error(doc), {"pre_tokenizer.pretokenizers[1].type", "\"Digits\"", "Split", "Metaspace"});

  doc = bpe_document({"a"}, {});
  doc["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Sideways"}};
  expect_contains(load_error(doc), {"pre_tokenizer.behavior", "\"Sideways\"", "Isolated"});

  doc = bpe_document({"a"}, {});
  doc["decoder"] = {{"type", "WordPiece"}};
  expect_contains(load_error(doc), {"decoder.type", "\"WordPiece\"", "ByteFallback"});

  doc = bpe_document({"a"}, {});
  doc["post_processor"] = {{"type", "BertProcessing"}};
  expect_contains(load_error(doc), {"post_processor.type", "\"BertProcessing\"", "TemplateProcessing"});

  doc = bpe_document({"a"}, {});
  doc["model"]["dropout"] = 0.1;
  expect_contains(load_error(doc), {"model.dropout", "0.1"});
}

TEST(TokenizerLoad, BadMergesAndRegexAndJson) {
  json doc = bpe_document({"a", "b"}, {{"a", "b"}});
  expect_contains(load_error(doc), {"model.merges[0]", "\"ab\" is not in model.vocab"});
  doc = bpe_document({"a", "b", "ab"}, {});
  doc["model"]["merges"] = json::array({"a b c"});
  expect_contains(load_error(doc), {"model.merges[0]", "\"a b c\"", "separated by one space"});
  doc["model"]["merges"] = json::array({json::array({"a"})});
  expect_contains(load_error(doc), {"model.merges[0]", "[\"left\", \"right\"]"});

  doc = bpe_document({"a"}, {});
  doc["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_contains(load_error(doc), {"pre_tokenizer.pattern.Regex", "(unclosed", "does not compile"});

  EXPECT_THROW(Tokenizer::from_json_text("{\"model\": ", "x.json"), core::FormatError);
  EXPECT_THROW(Tokenizer::from_json_text(std::string(100, '[') + std::string(100, ']'), "x.json"), core::FormatError);
  EXPECT_THROW(Tokenizer::from_json_text("[]", "x.json"), core::FormatError);
  expect_contains(load_error(json::object()), {"model", "is missing"});
}

TEST(TokenizerEncode, RejectsInvalidUtf8WithOffset) {
  Tokenizer tokenizer = load(bpe_document({"a"}, {}));
  try {
    tokenizer.encode("aa\xff");
    FAIL() << "expected a DataError";
  } catch (const core::DataError& e) {
    expect_contains(e.what(), {"not valid UTF-8", "byte 2"});
  }
}

TEST(TokenizerEncode, TemplateAddsBosAndEosOnlyWithSpecialTokens) {
  json doc = bpe_document({"<s>", "</s>", "a", "b", "ab"}, {{"a", "b"}});
  doc["added_tokens"] = json::array({added_token("<s>", 0), added_token("</s>", 1)});
  doc["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                              {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}})},
      {"pair", json::array()},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {0}}, {"tokens", {"<s>"}}}},
                          {"</s>", {{"id", "</s>"}, {"ids", {1}}, {"tokens", {"</s>"}}}}}}};
  Tokenizer tokenizer = load(doc);
  EXPECT_EQ(tokenizer.encode("abab", true), (std::vector<int32_t>{0, 4, 4, 1}));
  EXPECT_EQ(tokenizer.encode("abab", false), (std::vector<int32_t>{4, 4}));
  EXPECT_EQ(tokenizer.encode("", true), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(tokenizer.decode({0, 4, 1}, false), "<s> ab </s>");  // no decoder: tokens joined by spaces
  EXPECT_EQ(tokenizer.decode({0, 4, 1}, true), "ab");
  EXPECT_THROW(tokenizer.decode({99}), core::DataError);

  // A template id outside the vocabulary and the added tokens is refused when loading.
  doc["post_processor"]["special_tokens"]["</s>"]["ids"] = {7};
  expect_contains(load_error(doc), {"post_processor.special_tokens.</s>.ids[0]", "is 7", "neither in model.vocab"});
}

TEST(TokenizerEncode, SentencePieceNormalizerPrependsToEachPieceBetweenAddedTokens) {
  // Llama-2's normalizer: Prepend("▁") + Replace(" ", "▁"), applied to each text piece between added tokens.
  json doc = bpe_document({"<s>", "▁", "a", "b", "▁a", "▁ab"}, {{"▁", "a"}, {"▁a", "b"}});
  doc["added_tokens"] = json::array({added_token("<s>", 0)});
  doc["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", "▁"}},
                                                    {{"type", "Replace"}, {"pattern", {{"String", " "}}},
                                                     {"content", "▁"}}})}};
  Tokenizer tokenizer = load(doc);
  EXPECT_EQ(tokens_of(tokenizer, tokenizer.encode("ab a<s>ab")), (Strings{"▁ab", "▁a", "<s>", "▁ab"}));
}

TEST(TokenizerEncode, NfcNormalizerComposes) {
  json doc = bpe_document({"e", "é", "\xCC\x81"}, {});
  doc["normalizer"] = {{"type", "NFC"}};
  Tokenizer tokenizer = load(doc);
  EXPECT_EQ(tokens_of(tokenizer, tokenizer.encode("e\xCC\x81")), (Strings{"é"}));
  doc["normalizer"] = nullptr;
  Tokenizer raw = load(doc);
  EXPECT_EQ(tokens_of(raw, raw.encode("e\xCC\x81")), (Strings{"e", "\xCC\x81"}));
}

}  // namespace
}  // namespace freehold::data
