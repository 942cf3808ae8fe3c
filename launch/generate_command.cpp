// `freehold generate`: continues a prompt with a model (a base, a base + PEFT adapter, or a merged export), with a
// KV cache, greedily (--temperature 0, the default) or by temperature / top-p sampling from --seed. The text is
// streamed to stdout as tokens arrive; a piece that ends inside a UTF-8 character (byte-level or byte-fallback
// tokens) is held back until the character is complete. Stops at an EOS id (generation_config.json's
// eos_token_id, else config.json's) or after --max-new-tokens. --ids-out writes the ids as JSON.
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "adapters/adapter_set.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/file.h"
#include "core/json_depth.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "launch/command_line.h"
#include "launch/commands.h"
#include "launch/text_streamer.h"
#include "model/generation.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"

namespace freehold::launch {
namespace {
namespace fs = std::filesystem;

const std::vector<FlagSpec>& generate_flags() {
  static const std::vector<FlagSpec> flags = {
      {"model", "DIR", "Hugging Face model directory (config.json + safetensors), or a merged export", true},
      {"adapter", "DIR", "apply this PEFT LoRA/DoRA adapter (default: none)"},
      {"prompt", "TEXT", "the text to continue (encoded with the tokenizer's BOS/EOS template)", true},
      {"tokenizer", "FILE", "tokenizer.json (default: DIR/tokenizer.json of --model)"},
      {"max-new-tokens", "N", "generate at most N tokens (default 128)"},
      {"temperature", "T", "0: greedy; > 0: sample from softmax(logits / T) (default 0)"},
      {"top-p", "P", "sample only from the most likely tokens whose probability adds up to P, in (0, 1] (default 1)"},
      {"seed", "S", "seed of the sampling generator; the same seed gives the same text (default 0)"},
      {"dtype", "fp32|bf16|fp16", "compute dtype (default fp32)"},
      {"ids-out", "FILE.json", "also write {\"prompt_ids\":[...],\"ids\":[...]} (the generated ids) to FILE"},
      {"help", "", "show this help"},
  };
  return flags;
}

constexpr uint64_t kMaxConfigBytes = 16u << 20;
constexpr int kMaxJsonDepth = 64;  // generation_config.json is flat; nesting this deep is not one

// The EOS ids transformers' generate stops at: generation_config.json's eos_token_id (an id or a list) when the
// file has one, else config.json's.
std::vector<int64_t> eos_token_ids(const std::string& model_dir, const model::Transformer& model) {
  const fs::path path = fs::path(model_dir) / "generation_config.json";
  if (fs::exists(path)) {
    nlohmann::json config;
    const std::string text = core::read_file(path.string(), kMaxConfigBytes);
    if (core::json_depth(text) > kMaxJsonDepth) {
      throw core::FormatError(absl::StrCat(path.string(), ": JSON nested deeper than ", kMaxJsonDepth, " levels"));
    }
    try {
      config = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw core::FormatError(absl::StrCat(path.string(), ": not valid JSON (", e.what(), ")"));
    }
    auto eos = config.is_object() ? config.find("eos_token_id") : config.end();
    if (config.is_object() && eos != config.end() && !eos->is_null()) {
      std::vector<int64_t> ids;
      for (const auto& id : eos->is_array() ? *eos : nlohmann::json::array({*eos})) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0) {
          throw core::FormatError(absl::StrCat(path.string(), ": eos_token_id ", eos->dump(),
                                               "; expected a non-negative integer or a list of them"));
        }
        ids.push_back(id.get<int64_t>());
      }
      return ids;
    }
  }
  return model.config().eos_token_ids;
}

}  // namespace

int run_generate(const std::vector<std::string>& args) {
  ParsedArgs flags = parse_command_line("generate", generate_flags(), args, 0, 0);
  if (flags.has("help")) {
    std::printf("usage: freehold generate --model DIR [--adapter DIR] --prompt TEXT [options]\n\n%s",
                describe_flags(generate_flags()).c_str());
    return 0;
  }
  // Every usage problem before anything is loaded.
  const std::string model_dir = *flags.get("model");
  if (!fs::is_directory(model_dir)) {
    throw core::UsageError(absl::StrCat("generate: --model ", model_dir, " is not a directory; expected a Hugging "
                                        "Face model directory (config.json + safetensors)"));
  }
  if (flags.has("adapter") && !fs::is_directory(*flags.get("adapter"))) {
    throw core::UsageError(absl::StrCat("generate: --adapter ", *flags.get("adapter"), " is not a directory; expected "
                                        "a PEFT adapter directory (adapter_config.json + adapter_model.safetensors)"));
  }
  const std::string prompt = *flags.get("prompt");
  if (prompt.empty()) throw core::UsageError("generate: --prompt is empty; give the text to continue");
  model::GenerationOptions options;
  options.max_new_tokens = flags.get_int("max-new-tokens", 128, 1, int64_t{1} << 24);
  options.sampling.temperature = flags.get_double("temperature", 0.0);
  if (options.sampling.temperature < 0) {
    throw core::UsageError(absl::StrCat("generate: --temperature is ", *flags.get("temperature"),
                                        "; expected 0 (greedy) or a positive number"));
  }
  options.sampling.top_p = flags.get_double("top-p", 1.0);
  if (!(options.sampling.top_p > 0 && options.sampling.top_p <= 1)) {
    throw core::UsageError(absl::StrCat("generate: --top-p is ", *flags.get("top-p"), "; expected a number in (0, 1]"));
  }
  if (flags.has("top-p") && options.sampling.temperature == 0) {
    core::log_warning("generate: --top-p has no effect with --temperature 0 (greedy)");
  }
  options.seed = static_cast<uint64_t>(flags.get_int("seed", 0, 0, std::numeric_limits<int64_t>::max()));
  const std::string dtype_name = flags.get_or("dtype", "fp32");
  auto dtype = core::parse_precision(dtype_name);
  if (!dtype) throw core::UsageError(absl::StrCat("generate: --dtype is \"", dtype_name, "\"; expected fp32, bf16 or fp16"));
  const std::string tokenizer_path = flags.get_or("tokenizer", (fs::path(model_dir) / "tokenizer.json").string());
  if (!fs::is_regular_file(tokenizer_path)) {
    throw core::UsageError(absl::StrCat("generate: tokenizer ", tokenizer_path, " does not exist; pass --tokenizer "
                                        "with the model's tokenizer.json"));
  }

  at::NoGradGuard no_grad;
  data::Tokenizer tokenizer = data::Tokenizer::load(tokenizer_path);
  model::LoadOptions load;
  load.dtype = dtype;
  model::Transformer model = model::Transformer::load(model_dir, load);
  std::optional<adapters::AdapterSet> adapter;
  if (flags.has("adapter")) adapter = adapters::AdapterSet::load(model, *flags.get("adapter"));  // eval: no dropout
  options.eos_token_ids = eos_token_ids(model_dir, model);

  std::vector<int64_t> prompt_ids;
  for (int32_t id : tokenizer.encode(prompt)) {
    if (id >= model.config().vocab_size) {
      throw core::UsageError(absl::StrCat("generate: the prompt encodes to id ", id, " but the model has vocab_size ",
                                          model.config().vocab_size, "; is ", tokenizer_path, " this model's tokenizer?"));
    }
    prompt_ids.push_back(id);
  }
  if (prompt_ids.empty()) {
    throw core::UsageError(absl::StrCat("generate: --prompt \"", prompt, "\" encodes to no tokens"));
  }

  TextStreamer streamer(tokenizer);
  const auto start = std::chrono::steady_clock::now();
  std::vector<int64_t> ids = model::generate(model, prompt_ids, options, [&](int64_t id) { streamer.add(id); });
  streamer.finish();
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (streamer.unknown_ids() > 0) {
    core::log_warning("generate: ", streamer.unknown_ids(), " generated id(s) are not in the tokenizer's vocabulary (",
                      tokenizer.id_limit(), " ids) and were left out of the text");
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (flags.has("ids-out")) {
    nlohmann::ordered_json record;
    record["prompt_ids"] = prompt_ids;
    record["ids"] = ids;
    core::write_file_atomic(*flags.get("ids-out"), record.dump() + "\n");
  }
  const bool stopped_at_eos = !ids.empty() && static_cast<int64_t>(ids.size()) <= options.max_new_tokens &&
                              std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), ids.back()) !=
                                  options.eos_token_ids.end();
  core::log_info("generated ", ids.size(), " token(s) after ", prompt_ids.size(), " prompt token(s) in ",
                 absl::StrFormat("%.2f s (%.1f tokens/s)", seconds, seconds > 0 ? ids.size() / seconds : 0.0),
                 stopped_at_eos ? ", stopped at EOS" : "", adapter ? absl::StrCat(", adapter ", *flags.get("adapter")) : "");
  return 0;
}

}  // namespace freehold::launch
