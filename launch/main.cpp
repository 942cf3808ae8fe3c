// The `freehold` binary: picks the subcommand, runs it, and is the only place that catches errors — it logs them
// with the rank and turns them into the exit codes of DESIGN.md §3.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/log.h"
#include "core/stop_signals.h"
#include "launch/command_line.h"
#include "launch/commands.h"

namespace freehold::launch {

const std::vector<Command>& all_commands() {
  static const std::vector<Command> commands = {
      {"train", "fine-tune a model with LoRA from a run config (CONFIG.yaml [KEY=VALUE ...])", run_train},
      {"validate", "check a run config and its inputs and print the plan; train nothing", run_validate},
      {"score", "log-probabilities (and logits) of token sequences under a model", run_score},
      {"inspect", "describe a safetensors file or a model directory", run_inspect},
      {"tokenize", "token ids of text lines with a tokenizer.json (or --decode ids back to text)", run_tokenize},
      {"prepare", "JSONL or text files → a tokenized HDF5 dataset for training", run_prepare},
      {"adapter", "adapter init: attach, initialise and save a PEFT adapter", run_adapter},
      {"export", "merge a PEFT adapter into its base model, as a directory transformers loads", run_export},
      {"generate", "continue a prompt with a model (and adapter): greedy or top-p sampling, streamed", run_generate},
      {"plot", "draw a run's loss curve (train loss, eval loss, learning rate) from metrics.jsonl as SVG", run_plot},
  };
  return commands;
}

namespace {

void print_usage() {
  std::printf("freehold: LoRA fine-tuning of Hugging Face causal LMs, on your own machines.\n\nusage: freehold COMMAND [ARGS]\n\ncommands:\n");
  for (const Command& c : all_commands()) std::printf("  %-10s %s\n", c.name.c_str(), c.summary.c_str());
  std::printf("\n`freehold COMMAND --help` lists a command's options and their defaults. Run configs: every key is in\n"
              "configs/README.md; a first run step by step: docs/quickstart.md.\n"
              "Exit codes: 0 done, 2 usage or config error, 3 bad input data, 4 a peer rank lost, 75 stopped by a\n"
              "signal after a checkpoint (requeue), 1 anything else.\n");
}

int run(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  if (std::strcmp(argv[1], "--version") == 0) {
    std::printf("freehold %s\n", FREEHOLD_VERSION);
    return 0;
  }
  std::string name = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  std::vector<std::string> names;
  for (const Command& c : all_commands()) {
    if (c.name == name) return c.run(args);
    names.push_back(c.name);
  }
  std::string hint;
  if (auto close = closest_match(name, names)) hint = absl::StrCat(" (did you mean `", *close, "`?)");
  throw core::UsageError(absl::StrCat("unknown command \"", name, "\"", hint, "; run `freehold --help`"));
}

}  // namespace
}  // namespace freehold::launch

int main(int argc, char** argv) {
  using freehold::core::ExitCode;
  try {
    // Before any thread starts (MPI, OpenMP, torch): SIGUSR1/SIGTERM must never interrupt a computing thread.
    freehold::core::route_stop_signals_to_own_thread();
    return freehold::launch::run(argc, argv);
  } catch (const freehold::core::Error& e) {
    freehold::core::log_error(e.what());
    return static_cast<int>(e.exit_code());
  } catch (const c10::Error& e) {
    freehold::core::log_error("LibTorch: ", e.what_without_backtrace());
    return static_cast<int>(ExitCode::kFailure);
  } catch (const std::exception& e) {
    freehold::core::log_error(e.what());
    return static_cast<int>(ExitCode::kFailure);
  }
}
