// Records → training samples: token ids and the loss mask (1 where a token is a target), as Hugging Face tooling
// would tokenize them. Chat: the template's text encoded without the tokenizer's own BOS/EOS (what
// apply_chat_template(tokenize=True) does; the template writes BOS). Text: tokenizer(text) — BOS from the
// tokenizer's template — plus EOS when it is not already last; every token a target; longer than seq_len it is cut
// into seq_len pieces. Alpaca: the Stanford Alpaca prompt (or, with a chat template, a user turn "instruction\n\n
// input" and an assistant turn "output"), the output and EOS are targets.
//
// Every emitted sample has at least one target (RELIABILITY.md R7); truncation to seq_len keeps the start.
// A sample that begins with BOS twice is refused as double_bos (R8).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/formats.h"

namespace freehold::data {

class Tokenizer;

// The tokenizer's BOS and EOS: from tokenizer_config.json beside tokenizer.json when it names them ("bos_token",
// "eos_token", a string or {"content": ...}), else the first known name in the vocabulary (EOS: <|end_of_text|>,
// <|endoftext|>, </s>, <|eot_id|>, <|im_end|>; BOS: <|begin_of_text|>, <s>). adds_bos: the tokenizer's own
// template puts a token before the text (e.g. "<s> $A"). An empty path skips tokenizer_config.json.
struct SpecialTokens {
  std::optional<int32_t> bos;
  std::optional<int32_t> eos;
  bool adds_bos = false;
};
SpecialTokens find_special_tokens(const Tokenizer& tokenizer, const std::string& tokenizer_json_path);

struct Sample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;  // 1: a training target
  int64_t num_targets() const;  // targets after the first token (the first is never predicted)
};

struct SampleOptions {
  InputFormat format = InputFormat::kChat;
  std::optional<ChatTemplate> chat_template;  // required for chat; optional for alpaca
  TrainOn train_on = TrainOn::kAssistant;
  int64_t seq_len = 0;  // 0: no truncation
};

struct BuiltSamples {
  std::vector<Sample> samples;
  std::optional<Rejection> rejection;
  bool truncated = false;  // a chat or alpaca sample lost its end to seq_len (its final EOS may be gone, R8)
};

class SampleBuilder {
 public:
  // Throws UsageError when the template's special tokens are not single tokens of the tokenizer.
  SampleBuilder(const Tokenizer& tokenizer, SampleOptions options, SpecialTokens special);
  BuiltSamples build(const Record& record) const;
  // The ids and mask of rendered pieces (exposed for tests).
  Sample encode_pieces(const std::vector<Piece>& pieces) const;
  const SampleOptions& options() const { return options_; }

 private:
  const Tokenizer& tokenizer_;
  SampleOptions options_;
  SpecialTokens special_;
};

}  // namespace freehold::data
