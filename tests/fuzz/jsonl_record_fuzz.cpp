// libFuzzer target: the input is a JSONL (or text) file's bytes. Each line is parsed in every format, as JSONL and
// as text; what parses is rendered with each chat template (chat) or built as text / alpaca samples with a small
// character tokenizer. Parsing and building must return a record or a Rejection — never throw anything else,
// crash or trip a sanitizer — and every emitted sample must have ids and mask of one length, ids below id_limit(),
// at least one target after the first token, and no more than seq_len tokens.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/utf8.h"
#include "data/chat_template.h"
#include "data/formats.h"
#include "data/sample_builder.h"
#include "data/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

using freehold::data::ChatTemplate;
using freehold::data::InputFormat;
using freehold::data::SampleBuilder;
using freehold::data::SampleOptions;
using freehold::data::Tokenizer;
using freehold::data::TrainOn;

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "invariant violated: %s\n", what);
  std::abort();
}

// Every byte value is one token (so any valid UTF-8 encodes), plus the special tokens the templates write.
const Tokenizer& tokenizer() {
  static const Tokenizer* instance = [] {
    using nlohmann::json;
    const std::vector<std::string> specials = {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                               "<|end_header_id|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>",
                                               "<s>", "</s>", "[INST]", "[/INST]"};
    json vocab = json::object();
    int id = 0;
    json added = json::array();
    for (const std::string& s : specials) {
      vocab[s] = id;
      added.push_back({{"id", id}, {"content", s}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                       {"normalized", false}, {"special", true}});
      ++id;
    }
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      vocab[name] = id++;
    }
    json doc = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added},
                {"normalizer", nullptr}, {"pre_tokenizer", nullptr}, {"decoder", nullptr},
                {"post_processor",
                 {{"type", "TemplateProcessing"},
                  {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                  {"pair", json::array()},
                  {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {7}}, {"tokens", {"<s>"}}}}}}}},
                {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}, {"byte_fallback", true},
                           {"unk_token", nullptr}}}};
    return new Tokenizer(Tokenizer::from_json_text(doc.dump(), "fuzz-tokenizer.json"));
  }();
  return *instance;
}

void check_builder(const SampleBuilder& builder, const freehold::data::Record& record, int64_t seq_len) {
  freehold::data::BuiltSamples built = builder.build(record);
  if (built.rejection) {
    if (!built.samples.empty()) violated("a rejected record has no samples");
    return;
  }
  for (const auto& sample : built.samples) {
    if (sample.ids.size() != sample.mask.size()) violated("ids and mask of one length");
    if (seq_len > 0 && static_cast<int64_t>(sample.ids.size()) > seq_len) violated("at most seq_len tokens");
    if (sample.num_targets() <= 0) violated("every sample has a target");
    for (int32_t id : sample.ids) {
      if (id < 0 || id >= tokenizer().id_limit()) violated("ids below id_limit");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<std::unique_ptr<SampleBuilder>>* builders = [] {
    auto* out = new std::vector<std::unique_ptr<SampleBuilder>>();
    freehold::data::SpecialTokens special;
    special.bos = 7;
    special.eos = 8;
    special.adds_bos = true;
    for (const char* name : {"llama3", "chatml", "mistral"}) {
      for (TrainOn on : {TrainOn::kAssistant, TrainOn::kLastAssistant, TrainOn::kAll}) {
        SampleOptions options;
        options.format = InputFormat::kChat;
        options.chat_template = ChatTemplate::builtin(name);
        options.train_on = on;
        options.seq_len = 24;
        out->push_back(std::make_unique<SampleBuilder>(tokenizer(), options, special));
      }
    }
    for (InputFormat format : {InputFormat::kText, InputFormat::kAlpaca}) {
      SampleOptions options;
      options.format = format;
      options.seq_len = 16;
      out->push_back(std::make_unique<SampleBuilder>(tokenizer(), options, special));
    }
    return out;
  }();
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t start = 0;
  while (start <= input.size()) {
    size_t end = input.find('\n', start);
    if (end == std::string_view::npos) end = input.size();
    std::string_view line = input.substr(start, end - start);
    start = end + 1;
    try {
      for (bool jsonl : {true, false}) {
        for (InputFormat format : {InputFormat::kText, InputFormat::kAlpaca, InputFormat::kChat}) {
          freehold::data::ParsedRecord parsed = freehold::data::parse_record(line, format, jsonl);
          if (parsed.record && parsed.rejection) violated("a record or a rejection, not both");
          if (!parsed.record) continue;
          for (const auto& builder : *builders) {
            if (builder->options().format == format) check_builder(*builder, *parsed.record, builder->options().seq_len);
          }
        }
      }
      (void)freehold::data::python_strip(freehold::core::is_valid_utf8(line) ? line : std::string_view());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "unexpected exception: %s\n", e.what());
      std::abort();
    }
  }
  return 0;
}
