// `freehold export`: a base model with a PEFT adapter merged in, as a directory transformers loads as is
// (adapters/merged_export.h says what it holds and how it streams).
//
//   freehold export --base MODEL_DIR --adapter ADAPTER_DIR --out OUT_DIR [--dtype bf16|fp16|fp32]
//        [--max-shard-size SIZE] [--verify] [--overwrite] [--test-skip-merge MODULE...]
//
// --test-skip-merge is for testing only: the named modules are written unmerged, so a test can show that --verify
// catches a wrong export. A real export never does this.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "adapters/merged_export.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "launch/command_line.h"
#include "launch/commands.h"

namespace freehold::launch {
namespace {

const std::vector<FlagSpec>& export_flags() {
  static const std::vector<FlagSpec> flags = {
      {"base", "DIR", "Hugging Face model directory (config.json + safetensors)", true},
      {"adapter", "DIR", "PEFT LoRA/DoRA adapter directory (adapter_config.json + adapter_model.safetensors)", true},
      {"out", "DIR", "the merged model directory to create (must not exist)", true},
      {"dtype", "bf16|fp16|fp32", "dtype of the exported weights (default: the base's stored dtype)"},
      {"max-shard-size", "SIZE", "split into shards with an index past this size, e.g. 2GB, 500MiB (default 5GB)"},
      {"verify", "", "compare the merged model's logits with base + adapter on a probe batch before committing"},
      {"overwrite", "", "replace --out if it exists"},
      {"test-skip-merge", "MODULE...", "TESTING ONLY: write these modules unmerged (a wrong export for --verify)",
       false, true},
      {"help", "", "show this help"},
  };
  return flags;
}

}  // namespace

int run_export(const std::vector<std::string>& args) {
  ParsedArgs flags = parse_command_line("export", export_flags(), args, 0, 0);
  if (flags.has("help")) {
    std::printf("usage: freehold export --base DIR --adapter DIR --out DIR [options]\n\n%s",
                describe_flags(export_flags()).c_str());
    return 0;
  }
  adapters::MergedExportOptions options;
  options.base_dir = *flags.get("base");
  options.adapter_dir = *flags.get("adapter");
  options.out_dir = *flags.get("out");
  if (auto name = flags.get("dtype")) {
    options.dtype = core::parse_precision(*name);
    if (!options.dtype) throw core::UsageError(absl::StrCat("export: --dtype is \"", *name, "\"; expected bf16, fp16 or fp32"));
  }
  if (auto size = flags.get("max-shard-size")) {
    try {
      options.max_shard_bytes = io::parse_size(*size);
    } catch (const core::UsageError& e) {
      throw core::UsageError(absl::StrCat("export: --max-shard-size: ", e.what()));
    }
  }
  options.verify = flags.has("verify");
  options.overwrite = flags.has("overwrite");
  options.skip_merge_for_testing = flags.get_all("test-skip-merge");

  adapters::MergedExportSummary s = adapters::export_merged_model(options);
  core::log_info(absl::StrFormat("exported %d tensors (%d merged), %.1f MB of %s in %d shard(s)%s → %s", s.tensors,
                                 s.merged, static_cast<double>(s.bytes) / 1e6, std::string(core::dtype_name(s.dtype)),
                                 s.shards, s.verify ? ", verified" : "", options.out_dir));
  return 0;
}

}  // namespace freehold::launch
