// `freehold prepare`: JSONL or text files → a prepared HDF5 dataset (DESIGN.md §3, §5). See data/prepare.h.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "data/prepare.h"
#include "launch/command_line.h"
#include "launch/commands.h"

namespace freehold::launch {
namespace {

const std::vector<FlagSpec>& prepare_flags() {
  static const std::vector<FlagSpec> flags = {
      {"tokenizer", "PATH", "tokenizer.json (or a directory holding one)", true},
      {"input", "FILE...", "JSONL (.jsonl) or plain text files, read in order", true, true},
      {"out", "FILE.h5", "the prepared dataset to write", true},
      {"format", "text|alpaca|chat", "record format (default: from the first record's keys)"},
      {"template", "NAME", "chat template: llama3, chatml (qwen) or mistral (default: from the tokenizer)"},
      {"train-on", "WHAT", "assistant (default), all or last_assistant"},
      {"seq-len", "N", "cut samples to N tokens (text: split into N-token pieces); default: no limit"},
      {"max-bad-fraction", "F", "stop with exit code 3 when more than this fraction of records is bad (default 0.01)"},
      {"threads", "N", "tokenizer threads (default: every core)"},
      {"force", "", "rebuild even when the output was already made from these inputs"},
      {"help", "", "show this help"},
  };
  return flags;
}

}  // namespace

int run_prepare(const std::vector<std::string>& args) {
  ParsedArgs flags = parse_command_line("prepare", prepare_flags(), args, 0, 0);
  if (flags.has("help")) {
    std::printf("usage: freehold prepare --tokenizer PATH --input FILE... --out FILE.h5 [options]\n\n%s",
                describe_flags(prepare_flags()).c_str());
    return 0;
  }
  data::PrepareOptions options;
  options.tokenizer_path = *flags.get("tokenizer");
  options.inputs = flags.get_all("input");
  options.out = *flags.get("out");
  options.format = flags.get("format");
  options.template_name = flags.get("template");
  options.train_on = flags.get_or("train-on", "assistant");
  options.seq_len = flags.get_int("seq-len", 0, 0, int64_t{1} << 30);
  options.max_bad_fraction = flags.get_double("max-bad-fraction", 0.01);
  options.threads = static_cast<int>(flags.get_int("threads", 0, 0, 4096));
  options.force = flags.has("force");
  options.progress = true;
  data::prepare_dataset(options);
  return 0;
}

}  // namespace freehold::launch
