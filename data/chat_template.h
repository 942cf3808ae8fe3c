// Chat templates: a conversation rendered into the text a model was trained on, as pieces that say which parts
// are training targets. The built-in templates render exactly what these models' tokenizer_config.json Jinja
// templates render with transformers' apply_chat_template (checked by tests/conformance/chat_template_test.py):
//
//   llama3   Meta-Llama-3-*-Instruct:  <|begin_of_text|> then per message
//            "<|start_header_id|>" role "<|end_header_id|>\n\n" content|trim "<|eot_id|>"
//   chatml   Qwen2-*-Instruct: when the first message is not a system one, the default
//            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"; then per message
//            "<|im_start|>" role "\n" content "<|im_end|>\n"
//   mistral  Mistral-7B-Instruct-v0.1/v0.2: "<s>" then "[INST] " user " [/INST]" and assistant "</s>"; only user and
//            assistant, alternating from user (the template raises otherwise)
//   custom   the config's per-role prefix and suffix around each message's content; no BOS in the text
//
// Targets (train_on): the content of assistant turns and the end-of-turn token that closes them (<|eot_id|>,
// <|im_end|>, </s>, or the custom assistant suffix; with an empty custom suffix, the tokenizer's EOS id) —
// every assistant turn (assistant), only the last (last_assistant), or every token (all).
// Conversations: an optional first system message, then user and assistant alternating from user; anything else
// is refused as bad_structure (RELIABILITY.md R6), never rendered.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/data_options.h"
#include "data/formats.h"

namespace freehold::data {

enum class TrainOn { kAssistant, kAll, kLastAssistant };
TrainOn parse_train_on(std::string_view name);  // assistant | all | last_assistant; UsageError otherwise

// A run of rendered text, or one token id (token >= 0, text empty).
struct Piece {
  std::string text;
  int32_t token = -1;
  bool target = false;
};

class ChatTemplate {
 public:
  static ChatTemplate builtin(std::string_view name);  // llama3 | chatml | mistral; UsageError naming the others
  static ChatTemplate custom(const ChatTemplateSpec& spec);

  const std::string& name() const { return name_; }
  // Strings the template writes that must be single special tokens of the tokenizer (checked when it is loaded).
  std::vector<std::string> special_token_strings() const;
  // Whether the rendered text begins with the BOS token itself (built-ins); a custom template gets the
  // tokenizer's BOS id from the sample builder, as the tokenizer's own template would add it.
  bool renders_bos() const { return kind_ != Kind::kCustom; }

  // Renders `messages` into `pieces` (appended). eos_id closes a trained custom assistant turn whose suffix is
  // empty. Returns a Rejection when the conversation is refused.
  std::optional<Rejection> render(const std::vector<Message>& messages, TrainOn train_on, std::optional<int32_t> eos_id,
                                  std::vector<Piece>* pieces) const;

 private:
  enum class Kind { kLlama3, kChatml, kMistral, kCustom };
  ChatTemplate(Kind kind, std::string name) : kind_(kind), name_(std::move(name)) {}
  Kind kind_;
  std::string name_;
  ChatTemplateSpec custom_;
};

}  // namespace freehold::data
