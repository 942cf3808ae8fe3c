// Which modules of a model get an adapter, and with which r and alpha: PEFT 0.21.2's rules exactly
// (peft/tuners/tuners_utils.py check_target_module_exists, _maybe_include_all_linear_layers;
// peft/utils/other.py get_pattern_key), applied to the module names transformers' named_modules() gives.
//
//   target_modules as a list: a module matches when its name equals an entry or ends with "." + entry; then, when
//     layers_to_transform is set and the match was by suffix, only in those layers (the layer index is the first
//     numbered path segment, or the number after a layers_pattern entry).
//   target_modules as a string: re.fullmatch on the full name ("all-linear": every Linear but the LM head).
//   exclude_modules (list: equal or suffix; string: re.fullmatch) removes modules first.
//   rank_pattern / alpha_pattern: the first key K with re.match(r"(.*\.)?(K)$", name) gives r / alpha.
// Regular expressions are Python `re` syntax, run by PCRE2 (the same for the patterns module names need).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/peft_adapter.h"
#include "model/transformer.h"

namespace freehold::adapters {

struct ModuleInfo {
  std::string name;   // as transformers' named_modules(): "model.layers.0.self_attn.q_proj"
  bool is_linear = false;
};

// Every module of the transformers model `model` stands for, in named_modules() order, the LM head included.
std::vector<ModuleInfo> transformer_modules(const model::Transformer& model);
// The name of the output layer that all-linear leaves out.
inline constexpr char kLmHeadName[] = "lm_head";

struct TargetedModule {
  std::string name;
  int64_t r = 0;
  double alpha = 0;
};

enum class Strictness {
  // A freehold config: every target_modules entry must match something, every rank/alpha pattern key a
  // targeted module; a mistake there is a typo to report.
  kConfig,
  // A PEFT adapter being loaded: PEFT's own leniency (it only fails when nothing at all is targeted), with
  // warnings for entries that match nothing.
  kSavedAdapter,
};

// The targeted modules in `modules` order. Throws core::UsageError naming the key and the value, with the module
// names that exist (layer indices folded), when: nothing is targeted; a target matches a module that is not a
// Linear (e.g. input_layernorm); the LM head is targeted (freehold adapts the decoder's projections only); a regex
// does not compile; and, under kConfig, an entry or pattern key matches nothing.
std::vector<TargetedModule> match_targets(const io::PeftAdapterConfig& config, const std::vector<ModuleInfo>& modules,
                                          Strictness strictness);

// PEFT's get_pattern_key: the first of `keys` K with re.match(r"(.*\.)?(K)$", name), or -1.
int find_pattern_key(const std::vector<std::string>& keys, const std::string& name);

// Python's re.fullmatch(pattern, text). Throws core::UsageError naming `what` when the pattern does not compile.
bool regex_fullmatch(const std::string& pattern, const std::string& text, const std::string& what);

// "model.layers.N.self_attn.q_proj, ..." — the names with layer indices folded to N, for messages.
std::string describe_modules(const std::vector<ModuleInfo>& modules);

}  // namespace freehold::adapters
