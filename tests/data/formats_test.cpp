// Record parsing (every reject reason), the line reader, chat template rendering and masks, sample building.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "data/chat_template.h"
#include "data/formats.h"
#include "data/record_pipeline.h"
#include "data/sample_builder.h"
#include "tests/data/data_test_util.h"

namespace freehold::data {
namespace {

using testing::char_tokenizer_document;
using testing::json;
using testing::llama3_specials;
using testing::load;
using testing::TempDir;

std::optional<RejectReason> reason_of(std::string_view line, InputFormat format, bool jsonl = true) {
  ParsedRecord parsed = parse_record(line, format, jsonl);
  if (parsed.rejection) return parsed.rejection->reason;
  return std::nullopt;
}

TEST(ParseRecord, EveryRejectReason) {
  EXPECT_EQ(reason_of("not json", InputFormat::kText), RejectReason::kMalformedJson);
  EXPECT_EQ(reason_of("{\"text\": \"a\"", InputFormat::kText), RejectReason::kMalformedJson);
  EXPECT_EQ(reason_of("[1, 2]", InputFormat::kText), RejectReason::kMalformedJson);
  EXPECT_EQ(reason_of("{\"text\": \"a\", \"text\": \"b\"}", InputFormat::kText), RejectReason::kMalformedJson);
  EXPECT_EQ(reason_of(std::string(100, '[') + std::string(100, ']'), InputFormat::kText), RejectReason::kMalformedJson);
  EXPECT_EQ(reason_of("{\"text\": \"a\xff\"}", InputFormat::kText), RejectReason::kInvalidUtf8);
  EXPECT_EQ(reason_of("{\"text\": \"\xc0\xaf\"}", InputFormat::kText), RejectReason::kInvalidUtf8);  // overlong
  EXPECT_EQ(reason_of(std::string("{\"text\": \"a\"}\0", 14), InputFormat::kText), RejectReason::kInvalidUtf8);
  EXPECT_EQ(reason_of("{\"txt\": \"a\"}", InputFormat::kText), RejectReason::kMissingField);
  EXPECT_EQ(reason_of("{\"text\": 5}", InputFormat::kText), RejectReason::kMissingField);
  EXPECT_EQ(reason_of("{\"instruction\": \"a\"}", InputFormat::kAlpaca), RejectReason::kMissingField);
  EXPECT_EQ(reason_of("{\"instruction\": \"a\", \"input\": 3, \"output\": \"b\"}", InputFormat::kAlpaca),
            RejectReason::kMissingField);
  EXPECT_EQ(reason_of("{\"conversation\": []}", InputFormat::kChat), RejectReason::kMissingField);
  EXPECT_EQ(reason_of("{\"messages\": [{\"content\": \"a\"}]}", InputFormat::kChat), RejectReason::kMissingField);
  EXPECT_EQ(reason_of("{\"messages\": [{\"role\": \"user\"}]}", InputFormat::kChat), RejectReason::kMissingField);
  EXPECT_EQ(reason_of("{\"messages\": [{\"role\": \"bot\", \"content\": \"a\"}]}", InputFormat::kChat),
            RejectReason::kUnknownRole);
  EXPECT_EQ(reason_of("{\"messages\": {}}", InputFormat::kChat), RejectReason::kBadStructure);
  EXPECT_EQ(reason_of("{\"messages\": []}", InputFormat::kChat), RejectReason::kBadStructure);
  EXPECT_EQ(reason_of("{\"messages\": [\"hi\"]}", InputFormat::kChat), RejectReason::kBadStructure);
  EXPECT_EQ(reason_of("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}]}]}",
                      InputFormat::kChat),
            RejectReason::kBadStructure);
  EXPECT_EQ(reason_of("hello", InputFormat::kChat, /*jsonl=*/false), RejectReason::kBadStructure);
}

TEST(ParseRecord, GoodRecordsAndBlankLines) {
  EXPECT_FALSE(parse_record("   ", InputFormat::kText, true).record);
  EXPECT_FALSE(parse_record("   ", InputFormat::kText, true).rejection);
  EXPECT_EQ(parse_record("{\"text\": \"h\\u00e9\"}", InputFormat::kText, true).record->text, "h\xc3\xa9");
  EXPECT_EQ(parse_record("plain line", InputFormat::kText, false).record->text, "plain line");
  Record alpaca = *parse_record("{\"instruction\": \"i\", \"output\": \"o\"}", InputFormat::kAlpaca, true).record;
  EXPECT_EQ(alpaca.instruction, "i");
  EXPECT_EQ(alpaca.input, "");
  EXPECT_EQ(alpaca.output, "o");
  Record chat = *parse_record(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})",
                              InputFormat::kChat, true).record;
  ASSERT_EQ(chat.messages.size(), 2u);
  EXPECT_EQ(chat.messages[1].role, "assistant");
}

TEST(LineReader, BomCrlfBlankAndNoFinalNewline) {
  TempDir dir;
  std::string path = dir.write("a.jsonl", "\xEF\xBB\xBF" "one\r\n\ntwo\nthree");
  LineReader reader(path);
  std::string line;
  bool too_long = false;
  std::vector<std::pair<int64_t, std::string>> lines;
  std::vector<uint64_t> offsets;
  while (reader.next(&line, &too_long)) {
    lines.emplace_back(reader.line_number(), line);
    offsets.push_back(reader.byte_offset());
  }
  EXPECT_EQ(lines, (std::vector<std::pair<int64_t, std::string>>{{1, "one"}, {2, ""}, {3, "two"}, {4, "three"}}));
  EXPECT_EQ(offsets, (std::vector<uint64_t>{0, 8, 9, 13}));
  reader.seek(9, 3);
  ASSERT_TRUE(reader.next(&line, &too_long));
  EXPECT_EQ(line, "two");
  EXPECT_EQ(reader.line_number(), 3);
}

TEST(LineReader, OverlongLineIsSkippedNotHeld) {
  TempDir dir;
  std::string big(kMaxRecordBytes + 10, 'x');
  std::string path = dir.write("big.txt", "a\n" + big + "\nb\n");
  big.clear();
  big.shrink_to_fit();
  LineReader reader(path);
  std::string line;
  bool too_long = false;
  ASSERT_TRUE(reader.next(&line, &too_long));
  EXPECT_FALSE(too_long);
  ASSERT_TRUE(reader.next(&line, &too_long));
  EXPECT_TRUE(too_long);
  EXPECT_TRUE(line.empty());
  ASSERT_TRUE(reader.next(&line, &too_long));
  EXPECT_EQ(line, "b");
  EXPECT_EQ(reader.line_number(), 3);
}

TEST(PythonStrip, UnicodeWhitespaceAsStrIsspace) {
  EXPECT_EQ(python_strip(" \t\n hi there \r\n"), "hi there");
  EXPECT_EQ(python_strip("\xE3\x80\x80x\xC2\xA0"), "x");        // U+3000, U+00A0
  EXPECT_EQ(python_strip("\x1Fx\xE2\x80\x8B"), "x\xE2\x80\x8B");  // U+001F is space; U+200B is not
  EXPECT_EQ(python_strip("   "), "");
}

std::string render_text(const ChatTemplate& t, const std::vector<Message>& messages, TrainOn on,
                        std::string* targets = nullptr) {
  std::vector<Piece> pieces;
  auto rejected = t.render(messages, on, std::nullopt, &pieces);
  EXPECT_FALSE(rejected) << (rejected ? rejected->detail : "");
  std::string out;
  for (const Piece& p : pieces) {
    out += p.text;
    if (targets && p.target) *targets += p.text + "|";
  }
  return out;
}

const std::vector<Message> kConversation = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", " Hello! "}, {"user", "Bye"}, {"assistant", "Bye."}};

TEST(ChatTemplate, BuiltinsRenderAsTheirJinjaTemplates) {
  std::string targets;
  EXPECT_EQ(render_text(ChatTemplate::builtin("llama3"), kConversation, TrainOn::kAssistant, &targets),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nBye.<|eot_id|>");
  EXPECT_EQ(targets, "Hello!|<|eot_id|>|Bye.|<|eot_id|>|");
  targets.clear();
  EXPECT_EQ(render_text(ChatTemplate::builtin("chatml"), kConversation, TrainOn::kLastAssistant, &targets),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n Hello! <|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
            "<|im_start|>assistant\nBye.<|im_end|>\n");
  EXPECT_EQ(targets, "Bye.|<|im_end|>|");
  std::vector<Message> no_system(kConversation.begin() + 1, kConversation.end());
  EXPECT_EQ(render_text(ChatTemplate::builtin("chatml"), {no_system[0], no_system[1]}, TrainOn::kAssistant),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n Hello! <|im_end|>\n");
  targets.clear();
  EXPECT_EQ(render_text(ChatTemplate::builtin("mistral"), no_system, TrainOn::kAssistant, &targets),
            "<s>[INST] Hi [/INST] Hello! </s>[INST] Bye [/INST]Bye.</s>");
  EXPECT_EQ(targets, " Hello! |</s>|Bye.|</s>|");
}

TEST(ChatTemplate, RefusedConversations) {
  auto reason = [](const char* name, std::vector<Message> messages, TrainOn on = TrainOn::kAssistant) {
    std::vector<Piece> pieces;
    auto r = ChatTemplate::builtin(name).render(messages, on, std::nullopt, &pieces);
    return r ? std::optional<RejectReason>(r->reason) : std::nullopt;
  };
  EXPECT_EQ(reason("mistral", kConversation), RejectReason::kBadStructure);  // no system role
  EXPECT_EQ(reason("llama3", {{"user", "a"}, {"user", "b"}}), RejectReason::kBadStructure);
  EXPECT_EQ(reason("llama3", {{"assistant", "a"}}), RejectReason::kBadStructure);
  EXPECT_EQ(reason("llama3", {{"user", "a"}, {"assistant", "b"}, {"system", "c"}}), RejectReason::kBadStructure);
  EXPECT_EQ(reason("chatml", {{"system", "s"}, {"user", "a"}}), RejectReason::kNoTargets);
  EXPECT_EQ(reason("chatml", {{"system", "s"}, {"user", "a"}}, TrainOn::kAll), std::nullopt);
  EXPECT_THROW(ChatTemplate::builtin("vicuna"), core::UsageError);
}

class SampleBuilderTest : public ::testing::Test {
 protected:
  Tokenizer tokenizer_ = load(char_tokenizer_document(llama3_specials(), "<|begin_of_text|>"));
  SpecialTokens special() { return find_special_tokens(tokenizer_, "/nonexistent/tokenizer.json"); }
  SampleBuilder builder(InputFormat format, std::optional<std::string> name, TrainOn on = TrainOn::kAssistant,
                        int64_t seq_len = 0) {
    SampleOptions options;
    options.format = format;
    if (name) options.chat_template = ChatTemplate::builtin(*name);
    options.train_on = on;
    options.seq_len = seq_len;
    return SampleBuilder(tokenizer_, options, special());
  }
  std::string targets(const Sample& s) {
    std::string out;
    for (size_t i = 0; i < s.ids.size(); ++i) {
      if (s.mask[i]) out += *tokenizer_.id_to_token(s.ids[i]);
    }
    return out;
  }
};

TEST_F(SampleBuilderTest, SpecialTokensFound) {
  SpecialTokens s = special();
  EXPECT_EQ(s.bos, 0);
  EXPECT_EQ(s.eos, 1);
  EXPECT_TRUE(s.adds_bos);
}

TEST_F(SampleBuilderTest, ChatMaskCoversAssistantContentAndEndOfTurn) {
  Record record;
  record.messages = {{"user", "Hi"}, {"assistant", "Yo"}, {"user", "Q"}, {"assistant", "A"}};
  for (auto [on, expected] : std::vector<std::pair<TrainOn, std::string>>{
           {TrainOn::kAssistant, "Yo<|eot_id|>A<|eot_id|>"}, {TrainOn::kLastAssistant, "A<|eot_id|>"}}) {
    BuiltSamples built = builder(InputFormat::kChat, "llama3", on).build(record);
    ASSERT_FALSE(built.rejection);
    ASSERT_EQ(built.samples.size(), 1u);
    EXPECT_EQ(targets(built.samples[0]), expected);
    EXPECT_EQ(built.samples[0].ids[0], 0);  // one BOS, from the template text
    EXPECT_NE(built.samples[0].ids[1], 0);
  }
  BuiltSamples all = builder(InputFormat::kChat, "llama3", TrainOn::kAll).build(record);
  EXPECT_EQ(all.samples[0].num_targets(), static_cast<int64_t>(all.samples[0].ids.size()) - 1);
}

TEST_F(SampleBuilderTest, TruncationThatLeavesNoTargetIsRejected) {
  Record record;
  record.messages = {{"user", "a long question"}, {"assistant", "answer"}};
  BuiltSamples built = builder(InputFormat::kChat, "llama3", TrainOn::kAssistant, 10).build(record);
  ASSERT_TRUE(built.rejection);
  EXPECT_EQ(built.rejection->reason, RejectReason::kNoTargets);
  BuiltSamples longer = builder(InputFormat::kChat, "llama3", TrainOn::kAssistant, 40).build(record);
  ASSERT_FALSE(longer.rejection);
  EXPECT_TRUE(longer.truncated);
  EXPECT_EQ(longer.samples[0].ids.size(), 40u);
  EXPECT_GT(longer.samples[0].num_targets(), 0);
}

TEST_F(SampleBuilderTest, EmptyAssistantHasOnlyTheEndOfTurnTarget) {
  Record record;
  record.messages = {{"user", "q"}, {"assistant", ""}};
  BuiltSamples built = builder(InputFormat::kChat, "llama3").build(record);
  ASSERT_FALSE(built.rejection);
  EXPECT_EQ(targets(built.samples[0]), "<|eot_id|>");  // the end-of-turn token is always a target
}

TEST_F(SampleBuilderTest, TextGetsBosAndEosAndSplitsAtSeqLen) {
  Record record;
  record.text = "abcdefgh";
  BuiltSamples built = builder(InputFormat::kText, std::nullopt).build(record);
  ASSERT_EQ(built.samples.size(), 1u);
  EXPECT_EQ(built.samples[0].ids.front(), 0);
  EXPECT_EQ(built.samples[0].ids.back(), 1);
  EXPECT_EQ(built.samples[0].ids.size(), 10u);
  BuiltSamples split = builder(InputFormat::kText, std::nullopt, TrainOn::kAssistant, 4).build(record);
  ASSERT_EQ(split.samples.size(), 3u);  // 4 + 4 + 2
  EXPECT_EQ(split.samples[2].ids.size(), 2u);
  record.text = "<|begin_of_text|>abc";
  BuiltSamples twice = builder(InputFormat::kText, std::nullopt).build(record);
  ASSERT_TRUE(twice.rejection);
  EXPECT_EQ(twice.rejection->reason, RejectReason::kDoubleBos);
}

TEST_F(SampleBuilderTest, AlpacaPromptIsNotATarget) {
  Record record;
  record.instruction = "Add";
  record.input = "1 1";
  record.output = "2";
  BuiltSamples built = builder(InputFormat::kAlpaca, std::nullopt).build(record);
  ASSERT_FALSE(built.rejection);
  EXPECT_EQ(targets(built.samples[0]), "2<|end_of_text|>");
  BuiltSamples chat = builder(InputFormat::kAlpaca, "llama3").build(record);
  EXPECT_EQ(targets(chat.samples[0]), "2<|eot_id|>");
}

TEST_F(SampleBuilderTest, CustomTemplateAddsTokenizerBosAndEosWhenSuffixEmpty) {
  ChatTemplateSpec spec;
  spec.roles["user"] = {"U:", "\n"};
  spec.roles["assistant"] = {"A:", ""};
  SampleOptions options;
  options.format = InputFormat::kChat;
  options.chat_template = ChatTemplate::custom(spec);
  SampleBuilder custom(tokenizer_, options, special());
  Record record;
  record.messages = {{"user", "x"}, {"assistant", "y"}};
  BuiltSamples built = custom.build(record);
  ASSERT_FALSE(built.rejection);
  EXPECT_EQ(built.samples[0].ids.front(), 0);
  EXPECT_EQ(targets(built.samples[0]), "y<|end_of_text|>");
  spec.roles["tool"] = {"", ""};
  EXPECT_THROW(ChatTemplate::custom(spec), core::UsageError);
}

TEST_F(SampleBuilderTest, TemplateBosPlusTokenizerBosIsDoubleBos) {
  ChatTemplateSpec spec;
  spec.roles["user"] = {"<|begin_of_text|>U:", "\n"};  // BOS in the template text, and the tokenizer adds one
  spec.roles["assistant"] = {"A:", "<|eot_id|>"};
  SampleOptions options;
  options.format = InputFormat::kChat;
  options.chat_template = ChatTemplate::custom(spec);
  Record record;
  record.messages = {{"user", "x"}, {"assistant", "y"}};
  BuiltSamples built = SampleBuilder(tokenizer_, options, special()).build(record);
  ASSERT_TRUE(built.rejection);
  EXPECT_EQ(built.rejection->reason, RejectReason::kDoubleBos);
}

TEST_F(SampleBuilderTest, TemplateNeedsItsSpecialTokens) {
  EXPECT_THROW(builder(InputFormat::kChat, "chatml"), core::UsageError);
}

TEST(BadRecords, CountsByReasonAndEnforcesTheThreshold) {
  TempDir dir;
  BadRecords bad;
  bad.open_rejects_file(dir.file("rejects.jsonl"));
  for (int i = 0; i < 98; ++i) bad.add_good();
  bad.add_bad("in.jsonl", 7, {RejectReason::kUnknownRole, "role bot"});
  bad.add_bad("in.jsonl", 9, {RejectReason::kMalformedJson, "x"});
  bad.close_rejects_file();
  EXPECT_EQ(bad.count(RejectReason::kUnknownRole), 1);
  EXPECT_NO_THROW(bad.enforce(0.02, "test"));
  try {
    bad.enforce(0.01, "test");
    FAIL();
  } catch (const core::DataError& e) {
    EXPECT_EQ(e.exit_code(), core::ExitCode::kBadData);
    EXPECT_NE(std::string(e.what()).find("unknown_role 1"), std::string::npos) << e.what();
  }
  std::string rejects = core::read_file(dir.file("rejects.jsonl"));
  EXPECT_NE(rejects.find("\"line\":7"), std::string::npos);
  EXPECT_NE(rejects.find("\"reason\":\"unknown_role\""), std::string::npos);
}

}  // namespace
}  // namespace freehold::data

namespace freehold::data {
namespace {

// Rendering and target spans of the built-in templates against transformers' apply_chat_template
// (tests/data/chat_templates/expected.json, written by scripts/make_chat_template_expectations.py).
TEST(ChatTemplate, MatchesTransformersExpectations) {
  const auto expected = nlohmann::json::parse(
      core::read_file(std::string(FREEHOLD_SOURCE_DIR) + "/tests/data/chat_templates/expected.json"));
  ASSERT_GE(expected["cases"].size(), 12u);
  for (const auto& c : expected["cases"]) {
    std::vector<Message> messages;
    for (const auto& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    std::vector<Piece> pieces;
    ASSERT_FALSE(ChatTemplate::builtin(c["template"].get<std::string>())
                     .render(messages, TrainOn::kAssistant, std::nullopt, &pieces));
    std::string rendered;
    std::vector<std::vector<size_t>> spans;
    for (const Piece& p : pieces) {
      const size_t begin = rendered.size();
      rendered += p.text;
      if (!p.target || p.text.empty()) continue;
      if (!spans.empty() && spans.back()[1] == begin) spans.back()[1] = rendered.size();
      else spans.push_back({begin, rendered.size()});
    }
    EXPECT_EQ(rendered, c["rendered"].get<std::string>()) << c["template"];
    EXPECT_EQ(spans, c["targets"].get<std::vector<std::vector<size_t>>>()) << c["template"] << " " << rendered;
  }
}

}  // namespace
}  // namespace freehold::data
