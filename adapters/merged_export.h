// A merged model directory — base weights with a PEFT adapter merged in (adapters/merge.h) — that transformers'
// AutoModelForCausalLM.from_pretrained loads as is: `freehold export` (DESIGN.md §3) and a run's merged/ (§5).
//
// Streaming: for each tensor in the base's order (shard by shard, file offset order), a pread copy of the base
// tensor (never the mmap: RELIABILITY.md S26), merged in float32 when an adapter targets it, cast to the export
// dtype, checked finite (N6, S21) and written into its shard (io::ShardedSafetensorsWriter). Peak memory is the
// adapter plus a few copies of the largest tensor, never the model. Everything is written into a temporary
// directory beside the output and renamed into place last, so a failure or a crash never leaves a partial export
// under the output name. Tensor names are never used as paths (S19): shard names come from the writer.
//
// What the output holds:
//   - every base tensor, under its own name, in the export dtype (non-floating tensors as stored); with
//     tie_word_embeddings no lm_head.weight (transformers ties it to model.embed_tokens.weight on load, and drops it
//     on save — a base that carries one anyway gets it dropped too);
//   - model.safetensors, or model-0000K-of-0000N.safetensors + model.safetensors.index.json past max_shard_bytes;
//   - config.json with `dtype` (and `torch_dtype`, where the source has it) naming the export dtype, everything
//     else as in the source (key order kept; byte for byte when the dtype does not change);
//   - the tokenizer and generation files the base has (kSideFiles), copied byte for byte.
// An adapter on the LM head is refused when the adapter is loaded (adapters/targeting.h: freehold adapts the
// decoder's projections only), which also keeps tied embeddings tied.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"

namespace freehold::adapters {

// transformers' save_pretrained default max_shard_size, "5GB".
inline constexpr uint64_t kDefaultMaxShardBytes = 5'000'000'000;

// Files copied from the base directory when present: what AutoTokenizer.save_pretrained and
// GenerationConfig.save_pretrained write for these families.
inline constexpr const char* kSideFiles[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "vocab.json",     "merges.txt",            "chat_template.jinja",     "chat_template.json", "generation_config.json",
};

struct MergedExportOptions {
  std::string base_dir;     // Hugging Face model directory
  std::string adapter_dir;  // PEFT adapter directory
  std::string out_dir;      // must not exist unless overwrite
  std::optional<core::DType> dtype;  // F32, BF16 or F16; nullopt: the base's stored dtype
  uint64_t max_shard_bytes = kDefaultMaxShardBytes;
  bool overwrite = false;   // replace an existing out_dir (never one that is, or holds, the base or the adapter)
  bool verify = false;      // verify_merged_model on the temporary directory before it is renamed into place
  // TESTING ONLY: these modules are written with their base weight, unmerged — an export that is wrong on purpose,
  // for tests that show verify catching it. Each must be a module the adapter targets.
  std::vector<std::string> skip_merge_for_testing;
};

struct MergedVerifyResult {
  double max_abs_diff = 0;   // max |merged − (base + adapter)| over every logit of the probe batch
  double max_abs_logit = 0;  // of base + adapter
  double rounding_effect = 0;  // max |logit change| of base + adapter when its weights are dithered (see below)
  double tolerance = 0;      // max(kVerifyFloor · max(1, max_abs_logit), kVerifyRoundingFactor · rounding_effect)
  int64_t sequences = 0;
  int64_t tokens = 0;
};

struct MergedExportSummary {
  core::DType dtype = core::DType::kF32;  // the export dtype of the floating-point tensors
  size_t tensors = 0;                     // written
  size_t merged = 0;                      // of which had an adapter merged in
  size_t shards = 0;
  uint64_t bytes = 0;                     // tensor data
  std::vector<std::string> side_files;    // copied
  std::optional<MergedVerifyResult> verify;
};

// Writes the merged model (see above). Throws core::UsageError for bad options (out_dir exists, out_dir is the base,
// a dtype that is not F32/BF16/F16), core::FormatError for a base or adapter that does not fit (S24: tensor name,
// expected and found shapes) or a non-finite result (N6: the tensor), core::Error when verification fails.
MergedExportSummary export_merged_model(const MergedExportOptions& options);

// --verify compares the logits of `merged_dir` with those of `base_dir` + `adapter_dir` on a fixed probe batch
// (three sequences of deterministic token ids, lengths 5, 17 and 64 capped at max_position_embeddings), all in
// float32, one model in memory at a time (peak: one float32 copy of the model, plus its logits).
//
// The tolerance is by dtype, measured on the model itself. A correct export differs from base + adapter only by the
// rounding of its weights to `dtype` (and by summation order). How far that rounding moves the logits depends on the
// model (scale of the weights, depth, conditioning) far more than on the dtype alone — a fixed bf16 bound of
// 1.6e-2 · max |logit| was exceeded by a correct export of the unit tests' 2-layer model — so verify measures it: it
// perturbs the weights the export rounds (every adapted projection; when `dtype` is narrower than the base's, also
// every other projection, the embeddings and the layers' norm weights) by independent uniform noise of ±½ of a
// `dtype` rounding step, the statistics of round-to-nearest, and takes the
// largest logit change as `rounding_effect`. The export passes when
//     max |merged − (base + adapter)| ≤ max(kVerifyFloor · max(1, max |logit|), kVerifyRoundingFactor · rounding_effect)
// kVerifyFloor covers float32 summation order (the conformance tests measure ~1e-5 relative); the factor covers that
// the true rounding and the noise are two different draws of the same distribution. What this catches: anything that
// moves the logits clearly more than rounding to `dtype` does — a module merged wrongly or not at all, a wrong scale, a
// layer mix-up — when the adapter's effect is that large; in bf16 on a deep model, a small adapter's effect on one
// module can be below rounding noise, and only an fp32 export can be checked that finely.
inline constexpr double kVerifyFloor = 1e-4;
inline constexpr double kVerifyRoundingFactor = 4.0;

// Throws core::Error with the max difference, where it occurs and the tolerance when the difference exceeds the
// tolerance; returns the measurement otherwise. `dtype` is the merged weights' dtype.
MergedVerifyResult verify_merged_model(const std::string& base_dir, const std::string& adapter_dir,
                                       const std::string& merged_dir, core::DType dtype);

// config.json text with the stored dtype set to `dtype`: `dtype` set (added when missing), `torch_dtype` set
// where present; nothing else changes but what re-serialising JSON has to (keys keep their order; non-ASCII is
// escaped when the source was pure ASCII, as Python's json.dumps does). `file` is for messages.
std::string config_json_with_dtype(std::string_view text, core::DType dtype, const std::string& file);

// "float32", "bfloat16", "float16": the names config.json uses.
std::string_view config_dtype_name(core::DType dtype);

}  // namespace freehold::adapters
