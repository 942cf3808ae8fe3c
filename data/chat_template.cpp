// The built-in chat templates, written out from the models' Jinja templates (see chat_template.h).
#include "data/chat_template.h"

#include "absl/strings/str_cat.h"
#include "core/error.h"

namespace freehold::data {

TrainOn parse_train_on(std::string_view name) {
  if (name == "assistant") return TrainOn::kAssistant;
  if (name == "all") return TrainOn::kAll;
  if (name == "last_assistant") return TrainOn::kLastAssistant;
  throw core::UsageError(absl::StrCat("train_on \"", std::string(name), "\" is unknown; expected assistant, all or last_assistant"));
}

ChatTemplate ChatTemplate::builtin(std::string_view name) {
  if (name == "llama3") return ChatTemplate(Kind::kLlama3, "llama3");
  if (name == "chatml" || name == "qwen" || name == "qwen2") return ChatTemplate(Kind::kChatml, "chatml");
  if (name == "mistral") return ChatTemplate(Kind::kMistral, "mistral");
  throw core::UsageError(absl::StrCat("chat template \"", std::string(name),
                                      "\" is unknown; expected llama3, chatml (qwen) or mistral, or a custom template "
                                      "with per-role prefix and suffix"));
}

ChatTemplate ChatTemplate::custom(const ChatTemplateSpec& spec) {
  for (const auto& [role, unused] : spec.roles) {
    if (role != "system" && role != "user" && role != "assistant") {
      throw core::UsageError(absl::StrCat("custom chat template role \"", role, "\"; expected system, user or assistant"));
    }
  }
  for (const char* role : {"user", "assistant"}) {
    if (!spec.roles.contains(role)) {
      throw core::UsageError(absl::StrCat("custom chat template has no \"", role, "\" role (prefix and suffix)"));
    }
  }
  ChatTemplate out(Kind::kCustom, "custom");
  out.custom_ = spec;
  return out;
}

std::vector<std::string> ChatTemplate::special_token_strings() const {
  switch (kind_) {
    case Kind::kLlama3: return {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
    case Kind::kChatml: return {"<|im_start|>", "<|im_end|>"};
    case Kind::kMistral: return {"<s>", "</s>"};
    case Kind::kCustom: return {};
  }
  return {};
}

std::optional<Rejection> ChatTemplate::render(const std::vector<Message>& messages, TrainOn train_on,
                                              std::optional<int32_t> eos_id, std::vector<Piece>* pieces) const {
  if (messages.empty()) return Rejection{RejectReason::kBadStructure, "no messages"};
  // An optional first system message, then user / assistant alternating from user.
  size_t first = messages[0].role == "system" ? 1 : 0;
  if (first == 1 && kind_ == Kind::kMistral) {
    return Rejection{RejectReason::kBadStructure, "the mistral template has no system role (only user and assistant)"};
  }
  if (first == 1 && kind_ == Kind::kCustom && !custom_.roles.contains("system")) {
    return Rejection{RejectReason::kBadStructure, "the custom template defines no system role"};
  }
  int64_t last_assistant = -1;
  for (size_t i = first; i < messages.size(); ++i) {
    const char* expected = (i - first) % 2 == 0 ? "user" : "assistant";
    if (messages[i].role != expected) {
      return Rejection{RejectReason::kBadStructure,
                       absl::StrCat("messages[", i, "] is ", messages[i].role, "; expected ", expected,
                                    " (an optional first system message, then user and assistant alternating)")};
    }
    if (messages[i].role == "assistant") last_assistant = static_cast<int64_t>(i);
  }
  if (train_on != TrainOn::kAll && last_assistant < 0) {
    return Rejection{RejectReason::kNoTargets, "no assistant message to train on"};
  }

  const bool all = train_on == TrainOn::kAll;
  auto text = [&](std::string s, bool target) { pieces->push_back(Piece{std::move(s), -1, all || target}); };
  auto trained = [&](size_t i) {
    return messages[i].role == "assistant" &&
           (train_on != TrainOn::kLastAssistant || static_cast<int64_t>(i) == last_assistant);
  };

  switch (kind_) {
    case Kind::kLlama3:
      text("<|begin_of_text|>", false);
      for (size_t i = 0; i < messages.size(); ++i) {
        text(absl::StrCat("<|start_header_id|>", messages[i].role, "<|end_header_id|>\n\n"), false);
        text(std::string(python_strip(messages[i].content)), trained(i));
        text("<|eot_id|>", trained(i));
      }
      break;
    case Kind::kChatml:
      if (messages[0].role != "system") text("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n", false);
      for (size_t i = 0; i < messages.size(); ++i) {
        text(absl::StrCat("<|im_start|>", messages[i].role, "\n"), false);
        text(messages[i].content, trained(i));
        text("<|im_end|>", trained(i));
        text("\n", false);
      }
      break;
    case Kind::kMistral:
      text("<s>", false);
      for (size_t i = 0; i < messages.size(); ++i) {
        if (messages[i].role == "user") {
          text(absl::StrCat("[INST] ", messages[i].content, " [/INST]"), false);
        } else {
          text(messages[i].content, trained(i));
          text("</s>", trained(i));
        }
      }
      break;
    case Kind::kCustom:
      for (size_t i = 0; i < messages.size(); ++i) {
        const ChatTemplateSpec::Role& role = custom_.roles.at(messages[i].role);
        text(role.prefix, false);
        text(messages[i].content, trained(i));
        if (!role.suffix.empty()) {
          text(role.suffix, trained(i));
        } else if (messages[i].role == "assistant" && eos_id) {
          pieces->push_back(Piece{"", *eos_id, all || trained(i)});
        }
      }
      break;
  }
  return std::nullopt;
}

}  // namespace freehold::data
