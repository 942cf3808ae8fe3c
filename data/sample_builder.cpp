// Rendering and tokenizing records; the mask follows the rendered pieces through tokenization.
#include "data/sample_builder.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/file.h"
#include "data/tokenizer.h"
#include "nlohmann/json.hpp"

namespace freehold::data {

int64_t Sample::num_targets() const {
  int64_t n = 0;  // the first token is never predicted
  for (size_t i = 1; i < mask.size(); ++i) n += mask[i];
  return n;
}

namespace {

std::optional<std::string> config_token(const nlohmann::json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return std::nullopt;
}

std::optional<int32_t> first_known(const Tokenizer& tokenizer, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    if (auto id = tokenizer.token_to_id(name)) return id;
  }
  return std::nullopt;
}

}  // namespace

SpecialTokens find_special_tokens(const Tokenizer& tokenizer, const std::string& tokenizer_json_path) {
  SpecialTokens out;
  const std::string config_path = core::parent_directory(tokenizer_json_path) + "/tokenizer_config.json";
  std::ifstream probe(config_path);
  bool from_config = false;
  if (!tokenizer_json_path.empty() && probe) {
    nlohmann::json config = nlohmann::json::parse(core::read_file(config_path, uint64_t{64} << 20), nullptr, false);
    if (config.is_object()) {
      from_config = true;
      if (auto bos = config_token(config, "bos_token")) out.bos = tokenizer.token_to_id(*bos);
      if (auto eos = config_token(config, "eos_token")) out.eos = tokenizer.token_to_id(*eos);
    }
  }
  if (!from_config || !out.eos) {
    out.eos = first_known(tokenizer, {"<|end_of_text|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|im_end|>"});
  }
  if (!from_config) out.bos = first_known(tokenizer, {"<|begin_of_text|>", "<s>"});
  // Whether the tokenizer's template adds a token before the text.
  std::vector<int32_t> plain = tokenizer.encode("a", false);
  std::vector<int32_t> with = tokenizer.encode("a", true);
  if (with.size() > plain.size() && !std::equal(plain.begin(), plain.end(), with.begin())) {
    out.adds_bos = true;
    out.bos = with[0];
  }
  return out;
}

SampleBuilder::SampleBuilder(const Tokenizer& tokenizer, SampleOptions options, SpecialTokens special)
    : tokenizer_(tokenizer), options_(std::move(options)), special_(special) {
  if (options_.format == InputFormat::kChat && !options_.chat_template) {
    throw core::UsageError("format chat needs a chat template: llama3, chatml, mistral, or a custom one");
  }
  if (options_.chat_template) {
    for (const std::string& token : options_.chat_template->special_token_strings()) {
      std::vector<int32_t> ids = tokenizer_.encode(token, false);
      if (ids.size() != 1) {
        throw core::UsageError(absl::StrCat("chat template ", options_.chat_template->name(), " writes \"", token,
                                            "\", which this tokenizer does not have as one token; pick the template "
                                            "of the model's family"));
      }
    }
  }
}

Sample SampleBuilder::encode_pieces(const std::vector<Piece>& pieces) const {
  Sample out;
  size_t i = 0;
  while (i < pieces.size()) {
    if (pieces[i].token >= 0) {
      out.ids.push_back(pieces[i].token);
      out.mask.push_back(pieces[i].target ? 1 : 0);
      ++i;
      continue;
    }
    // A run of text pieces is encoded as one text, so tokens merge across pieces as they would in the library.
    size_t j = i;
    std::string text;
    std::vector<size_t> ends;  // byte offset where each piece of the run ends
    while (j < pieces.size() && pieces[j].token < 0) {
      text += pieces[j].text;
      ends.push_back(text.size());
      ++j;
    }
    std::vector<int32_t> ids = tokenizer_.encode(text, false);
    // Token boundaries of the pieces: when encoding the pieces one by one gives the same ids, their sizes;
    // otherwise the ids of the text up to each piece end that agree with the whole (a token that straddles a
    // boundary belongs to the later piece).
    std::vector<size_t> token_ends;
    std::vector<int32_t> joined;
    for (size_t k = i; k < j; ++k) {
      std::vector<int32_t> part = tokenizer_.encode(pieces[k].text, false);
      joined.insert(joined.end(), part.begin(), part.end());
      token_ends.push_back(joined.size());
    }
    if (joined != ids) {
      token_ends.clear();
      size_t previous = 0;
      for (size_t k = 0; k < ends.size(); ++k) {
        size_t agree = ids.size();
        if (k + 1 < ends.size()) {
          std::vector<int32_t> prefix = tokenizer_.encode(std::string_view(text).substr(0, ends[k]), false);
          agree = 0;
          while (agree < prefix.size() && agree < ids.size() && prefix[agree] == ids[agree]) ++agree;
        }
        previous = std::max(previous, agree);
        token_ends.push_back(previous);
      }
    }
    size_t start = 0;
    for (size_t k = 0; k < token_ends.size(); ++k) {
      for (size_t t = start; t < token_ends[k]; ++t) {
        out.ids.push_back(ids[t]);
        out.mask.push_back(pieces[i + k].target ? 1 : 0);
      }
      start = token_ends[k];
    }
    i = j;
  }
  return out;
}

BuiltSamples SampleBuilder::build(const Record& record) const {
  BuiltSamples out;
  const int64_t seq_len = options_.seq_len;
  auto check_double_bos = [&](const Sample& s) {
    return special_.bos && s.ids.size() >= 2 && s.ids[0] == *special_.bos && s.ids[1] == *special_.bos;
  };

  if (options_.format == InputFormat::kText) {
    std::vector<int32_t> ids = tokenizer_.encode(record.text, true);
    if (special_.eos && (ids.empty() || ids.back() != *special_.eos)) ids.push_back(*special_.eos);
    Sample whole{ids, std::vector<uint8_t>(ids.size(), 1)};
    if (check_double_bos(whole)) {
      out.rejection = Rejection{RejectReason::kDoubleBos, "the text starts with the BOS token and the tokenizer adds another"};
      return out;
    }
    if (whole.ids.size() < 2) {  // one token predicts nothing
      out.rejection = Rejection{RejectReason::kNoTargets, "fewer than two tokens"};
      return out;
    }
    const size_t piece = seq_len > 0 ? static_cast<size_t>(seq_len) : whole.ids.size();
    for (size_t begin = 0; begin < whole.ids.size(); begin += piece) {
      size_t end = std::min(whole.ids.size(), begin + piece);
      if (end - begin < 2) break;  // a one-token tail predicts nothing
      out.samples.push_back(Sample{std::vector<int32_t>(whole.ids.begin() + begin, whole.ids.begin() + end),
                                   std::vector<uint8_t>(end - begin, 1)});
    }
    return out;
  }

  std::vector<Piece> pieces;
  if (options_.format == InputFormat::kChat ||
      (options_.format == InputFormat::kAlpaca && options_.chat_template)) {
    std::vector<Message> alpaca_messages;
    const std::vector<Message>* messages = &record.messages;
    if (options_.format == InputFormat::kAlpaca) {
      std::string user = record.input.empty() ? record.instruction : absl::StrCat(record.instruction, "\n\n", record.input);
      alpaca_messages = {{"user", user}, {"assistant", record.output}};
      messages = &alpaca_messages;
    }
    if (!options_.chat_template->renders_bos() && special_.adds_bos) pieces.push_back(Piece{"", *special_.bos, false});
    if (auto rejected = options_.chat_template->render(*messages, options_.train_on, special_.eos, &pieces)) {
      out.rejection = std::move(rejected);
      return out;
    }
  } else {  // alpaca with the Stanford Alpaca prompt
    const bool all = options_.train_on == TrainOn::kAll;
    if (special_.adds_bos) pieces.push_back(Piece{"", *special_.bos, all});
    std::string prompt =
        record.input.empty()
            ? absl::StrCat("Below is an instruction that describes a task. Write a response that appropriately "
                           "completes the request.\n\n### Instruction:\n", record.instruction, "\n\n### Response:\n")
            : absl::StrCat("Below is an instruction that describes a task, paired with an input that provides further "
                           "context. Write a response that appropriately completes the request.\n\n### Instruction:\n",
                           record.instruction, "\n\n### Input:\n", record.input, "\n\n### Response:\n");
    pieces.push_back(Piece{std::move(prompt), -1, all});
    pieces.push_back(Piece{record.output, -1, true});
    if (special_.eos) pieces.push_back(Piece{"", *special_.eos, true});
  }

  Sample sample = encode_pieces(pieces);
  if (check_double_bos(sample)) {
    out.rejection = Rejection{RejectReason::kDoubleBos, "the sample starts with BOS twice (template text plus tokenizer?)"};
    return out;
  }
  if (sample.num_targets() == 0) {
    out.rejection = Rejection{RejectReason::kNoTargets, "no target tokens (empty assistant content?)"};
    return out;
  }
  if (seq_len > 0 && static_cast<int64_t>(sample.ids.size()) > seq_len) {
    sample.ids.resize(seq_len);
    sample.mask.resize(seq_len);
    out.truncated = true;
    if (sample.num_targets() == 0) {
      out.rejection = Rejection{RejectReason::kNoTargets,
                                absl::StrCat("no target tokens left after truncation to seq_len ", seq_len)};
      return out;
    }
  }
  out.samples.push_back(std::move(sample));
  return out;
}

}  // namespace freehold::data
