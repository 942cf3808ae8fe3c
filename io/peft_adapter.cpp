#include "io/peft_adapter.h"

#include <ATen/ops/isfinite.h>

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <filesystem>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "io/weight_files.h"
#include "nlohmann/json.hpp"

namespace freehold::io {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxConfigBytes = 16u << 20;

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Reads one adapter_config.json: every error names the file and the key.
class ConfigReader {
 public:
  ConfigReader(const json& root, std::string file) : root_(root), file_(std::move(file)) {}

  [[noreturn]] void fail(std::string_view key, const json& value, std::string_view expected) const {
    throw core::FormatError(absl::StrCat(file_, ": \"", std::string(key), "\" is ", value.dump(), "; expected ",
                                         std::string(expected)));
  }
  [[noreturn]] void unsupported(std::string_view key, const json& value, std::string_view accepted) const {
    throw core::FormatError(absl::StrCat(file_, ": \"", std::string(key), "\" is ", value.dump(),
                                         ", which freehold does not support; it accepts ", std::string(accepted)));
  }

  const json* find(std::string_view key) const {
    auto it = root_.find(std::string(key));
    return it == root_.end() ? nullptr : &*it;
  }
  bool is_null_or_missing(std::string_view key) const {
    const json* v = find(key);
    return v == nullptr || v->is_null();
  }

  bool get_bool(std::string_view key, bool fallback) const {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) fail(key, *v, "true or false");
    return v->get<bool>();
  }
  std::optional<std::string> get_optional_string(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (!v->is_string()) fail(key, *v, "a string or null");
    return v->get<std::string>();
  }
  double get_number(std::string_view key, double fallback) const {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_number() || !std::isfinite(v->get<double>())) fail(key, *v, "a finite number");
    return v->get<double>();
  }
  int64_t get_positive_int(std::string_view key, int64_t fallback) const {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    return positive_int(key, *v);
  }
  int64_t positive_int(std::string_view key, const json& v) const {
    if (!v.is_number_integer() || v.get<int64_t>() <= 0) fail(key, v, "a positive integer");
    return v.get<int64_t>();
  }

  ModuleSelector get_selector(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr || v->is_null()) return ModuleSelector::none();
    if (v->is_string()) return ModuleSelector::of_regex(v->get<std::string>());
    if (!v->is_array()) fail(key, *v, "a list of module names, a regular expression string, or null");
    std::vector<std::string> names;
    for (const json& item : *v) {
      if (!item.is_string() || item.get<std::string>().empty()) fail(key, *v, "a list of non-empty module names");
      names.push_back(item.get<std::string>());
    }
    return ModuleSelector::of_names(std::move(names));
  }

  // A field whose only value freehold computes with is `accepted` (compared as JSON; null and missing are alike
  // when accepted is null).
  void require(std::string_view key, const json& accepted, std::string_view what_it_is) const {
    const json* v = find(key);
    if (v == nullptr) return;
    if (*v == accepted) return;
    if (accepted.is_null() && v->is_array() && v->empty()) return;
    unsupported(key, *v, absl::StrCat(accepted.dump(), " only (", std::string(what_it_is), ")"));
  }

  const json& root() const { return root_; }
  const std::string& file() const { return file_; }

 private:
  const json& root_;
  std::string file_;
};

// Every field PEFT 0.21.2's LoraConfig has (its save_pretrained writes each of them), plus runtime_config, which
// PEFT strips from files with a warning.
const std::set<std::string>& known_lora_config_keys() {
  static const std::set<std::string> keys = {
      "alora_invocation_tokens", "alpha_pattern", "arrow_config", "auto_mapping", "base_model_name_or_path", "bias",
      "corda_config", "ensure_weight_tying", "eva_config", "exclude_modules", "fan_in_fan_out", "inference_mode",
      "init_lora_weights", "kasa_config", "layer_replication", "layers_pattern", "layers_to_transform",
      "loftq_config", "lora_alpha", "lora_bias", "lora_dropout", "lora_ga_config", "megatron_config",
      "megatron_core", "modules_to_save", "monteclora_config", "peft_type", "peft_version", "qalora_group_size", "r",
      "rank_pattern", "revision", "target_modules", "target_parameters", "task_type", "trainable_token_indices",
      "use_bdlora", "use_dora", "use_qalora", "use_rslora", "velora_config", "runtime_config"};
  return keys;
}

json number_json(double value) {
  if (std::nearbyint(value) == value && std::fabs(value) < 9.0e15) return json(static_cast<int64_t>(value));
  return json(value);
}

json selector_json(const ModuleSelector& s) {
  switch (s.kind) {
    case ModuleSelector::Kind::kNone:
      return nullptr;
    case ModuleSelector::Kind::kRegex:
      return s.regex;
    case ModuleSelector::Kind::kNames: {
      // PEFT keeps these as a set and writes list(set): the order carries no meaning. Sorted here.
      std::set<std::string> sorted(s.names.begin(), s.names.end());
      return json(std::vector<std::string>(sorted.begin(), sorted.end()));
    }
  }
  return nullptr;
}

const char* kind_suffix(PeftTensorKind kind) {
  switch (kind) {
    case PeftTensorKind::kLoraA:
      return ".lora_A.weight";
    case PeftTensorKind::kLoraB:
      return ".lora_B.weight";
    case PeftTensorKind::kMagnitude:
      return ".lora_magnitude_vector";
  }
  return "";
}

void require_finite(const std::string& where, const std::string& name, const at::Tensor& t) {
  if (!at::isfinite(t).all().item<bool>()) {
    throw core::FormatError(absl::StrCat(where, ": tensor \"", name, "\" contains NaN or Inf; refusing non-finite adapter values"));
  }
}

}  // namespace

PeftAdapterConfig parse_peft_adapter_config(std::string_view json_text, const std::string& file) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    throw core::FormatError(absl::StrCat(file, ": not valid JSON (", e.what(), ")"));
  }
  if (!root.is_object()) throw core::FormatError(absl::StrCat(file, ": expected a JSON object"));
  ConfigReader in(root, file);
  PeftAdapterConfig c;

  const json* peft_type = in.find("peft_type");
  if (peft_type == nullptr) throw core::FormatError(absl::StrCat(file, ": \"peft_type\" is missing; a PEFT adapter config has \"peft_type\": \"LORA\""));
  if (!peft_type->is_string()) in.fail("peft_type", *peft_type, "a string");
  if (peft_type->get<std::string>() != "LORA") in.unsupported("peft_type", *peft_type, "\"LORA\" only (LoRA and DoRA adapters)");

  if (const json* t = in.find("task_type"); t != nullptr && !t->is_null()) {
    if (!t->is_string()) in.fail("task_type", *t, "a string or null");
    if (t->get<std::string>() != "CAUSAL_LM") in.unsupported("task_type", *t, "\"CAUSAL_LM\" or null (causal language models)");
    c.task_type = "CAUSAL_LM";
  } else {
    c.task_type = "";
  }

  c.r = in.get_positive_int("r", 8);
  c.lora_alpha = in.get_number("lora_alpha", 8);
  c.lora_dropout = in.get_number("lora_dropout", 0.0);
  if (c.lora_dropout < 0 || c.lora_dropout > 1) in.fail("lora_dropout", *in.find("lora_dropout"), "a probability in [0, 1]");
  c.use_rslora = in.get_bool("use_rslora", false);
  c.use_dora = in.get_bool("use_dora", false);
  c.inference_mode = in.get_bool("inference_mode", false);
  c.base_model_name_or_path = in.get_optional_string("base_model_name_or_path");
  c.revision = in.get_optional_string("revision");
  c.peft_version = in.get_optional_string("peft_version").value_or("");
  c.target_modules = in.get_selector("target_modules");
  c.exclude_modules = in.get_selector("exclude_modules");

  if (const json* v = in.find("bias"); v != nullptr) {
    if (!v->is_string()) in.fail("bias", *v, "\"none\", \"all\" or \"lora_only\"");
    if (v->get<std::string>() != "none") {
      in.unsupported("bias", *v, "\"none\" only: freehold trains no biases; the adapter would need the trained "
                                 "bias values of the base model, which PEFT stores outside the LoRA tensors");
    }
  }
  if (in.get_bool("fan_in_fan_out", false)) {
    in.unsupported("fan_in_fan_out", true, "false only (Conv1D-style GPT-2 weights are not a supported architecture)");
  }
  if (const json* v = in.find("modules_to_save"); v != nullptr && !v->is_null() && !(v->is_array() && v->empty())) {
    in.unsupported("modules_to_save", *v, "null only: freehold adapters hold LoRA tensors, not full copies of "
                                          "modules. HINT: merge this adapter with PEFT (merge_and_unload) and use "
                                          "the merged model as the base");
  }

  // init_lora_weights: only how PEFT initialises a fresh adapter; a saved adapter's weights override it. MiCA is
  // the one value that also changes the layer (a LoRA variant), so it is refused.
  if (const json* v = in.find("init_lora_weights"); v != nullptr) {
    if (v->is_boolean()) {
      c.init_lora_weights = v->get<bool>() ? "true" : "false";
    } else if (v->is_string()) {
      c.init_lora_weights = v->get<std::string>();
      if (absl::AsciiStrToLower(c.init_lora_weights) == "mica") {
        in.unsupported("init_lora_weights", *v, "true, false, \"gaussian\", \"pissa\", \"pissa_niter_N\", \"olora\" "
                                                "(MiCA is a LoRA variant freehold does not compute)");
      }
    } else {
      in.fail("init_lora_weights", *v, "true, false or a method name such as \"gaussian\"");
    }
  }

  if (const json* v = in.find("layers_to_transform"); v != nullptr && !v->is_null()) {
    if (v->is_number_integer()) {
      c.layers_to_transform.push_back(v->get<int64_t>());
    } else if (v->is_array()) {
      for (const json& item : *v) {
        if (!item.is_number_integer()) in.fail("layers_to_transform", *v, "a layer index, a list of them, or null");
        c.layers_to_transform.push_back(item.get<int64_t>());
      }
    } else {
      in.fail("layers_to_transform", *v, "a layer index, a list of them, or null");
    }
  }
  if (const json* v = in.find("layers_pattern"); v != nullptr && !v->is_null()) {
    if (v->is_string()) {
      if (!v->get<std::string>().empty()) c.layers_pattern.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      for (const json& item : *v) {
        if (!item.is_string()) in.fail("layers_pattern", *v, "a name, a list of names, or null");
        c.layers_pattern.push_back(item.get<std::string>());
      }
    } else {
      in.fail("layers_pattern", *v, "a name, a list of names, or null");
    }
  }
  // PEFT's own consistency rules (LoraConfig.__post_init__).
  if (c.target_modules.kind == ModuleSelector::Kind::kRegex && !c.layers_to_transform.empty()) {
    throw core::FormatError(absl::StrCat(file, ": \"layers_to_transform\" cannot be used when \"target_modules\" is a "
                                         "string (a regular expression or all-linear), as in PEFT"));
  }
  if (c.target_modules.kind == ModuleSelector::Kind::kRegex && !in.is_null_or_missing("layers_pattern")) {
    throw core::FormatError(absl::StrCat(file, ": \"layers_pattern\" cannot be used when \"target_modules\" is a string, as in PEFT"));
  }
  if (!c.layers_pattern.empty() && c.layers_to_transform.empty() && in.is_null_or_missing("layers_to_transform")) {
    throw core::FormatError(absl::StrCat(file, ": \"layers_pattern\" needs \"layers_to_transform\", as in PEFT"));
  }

  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    const json* v = in.find(key);
    if (v == nullptr || v->is_null()) continue;
    if (!v->is_object()) in.fail(key, *v, "an object mapping module-name patterns to numbers");
  }
  // Pattern order matters (first match wins), so read the keys in file order.
  if (const json* v = in.find("rank_pattern"); v != nullptr && v->is_object()) {
    nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(json_text)["rank_pattern"];
    for (const auto& [key, value] : ordered.items()) {
      c.rank_pattern.emplace_back(key, in.positive_int(absl::StrCat("rank_pattern.", key), json::parse(value.dump())));
    }
  }
  if (const json* v = in.find("alpha_pattern"); v != nullptr && v->is_object()) {
    nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(json_text)["alpha_pattern"];
    for (const auto& [key, value] : ordered.items()) {
      if (!value.is_number() || !std::isfinite(value.get<double>())) {
        in.fail(absl::StrCat("alpha_pattern.", key), json::parse(value.dump()), "a finite number");
      }
      c.alpha_pattern.emplace_back(key, value.get<double>());
    }
  }

  // Features that change what the layer computes; freehold computes plain LoRA and DoRA only.
  in.require("lora_bias", false, "a trainable bias on lora_B");
  in.require("use_qalora", false, "QALoRA");
  in.require("alora_invocation_tokens", nullptr, "activated LoRA");
  in.require("trainable_token_indices", nullptr, "trainable embedding rows");
  in.require("layer_replication", nullptr, "replicated layers change the base model");
  in.require("target_parameters", nullptr, "LoRA on nn.Parameter targets");
  in.require("use_bdlora", nullptr, "block-diagonal LoRA");
  in.require("arrow_config", nullptr, "Arrow routing");
  in.require("velora_config", nullptr, "VeLoRA");
  in.require("kasa_config", nullptr, "KaSA");
  in.require("monteclora_config", nullptr, "MonteCLoRA");
  // megatron_config, megatron_core, loftq_config, eva_config, corda_config, lora_ga_config, qalora_group_size,
  // ensure_weight_tying and auto_mapping only matter to PEFT while it creates or initialises an adapter.

  std::vector<std::string> unknown;
  for (const auto& [key, value] : root.items()) {
    if (!known_lora_config_keys().count(key)) unknown.push_back(key);
  }
  if (!unknown.empty()) {
    core::log_warning(file, ": ignoring fields that PEFT ", kPeftFormatVersion, " does not know (as PEFT ignores them): ",
                      absl::StrJoin(unknown, ", "));
  }
  return c;
}

std::string peft_adapter_config_json(const PeftAdapterConfig& c) {
  json out = json::object();  // std::map underneath: keys come out sorted, as PEFT's sort_keys=True
  out["alora_invocation_tokens"] = nullptr;
  json alpha_pattern = json::object();
  for (const auto& [key, value] : c.alpha_pattern) alpha_pattern[key] = number_json(value);
  out["alpha_pattern"] = alpha_pattern;
  out["arrow_config"] = nullptr;
  out["auto_mapping"] = nullptr;
  out["base_model_name_or_path"] = c.base_model_name_or_path ? json(*c.base_model_name_or_path) : json(nullptr);
  out["bias"] = c.bias;
  out["corda_config"] = nullptr;
  out["ensure_weight_tying"] = false;
  out["eva_config"] = nullptr;
  out["exclude_modules"] = selector_json(c.exclude_modules);
  out["fan_in_fan_out"] = c.fan_in_fan_out;
  out["inference_mode"] = c.inference_mode;
  if (c.init_lora_weights == "true" || c.init_lora_weights == "false") {
    out["init_lora_weights"] = c.init_lora_weights == "true";
  } else {
    out["init_lora_weights"] = c.init_lora_weights;
  }
  out["kasa_config"] = nullptr;
  out["layer_replication"] = nullptr;
  out["layers_pattern"] = c.layers_pattern.empty() ? json(nullptr) : json(c.layers_pattern);
  out["layers_to_transform"] = c.layers_to_transform.empty() ? json(nullptr) : json(c.layers_to_transform);
  out["loftq_config"] = json::object();
  out["lora_alpha"] = number_json(c.lora_alpha);
  out["lora_bias"] = false;
  out["lora_dropout"] = c.lora_dropout;
  out["lora_ga_config"] = nullptr;
  out["megatron_config"] = nullptr;
  out["megatron_core"] = "megatron.core";
  out["modules_to_save"] = nullptr;
  out["monteclora_config"] = nullptr;
  out["peft_type"] = "LORA";
  out["peft_version"] = c.peft_version;
  out["qalora_group_size"] = 16;
  out["r"] = c.r;
  json rank_pattern = json::object();
  for (const auto& [key, value] : c.rank_pattern) rank_pattern[key] = value;
  out["rank_pattern"] = rank_pattern;
  out["revision"] = c.revision ? json(*c.revision) : json(nullptr);
  out["target_modules"] = selector_json(c.target_modules);
  out["target_parameters"] = nullptr;
  out["task_type"] = c.task_type.empty() ? json(nullptr) : json(c.task_type);
  out["trainable_token_indices"] = nullptr;
  out["use_bdlora"] = nullptr;
  out["use_dora"] = c.use_dora;
  out["use_qalora"] = false;
  out["use_rslora"] = c.use_rslora;
  out["velora_config"] = nullptr;
  return out.dump(2);
}

std::string peft_tensor_key(std::string_view module, PeftTensorKind kind) {
  return absl::StrCat(kPeftKeyPrefix, std::string(module), kind_suffix(kind));
}

std::optional<PeftTensorKey> parse_peft_tensor_key(std::string_view key) {
  if (!key.starts_with(kPeftKeyPrefix)) return std::nullopt;
  std::string_view rest = key.substr(std::string_view(kPeftKeyPrefix).size());
  for (PeftTensorKind kind : {PeftTensorKind::kLoraA, PeftTensorKind::kLoraB, PeftTensorKind::kMagnitude}) {
    std::string_view suffix = kind_suffix(kind);
    if (rest.size() > suffix.size() && rest.ends_with(suffix)) {
      std::string module(rest.substr(0, rest.size() - suffix.size()));
      if (module.empty() || module.front() == '.' || module.back() == '.') return std::nullopt;
      return PeftTensorKey{std::move(module), kind};
    }
  }
  return std::nullopt;
}

PeftAdapter load_peft_adapter(const std::string& dir) {
  PeftAdapter adapter;
  adapter.dir = dir;
  const std::string config_path = absl::StrCat(dir, "/", kAdapterConfigFile);
  const std::string weights_path = absl::StrCat(dir, "/", kAdapterWeightsFile);
  if (!file_exists(config_path)) {
    throw core::FormatError(absl::StrCat(dir, ": no ", kAdapterConfigFile, "; a PEFT adapter directory holds ",
                                         kAdapterConfigFile, " and ", kAdapterWeightsFile));
  }
  if (!file_exists(weights_path)) {
    if (file_exists(absl::StrCat(dir, "/", kAdapterPickleFile))) {
      throw core::FormatError(absl::StrCat(
          dir, ": holds ", kAdapterPickleFile, " (a PyTorch pickle), which freehold never loads. HINT: convert it "
          "once where you trust the file: python -c \"import torch; from safetensors.torch import save_file; "
          "save_file(torch.load('", kAdapterPickleFile, "', weights_only=True), '", kAdapterWeightsFile,
          "', metadata={'format': 'pt'})\""));
    }
    throw core::FormatError(absl::StrCat(dir, ": no ", kAdapterWeightsFile));
  }
  adapter.config = parse_peft_adapter_config(core::read_file(config_path, kMaxConfigBytes), config_path);

  WeightFiles files = WeightFiles::open_file(weights_path);
  std::vector<std::string> bad;
  for (const std::string& name : files.names()) {
    if (!parse_peft_tensor_key(name)) {
      bad.push_back(name);
      continue;
    }
    at::Tensor t = files.tensor(name);
    if (!at::isFloatingType(t.scalar_type())) {
      throw core::FormatError(absl::StrCat(weights_path, ": tensor \"", name, "\" has dtype ",
                                           std::string(core::dtype_name(files.info(name).dtype)),
                                           "; LoRA tensors are floating point (F32, BF16, F16)"));
    }
    require_finite(weights_path, name, t);
    adapter.tensors.emplace(name, t);
  }
  if (!bad.empty()) {
    if (bad.size() > 5) bad.resize(5), bad.push_back("...");
    throw core::FormatError(absl::StrCat(
        weights_path, ": tensors that are not LoRA A/B or DoRA magnitude tensors: ", absl::StrJoin(bad, ", "),
        "; expected keys like ", peft_tensor_key("model.layers.0.self_attn.q_proj", PeftTensorKind::kLoraA)));
  }
  if (adapter.tensors.empty()) throw core::FormatError(absl::StrCat(weights_path, ": holds no tensors"));
  return adapter;
}

void save_peft_adapter(const std::string& dir, const PeftAdapterConfig& config, const std::vector<NamedTensor>& tensors) {
  if (tensors.empty()) throw core::Error(absl::StrCat(dir, ": refusing to write an adapter without tensors"));
  for (const NamedTensor& t : tensors) {
    if (!parse_peft_tensor_key(t.name)) {
      throw core::InternalError(absl::StrCat("save_peft_adapter: \"", t.name, "\" is not a PEFT LoRA tensor key"));
    }
    if (!t.tensor.defined() || !at::isFloatingType(t.tensor.scalar_type())) {
      throw core::InternalError(absl::StrCat("save_peft_adapter: \"", t.name, "\" is not a floating-point tensor"));
    }
    if (!at::isfinite(t.tensor.detach()).all().item<bool>()) {
      throw core::Error(absl::StrCat(dir, ": refusing to write the adapter: tensor \"", t.name, "\" contains NaN or Inf"));
    }
  }
  const std::string text = peft_adapter_config_json(config);
  // The text must read back as it was meant (catches a config freehold itself would refuse).
  parse_peft_adapter_config(text, absl::StrCat(dir, "/", kAdapterConfigFile, " (about to be written)"));

  core::create_directories(dir);  // as PEFT's os.makedirs(exist_ok=True), owner-only
  std::vector<NamedTensor> detached;
  detached.reserve(tensors.size());
  for (const NamedTensor& t : tensors) detached.push_back({t.name, t.tensor.detach()});
  // Weights first, config last: a reader that finds the config finds the weights it describes.
  save_safetensors(absl::StrCat(dir, "/", kAdapterWeightsFile), detached, {{"format", "pt"}});
  core::write_file_atomic(absl::StrCat(dir, "/", kAdapterConfigFile), text);
}

}  // namespace freehold::io
