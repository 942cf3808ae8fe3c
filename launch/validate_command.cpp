// `freehold validate CONFIG.yaml [KEY=VALUE ...]`: checks the config and its inputs and prints the plan — total
// and trainable parameters, a memory estimate, tokens per step, steps, the resolved config — training nothing.
// The base is opened without the finite check (mmap, so this is cheap even for a large model).
//
// Memory estimate (one process, bytes; b = bytes per element of train.precision, P = base parameters,
// P_a = adapter parameters, B = micro_batch_size, T = seq_len, C = hidden, I = intermediate, L = layers,
// V = vocab):
//   base weights           P · b
//   adapters + grads + AdamW (fp32 weight, grad, exp_avg, exp_avg_sq)     16 · P_a
//   activations kept for backward   L · B · T · (12 · C + 3 · I) · b      (without activation checkpointing;
//                                   with it: L · B · T · C · b + one layer's worth)
//   logits and their fp32 loss copy B · T · V · (b + 8)
// An estimate, not a bound: allocator slack and LibTorch's workspaces come on top.
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "adapters/adapter_set.h"
#include "core/dtype.h"
#include "core/error.h"
#include "launch/commands.h"
#include "launch/run_config.h"
#include "model/transformer.h"
#include "trainer/trainer.h"

namespace freehold::launch {
namespace {

std::string gib(double bytes) { return absl::StrFormat("%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0)); }

}  // namespace

int run_validate(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::printf("usage: freehold validate CONFIG.yaml [SECTION.KEY=VALUE ...]\n\n"
                "Checks the config and its inputs and prints the plan (parameters, memory, tokens, steps) and the\n"
                "resolved config. Trains nothing.\n");
    return args.empty() ? 2 : 0;
  }
  RunConfig config = load_run_config(args[0], std::vector<std::string>(args.begin() + 1, args.end()));
  std::vector<std::string> problems;
  for (const auto* sources : {&config.data.train, &config.data.eval}) {
    for (const data::DataSource& s : *sources) {
      if (!std::filesystem::is_regular_file(s.path)) problems.push_back(absl::StrCat("data: ", s.path, " does not exist"));
    }
  }
  if (!problems.empty()) throw ConfigError(problems);

  model::LoadOptions load;
  load.dtype = config.train.precision;
  load.check_finite = false;
  model::Transformer model = model::Transformer::load(config.model.path, load);
  adapters::AdapterSet adapters = adapters::AdapterSet::create(model, config.adapter, config.train.seed);
  const io::ModelConfig& mc = model.config();
  const int64_t P = model.num_parameters(), Pa = adapters.num_parameters();

  const trainer::TrainOptions& t = config.train;
  const int64_t B = t.micro_batch_size, T = config.data.seq_len;
  // Opening the data checks it (formats, checksums, ids against the tokenizer) as training would.
  std::unique_ptr<data::Tokenizer> tokenizer;
  auto source = trainer::open_batch_source(config.data, false, B, t.seed, mc.vocab_size, config.model.path, tokenizer);
  const int64_t per_epoch = source->batches_per_epoch() / t.grad_accum_steps;
  const std::string steps_text =
      t.max_steps ? absl::StrCat(*t.max_steps, " (", per_epoch, " per epoch)")
                  : absl::StrCat(*t.epochs * per_epoch, " (", *t.epochs, " epochs of ", per_epoch, ")");
  if (!config.data.eval.empty()) {
    trainer::open_batch_source(config.data, true, B, t.seed, mc.vocab_size, config.model.path, tokenizer);
  }

  const double b = static_cast<double>(core::dtype_size(t.precision));
  const double L = static_cast<double>(mc.num_hidden_layers), C = static_cast<double>(mc.hidden_size),
               I = static_cast<double>(mc.intermediate_size), V = static_cast<double>(mc.vocab_size);
  const double base_bytes = static_cast<double>(P) * b;
  const double adapter_bytes = 16.0 * static_cast<double>(Pa);
  const double act_bytes = config.model.activation_checkpointing
                               ? (L * B * T * C + B * T * (12 * C + 3 * I)) * b
                               : L * B * T * (12 * C + 3 * I) * b;
  const double logits_bytes = static_cast<double>(B * T) * V * (b + 8);

  std::printf("config       %s\n", config.config_path.c_str());
  std::printf("model        %s (%s, %lld layers, hidden %lld, vocab %lld)\n", config.model.path.c_str(),
              mc.model_type.c_str(), static_cast<long long>(mc.num_hidden_layers),
              static_cast<long long>(mc.hidden_size), static_cast<long long>(mc.vocab_size));
  std::printf("parameters   %lld total, %lld trainable (%.4f%%) in %zu adapted modules\n",
              static_cast<long long>(P + Pa), static_cast<long long>(Pa),
              100.0 * static_cast<double>(Pa) / static_cast<double>(P + Pa), adapters.entries().size());
  std::printf("memory       ~%s: base %s + adapters/grads/AdamW %s + activations %s + logits %s\n",
              gib(base_bytes + adapter_bytes + act_bytes + logits_bytes).c_str(), gib(base_bytes).c_str(),
              gib(adapter_bytes).c_str(), gib(act_bytes).c_str(), gib(logits_bytes).c_str());
  std::printf("tokens/step  %lld (%lld micro-batches of %lld x %lld tokens, world size 1)\n",
              static_cast<long long>(t.grad_accum_steps * B * T), static_cast<long long>(t.grad_accum_steps),
              static_cast<long long>(B), static_cast<long long>(T));
  std::printf("steps        %s\n", steps_text.c_str());
  std::printf("output       %s\n\nresolved config:\n%s", config.output.dir.c_str(), run_config_to_yaml(config).c_str());
  return 0;
}

}  // namespace freehold::launch
