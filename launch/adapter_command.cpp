// `freehold adapter init`: attach fresh adapters to a model, initialise them and save them as a PEFT adapter
// directory — the adapter a training run starts from, written without training. With pissa/olora it can also
// write the residual base model those inits leave (the base the adapter belongs on).
//
//   freehold adapter init --model DIR --out DIR [--r N] [--alpha A] [--dropout P] [--target-modules NAME...]
//        [--exclude-modules NAME...] [--layers I...] [--rank-pattern KEY=R...] [--alpha-pattern KEY=A...]
//        [--init default|gaussian|pissa|pissa_niter_N|olora] [--use-dora] [--use-rslora] [--seed S]
//        [--residual-out DIR] [--randomize-b STD]
//
// --randomize-b is for testing only: it overwrites every lora_B with N(0, STD²) noise after the init, so an
// adapter changes the model's output (a default-initialised one does not, B being zero) and conformance tests can
// compare non-trivial logits. A run never does this.
#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/empty.h>

#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <limits>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "adapters/adapter_set.h"
#include "adapters/lora_options.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "io/weight_files.h"
#include "launch/command_line.h"
#include "launch/commands.h"
#include "model/transformer.h"

namespace freehold::launch {
namespace {

const std::vector<FlagSpec>& init_flags() {
  static const std::vector<FlagSpec> flags = {
      {"model", "DIR", "Hugging Face model directory (config.json + safetensors)", true},
      {"out", "DIR", "the PEFT adapter directory to write (adapter_config.json + adapter_model.safetensors)", true},
      {"r", "N", "rank (default 16)"},
      {"alpha", "A", "LoRA alpha (default 32)"},
      {"dropout", "P", "LoRA dropout recorded in the config (default 0.05)"},
      {"target-modules", "NAME...", "module names or suffixes, all-linear, or re:<regex> (default: the 7 projections)",
       false, true},
      {"exclude-modules", "NAME...", "module names or suffixes, or re:<regex>, to leave alone", false, true},
      {"layers", "I...", "only these layer indices", false, true},
      {"rank-pattern", "KEY=R...", "rank for modules whose name ends matching the regex KEY", false, true},
      {"alpha-pattern", "KEY=A...", "alpha for modules whose name ends matching the regex KEY", false, true},
      {"init", "METHOD", "default | gaussian | pissa | pissa_niter_N | olora (default: default)"},
      {"use-dora", "", "DoRA (a trainable magnitude per output row)"},
      {"use-rslora", "", "scale alpha/sqrt(r) instead of alpha/r"},
      {"seed", "S", "seed of the init (default 1234)"},
      {"residual-out", "DIR", "pissa/olora: also write the residual base model (config.json + model.safetensors)"},
      {"randomize-b", "STD", "TESTING ONLY: overwrite every lora_B with N(0, STD^2) so the adapter is not a no-op"},
      {"help", "", "show this help"},
  };
  return flags;
}

template <typename T>
std::vector<std::pair<std::string, T>> parse_patterns(const ParsedArgs& flags, const std::string& name) {
  std::vector<std::pair<std::string, T>> out;
  for (const std::string& item : flags.get_all(name)) {
    size_t eq = item.rfind('=');
    T value{};
    bool ok = eq != std::string::npos && eq > 0;
    if (ok) {
      if constexpr (std::is_same_v<T, int64_t>) {
        ok = absl::SimpleAtoi(item.substr(eq + 1), &value);
      } else {
        ok = absl::SimpleAtod(item.substr(eq + 1), &value);
      }
    }
    if (!ok) throw core::UsageError(absl::StrCat("adapter init: --", name, " \"", item, "\"; expected KEY=NUMBER"));
    out.emplace_back(item.substr(0, eq), value);
  }
  return out;
}

// The base model with the residual weights in place of the originals: config.json as is, one model.safetensors.
void write_residual_model(const std::string& model_dir, const std::string& out_dir,
                          const std::vector<io::NamedTensor>& residuals) {
  io::WeightFiles files = io::WeightFiles::open_model_dir(model_dir);
  std::map<std::string, at::Tensor> replaced;
  for (const io::NamedTensor& t : residuals) replaced.emplace(t.name, t.tensor);
  std::vector<io::NamedTensor> tensors;
  for (const std::string& name : files.names()) {
    auto it = replaced.find(name);
    tensors.push_back({name, it != replaced.end() ? it->second : files.tensor(name)});
  }
  core::create_directories(out_dir);
  io::save_safetensors(absl::StrCat(out_dir, "/", io::kSingleWeightsFile), tensors, {{"format", "pt"}});
  core::write_file_atomic(absl::StrCat(out_dir, "/config.json"), core::read_file(absl::StrCat(model_dir, "/config.json")));
}

int run_adapter_init(const std::vector<std::string>& args) {
  ParsedArgs flags = parse_command_line("adapter init", init_flags(), args, 0, 0);
  if (flags.has("help")) {
    std::printf("usage: freehold adapter init --model DIR --out DIR [options]\n\n%s", describe_flags(init_flags()).c_str());
    return 0;
  }
  adapters::LoraOptions options;
  options.r = flags.get_int("r", options.r, 1, int64_t{1} << 20);
  options.alpha = flags.get_double("alpha", options.alpha);
  options.dropout = flags.get_double("dropout", options.dropout);
  if (flags.has("target-modules")) options.target_modules = flags.get_all("target-modules");
  options.exclude_modules = flags.get_all("exclude-modules");
  for (const std::string& layer : flags.get_all("layers")) {
    int64_t index = 0;
    if (!absl::SimpleAtoi(layer, &index)) throw core::UsageError(absl::StrCat("adapter init: --layers \"", layer, "\" is not an integer"));
    options.layers.push_back(index);
  }
  options.rank_pattern = parse_patterns<int64_t>(flags, "rank-pattern");
  options.alpha_pattern = parse_patterns<double>(flags, "alpha-pattern");
  options.init = flags.get_or("init", options.init);
  options.use_dora = flags.has("use-dora");
  options.use_rslora = flags.has("use-rslora");
  if (std::vector<std::string> problems = adapters::validate_lora_options(options); !problems.empty()) {
    throw core::UsageError(absl::StrJoin(problems, "\n"));
  }
  const int64_t seed = flags.get_int("seed", 1234, 0, std::numeric_limits<int64_t>::max());

  at::NoGradGuard no_grad;
  const std::string model_dir = *flags.get("model");
  model::Transformer model = model::Transformer::load(model_dir);
  adapters::AdapterSet set = adapters::AdapterSet::create(model, options, static_cast<uint64_t>(seed));
  if (flags.has("randomize-b")) {
    const double std = flags.get_double("randomize-b", 0.0);
    if (std <= 0) throw core::UsageError("adapter init: --randomize-b needs a positive standard deviation");
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed) + 1);
    for (const auto& e : set.entries()) {
      at::Tensor noise = at::empty(e.adapter->lora_B().sizes(), at::kFloat).normal_(0.0, std, generator);
      e.adapter->lora_B().copy_(noise);
    }
    core::log_warning("adapter init: --randomize-b (testing only): every lora_B is N(0, ", std, "^2) noise");
  }
  set.save(*flags.get("out"));
  core::log_info("adapter init: wrote the PEFT adapter ", *flags.get("out"));
  std::vector<io::NamedTensor> residuals = set.residual_base_weights();
  if (flags.has("residual-out")) {
    if (residuals.empty()) {
      throw core::UsageError(absl::StrCat("adapter init: --residual-out needs an init that changes the base (pissa, "
                                          "olora); --init is ", options.init));
    }
    write_residual_model(model_dir, *flags.get("residual-out"), residuals);
    core::log_info("adapter init: wrote the residual base model ", *flags.get("residual-out"));
  } else if (!residuals.empty()) {
    core::log_warning("adapter init: ", options.init, " changed ", residuals.size(), " base weights; the adapter "
                      "belongs on that residual base (write it with --residual-out DIR)");
  }
  return 0;
}

}  // namespace

int run_adapter(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::printf("usage: freehold adapter init --model DIR --out DIR [options]\n\n"
                "  init   attach, initialise and save a PEFT adapter (see `freehold adapter init --help`)\n");
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "init") return run_adapter_init({args.begin() + 1, args.end()});
  throw core::UsageError(absl::StrCat("adapter: unknown subcommand \"", args[0], "\"; expected init"));
}

}  // namespace freehold::launch
