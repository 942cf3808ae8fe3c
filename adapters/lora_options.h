// The `adapter:` section of a run config (DESIGN.md §4) as a plain struct (STYLE.md habit 3). launch/ fills it from
// YAML or flags and reports every problem validate_lora_options finds at once; adapters/ only reads it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/peft_adapter.h"

namespace freehold::adapters {

struct LoraOptions {
  std::string type = "lora";  // "lora" only; DoRA is use_dora on top of it
  int64_t r = 16;
  double alpha = 32;
  double dropout = 0.05;  // on the adapter's input, while training only
  // Module names or dotted suffixes ("q_proj" matches "model.layers.3.self_attn.q_proj"); or the single entry
  // "all-linear" (every Linear but the LM head); or the single entry "re:<regex>" (Python re.fullmatch on the
  // full module name).
  std::vector<std::string> target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  // Same forms (names/suffixes, or one "re:<regex>"); matching modules are left alone.
  std::vector<std::string> exclude_modules;
  // Layer indices to adapt; empty: every layer (YAML null). Not with a "re:" target, as in PEFT.
  std::vector<int64_t> layers;
  // Module-name regex → rank / alpha for matching modules; the first key that matches wins, as PEFT's
  // get_pattern_key: re.match(r"(.*\.)?(KEY)$", module_name).
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;
  bool use_rslora = false;  // scale alpha/sqrt(r) instead of alpha/r
  bool use_dora = false;    // PEFT's DoRA: a trainable magnitude per output row
  // default (A kaiming-uniform a=√5, B = 0) | gaussian (A ~ N(0, 1/r), B = 0) | pissa | pissa_niter_N | olora
  std::string init = "default";
  // A PEFT adapter directory to start from instead of `init`: its own config (targets, ranks, alphas, rsLoRA,
  // DoRA) then defines the adapter; `dropout` still applies.
  std::optional<std::string> init_from;
};

// Every problem with the options, each as "adapter.KEY: value ...; expected ..."; empty when they are usable.
// Checks what can be checked without a model (targets that match nothing are found when attaching).
std::vector<std::string> validate_lora_options(const LoraOptions& options);

// The PEFT config these options mean for a model whose Linear module names are `linear_modules` (the LM head
// left out): "all-linear" becomes the list of their last name components (q_proj, ..., down_proj) — what PEFT's
// all-linear targets on these architectures, and unlike PEFT's expanded full names it honours `layers`; a name
// whose every module exclude_modules removes is left out. "re:X" becomes the regex string X. Throws
// core::UsageError with every validate_lora_options problem.
io::PeftAdapterConfig to_peft_config(const LoraOptions& options, const std::vector<std::string>& linear_modules,
                                     const std::string& base_model_name_or_path);

}  // namespace freehold::adapters
