// `freehold score`: per-token log-probabilities of token sequences under a model, and optionally the full logits.
// With --adapter, the PEFT adapter is applied (in eval mode: no dropout), as PeftModel.from_pretrained would.
// Input lines: {"tokens":[...]} (or {"text":"..."} once a tokenizer is given). Output line k, for input record k:
// {"n_tokens":N,"nll":x,"logprobs":[...]} with logprobs[i] = log p(tokens[i+1] | tokens[0..i]) and nll their
// negated mean (null when N == 1). --logits-out writes one float32 tensor "logits.<k>" of shape [N, V] per record.
#include <ATen/core/grad_mode.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/tensor.h>

#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_set.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "launch/command_line.h"
#include "launch/commands.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"

namespace freehold::launch {
namespace {

const std::vector<FlagSpec>& score_flags() {
  static const std::vector<FlagSpec> flags = {
      {"model", "DIR", "Hugging Face model directory (config.json + safetensors)", true},
      {"adapter", "DIR", "apply this PEFT LoRA/DoRA adapter (adapter_config.json + adapter_model.safetensors)"},
      {"input", "FILE.jsonl", "one {\"tokens\":[...]} per line", true},
      {"out", "FILE.jsonl", "one {\"n_tokens\",\"nll\",\"logprobs\"} per input line", true},
      {"logits-out", "FILE.safetensors", "also write float32 logits.<k> [N, V] for record k"},
      {"dtype", "fp32|bf16|fp16", "compute dtype (default fp32)"},
      {"help", "", "show this help"},
  };
  return flags;
}

constexpr uint64_t kMaxLineBytes = 64u << 20;

// Reads {"tokens":[...]} records, checking every id against the vocabulary.
std::vector<std::vector<int64_t>> read_token_records(const std::string& path, int64_t vocab_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::UsageError(absl::StrCat("score: cannot open --input ", path));
  std::vector<std::vector<int64_t>> records;
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    const std::string where = absl::StrCat(path, ":", line_number);
    if (line.size() > kMaxLineBytes) {
      throw core::DataError(absl::StrCat(where, ": line is ", line.size(), " bytes; at most ", kMaxLineBytes));
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_number == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // UTF-8 BOM
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw core::DataError(absl::StrCat(where, ": not valid JSON (", e.what(), ")"));
    }
    if (!record.is_object()) throw core::DataError(absl::StrCat(where, ": expected a JSON object"));
    if (record.contains("text") && !record.contains("tokens")) {
      throw core::DataError(absl::StrCat(where, ": {\"text\": ...} needs a tokenizer, which `score` does not load "
                                         "yet; give token ids as {\"tokens\": [...]} (`freehold tokenize` or the "
                                         "tokenizers library make them)"));
    }
    auto tokens = record.find("tokens");
    if (tokens == record.end() || !tokens->is_array() || tokens->empty()) {
      throw core::DataError(absl::StrCat(where, ": expected {\"tokens\": [id, ...]} with at least one id"));
    }
    std::vector<int64_t> ids;
    ids.reserve(tokens->size());
    for (const auto& id : *tokens) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab_size) {
        throw core::DataError(absl::StrCat(where, ": token ", id.dump(), " is not an integer id in [0, ", vocab_size,
                                           ") (the model's vocab_size)"));
      }
      ids.push_back(id.get<int64_t>());
    }
    records.push_back(std::move(ids));
  }
  if (records.empty()) throw core::DataError(absl::StrCat(path, ": no records"));
  return records;
}

}  // namespace

int run_score(const std::vector<std::string>& args) {
  ParsedArgs flags = parse_command_line("score", score_flags(), args, 0, 0);
  if (flags.has("help")) {
    std::printf("usage: freehold score --model DIR [--adapter DIR] --input FILE.jsonl --out FILE.jsonl [options]\n\n%s",
                describe_flags(score_flags()).c_str());
    return 0;
  }
  std::string dtype_name = flags.get_or("dtype", "fp32");
  auto dtype = core::parse_precision(dtype_name);
  if (!dtype) throw core::UsageError(absl::StrCat("score: --dtype is \"", dtype_name, "\"; expected fp32, bf16 or fp16"));

  at::NoGradGuard no_grad;
  model::LoadOptions options;
  options.dtype = dtype;
  model::Transformer model = model::Transformer::load(*flags.get("model"), options);
  std::optional<adapters::AdapterSet> adapter;
  if (flags.has("adapter")) adapter = adapters::AdapterSet::load(model, *flags.get("adapter"));  // eval mode
  auto records = read_token_records(*flags.get("input"), model.config().vocab_size);

  std::vector<io::NamedTensor> logits_out;
  std::string output;
  for (size_t k = 0; k < records.size(); ++k) {
    const std::vector<int64_t>& ids = records[k];
    const int64_t N = static_cast<int64_t>(ids.size());
    at::Tensor input_ids = at::tensor(ids, at::kLong).unsqueeze(0);  // (1, N)
    at::Tensor logits = model.forward({input_ids, {}, {}})[0];       // (N, V)
    at::Tensor logits32 = logits.to(at::kFloat);
    at::Tensor logprobs_all = at::log_softmax(logits32, -1);
    nlohmann::ordered_json line;  // keys in the documented order
    line["n_tokens"] = N;
    std::vector<double> logprobs;
    double sum = 0;
    if (N > 1) {
      at::Tensor targets = input_ids[0].narrow(0, 1, N - 1).unsqueeze(1);  // (N-1, 1)
      at::Tensor picked = logprobs_all.narrow(0, 0, N - 1).gather(1, targets).squeeze(1).to(at::kDouble).contiguous();
      const double* p = picked.data_ptr<double>();
      for (int64_t i = 0; i < N - 1; ++i) {
        logprobs.push_back(p[i]);
        sum += p[i];
      }
      line["nll"] = -sum / static_cast<double>(N - 1);
    } else {
      line["nll"] = nullptr;
    }
    line["logprobs"] = logprobs;
    absl::StrAppend(&output, line.dump(), "\n");
    if (flags.has("logits-out")) logits_out.push_back({absl::StrCat("logits.", k), logits32.contiguous()});
  }
  core::write_file_atomic(*flags.get("out"), output);
  if (flags.has("logits-out")) io::save_safetensors(*flags.get("logits-out"), logits_out);
  core::log_info("scored ", records.size(), " record(s) with ", model.config().architecture_name,
                 adapter ? absl::StrCat(" + adapter ", *flags.get("adapter")) : std::string(), " (",
                 std::string(core::precision_name(*dtype)), ") → ", *flags.get("out"));
  return 0;
}

}  // namespace freehold::launch
