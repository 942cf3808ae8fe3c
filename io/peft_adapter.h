// The PEFT LoRA adapter format (DESIGN.md §5, §9): adapter_config.json + adapter_model.safetensors, read and
// written exactly as PEFT 0.21.2 does, so adapters move between freehold and PEFT unchanged.
//
// Reading is strict where PEFT's meaning would change: fields whose non-default value selects something freehold
// does not compute (bias != "none", fan_in_fan_out, modules_to_save, LoRA variants such as aLoRA or QALoRA, ...)
// are refused with the key, the value and what is supported; a field of the wrong type is an error naming the
// file, the key and the value. Fields PEFT does not know are ignored with a warning, as PEFT ignores them.
// Pickled adapters (adapter_model.bin) are refused, never loaded (S25).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/safetensors.h"

namespace freehold::io {

inline constexpr char kAdapterConfigFile[] = "adapter_config.json";
inline constexpr char kAdapterWeightsFile[] = "adapter_model.safetensors";
inline constexpr char kAdapterPickleFile[] = "adapter_model.bin";
// The PEFT release whose adapter format these files follow; written as "peft_version".
inline constexpr char kPeftFormatVersion[] = "0.21.2";
// Prefix of every tensor key in adapter_model.safetensors (PeftModel → LoraModel → the transformers model).
inline constexpr char kPeftKeyPrefix[] = "base_model.model.";

// PEFT's Optional[Union[list[str], str]] for target_modules and exclude_modules.
struct ModuleSelector {
  enum class Kind { kNone, kNames, kRegex };
  Kind kind = Kind::kNone;
  // kNames: a module matches when its full name equals an entry or ends with "." + entry.
  std::vector<std::string> names;
  // kRegex: a module matches when re.fullmatch(regex, name); for target_modules the special value "all-linear"
  // (any case) means every Linear except the output layer.
  std::string regex;

  bool empty() const { return kind == Kind::kNone || (kind == Kind::kNames && names.empty()); }
  static ModuleSelector none() { return {}; }
  static ModuleSelector of_names(std::vector<std::string> n) { return {Kind::kNames, std::move(n), {}}; }
  static ModuleSelector of_regex(std::string r) { return {Kind::kRegex, {}, std::move(r)}; }
};

// The fields of PEFT's LoraConfig that freehold reads, writes or must check. Pattern maps keep their file order:
// PEFT picks the first key that matches (peft.utils.other.get_pattern_key).
struct PeftAdapterConfig {
  std::string task_type = "CAUSAL_LM";  // null in a file reads as ""
  int64_t r = 8;
  double lora_alpha = 8;
  ModuleSelector target_modules;
  ModuleSelector exclude_modules;
  double lora_dropout = 0.0;
  bool use_rslora = false;
  bool use_dora = false;
  std::vector<std::pair<std::string, int64_t>> rank_pattern;   // module-name regex → r
  std::vector<std::pair<std::string, double>> alpha_pattern;   // module-name regex → lora_alpha
  std::vector<int64_t> layers_to_transform;  // empty: every layer (PEFT: null, [], or one int)
  std::vector<std::string> layers_pattern;   // empty: the first numbered path segment is the layer index
  // How PEFT should initialise the adapter when it creates it: "true", "false", "gaussian", "pissa",
  // "pissa_niter_N", "olora", "eva", "corda", "loftq", "orthogonal", "lora_ga". Only weights matter when loading
  // a saved adapter, so freehold writes "true" (see save_peft_adapter).
  std::string init_lora_weights = "true";
  std::optional<std::string> base_model_name_or_path;
  std::optional<std::string> revision;
  bool inference_mode = true;
  std::string peft_version = kPeftFormatVersion;
  // Always "none", false, null in what freehold accepts; kept as fields so checks and messages are in one place.
  std::string bias = "none";
  bool fan_in_fan_out = false;
};

// Parses adapter_config.json text. `file` is used in messages only. Throws core::FormatError for a malformed file
// or a wrong type (file, key, value), core::UsageError-free: everything here is the file's fault.
PeftAdapterConfig parse_peft_adapter_config(std::string_view json_text, const std::string& file);
// The JSON text PEFT 0.21.2's save_pretrained writes for this config: every LoraConfig field, keys sorted,
// indent 2, no trailing newline.
std::string peft_adapter_config_json(const PeftAdapterConfig& config);

// Which tensor of an adapted module a key names.
enum class PeftTensorKind { kLoraA, kLoraB, kMagnitude };
// "base_model.model.<module>.lora_A.weight", "...lora_B.weight", "...lora_magnitude_vector".
std::string peft_tensor_key(std::string_view module, PeftTensorKind kind);
struct PeftTensorKey {
  std::string module;  // e.g. "model.layers.0.self_attn.q_proj"
  PeftTensorKind kind;
};
// Inverse of peft_tensor_key; nullopt for any other key.
std::optional<PeftTensorKey> parse_peft_tensor_key(std::string_view key);

struct PeftAdapter {
  std::string dir;
  PeftAdapterConfig config;
  // Keyed by the file's names; CPU views of the (private) mapping, in the stored dtype.
  std::map<std::string, at::Tensor> tensors;
};

// Reads `dir`/adapter_config.json and `dir`/adapter_model.safetensors. A directory holding adapter_model.bin
// instead is refused with a hint on converting it. Tensors with non-finite values are refused by name; keys
// that are not LoRA A/B/magnitude keys (e.g. modules_to_save copies, lora_B.bias) are refused by name.
PeftAdapter load_peft_adapter(const std::string& dir);

// Writes `dir` (created if missing) as PEFT's save_pretrained does: adapter_model.safetensors (metadata
// {"format": "pt"}) then adapter_config.json, each atomically. Refuses an adapter without tensors, a tensor with
// NaN or Inf, a key that parse_peft_tensor_key does not accept, and a config read_peft_adapter_config would
// refuse — so nothing is written that freehold or PEFT would not load.
void save_peft_adapter(const std::string& dir, const PeftAdapterConfig& config, const std::vector<NamedTensor>& tensors);

}  // namespace freehold::io
