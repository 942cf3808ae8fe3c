#include "io/hf_config.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/file.h"
#include "nlohmann/json.hpp"

namespace freehold::io {
namespace {

using nlohmann::json;

struct ArchitectureInfo {
  Architecture architecture;
  std::string_view class_name;
  std::string_view model_type;
};

constexpr ArchitectureInfo kArchitectures[] = {
    {Architecture::kLlama, "LlamaForCausalLM", "llama"},
    {Architecture::kMistral, "MistralForCausalLM", "mistral"},
    {Architecture::kQwen2, "Qwen2ForCausalLM", "qwen2"},
    {Architecture::kQwen3, "Qwen3ForCausalLM", "qwen3"},
};

// Reads typed values from one JSON object and reports errors with the file and key path.
class ConfigReader {
 public:
  ConfigReader(const json& object, std::string file, std::string prefix = "")
      : object_(object), file_(std::move(file)), prefix_(std::move(prefix)) {}

  bool has(std::string_view key) const {
    auto it = object_.find(key);
    return it != object_.end() && !it->is_null();
  }

  [[noreturn]] void fail(std::string_view key, const std::string& problem) const {
    throw core::FormatError(absl::StrCat(file_, ": key \"", prefix_, std::string(key), "\" ", problem));
  }

  std::string value_text(std::string_view key) const { return object_.at(std::string(key)).dump(); }

  int64_t integer(std::string_view key, int64_t min_value) const {
    if (!has(key)) fail(key, "is missing; it is required for this architecture");
    const json& v = object_.at(std::string(key));
    if (!v.is_number_integer()) fail(key, absl::StrCat("is ", v.dump(), "; expected an integer"));
    int64_t x = v.get<int64_t>();
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      fail(key, absl::StrCat("is ", v.dump(), "; too large"));
    }
    if (x < min_value) fail(key, absl::StrCat("is ", x, "; expected an integer >= ", min_value));
    return x;
  }

  int64_t integer_or(std::string_view key, int64_t min_value, int64_t fallback) const {
    return has(key) ? integer(key, min_value) : fallback;
  }

  double number(std::string_view key) const {
    if (!has(key)) fail(key, "is missing");
    const json& v = object_.at(std::string(key));
    if (!v.is_number()) fail(key, absl::StrCat("is ", v.dump(), "; expected a number"));
    double x = v.get<double>();
    if (!std::isfinite(x)) fail(key, "is not finite");
    return x;
  }

  double positive_number(std::string_view key) const {
    double x = number(key);
    if (!(x > 0)) fail(key, absl::StrCat("is ", x, "; expected a number > 0"));
    return x;
  }

  double positive_number_or(std::string_view key, double fallback) const {
    return has(key) ? positive_number(key) : fallback;
  }

  bool boolean_or(std::string_view key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = object_.at(std::string(key));
    if (!v.is_boolean()) fail(key, absl::StrCat("is ", v.dump(), "; expected true or false"));
    return v.get<bool>();
  }

  std::string string_or(std::string_view key, std::string fallback) const {
    if (!has(key)) return fallback;
    const json& v = object_.at(std::string(key));
    if (!v.is_string()) fail(key, absl::StrCat("is ", v.dump(), "; expected a string"));
    return v.get<std::string>();
  }

  const json& object() const { return object_; }
  const std::string& file() const { return file_; }

 private:
  const json& object_;
  std::string file_;
  std::string prefix_;
};

RopeType parse_rope_type(const ConfigReader& reader, std::string_view key, const std::string& name) {
  if (name == "default") return RopeType::kDefault;
  if (name == "linear") return RopeType::kLinear;
  if (name == "dynamic") return RopeType::kDynamic;
  if (name == "yarn") return RopeType::kYarn;
  if (name == "llama3") return RopeType::kLlama3;
  reader.fail(key, absl::StrCat("is \"", name,
                                "\"; freehold supports the rope types default, linear, dynamic, yarn and llama3 "
                                "(longrope and others are not implemented for this family)"));
}

// The rope parameters live in `rope_parameters` (5.x) or `rope_scaling` plus top-level `rope_theta` (4.x).
RopeConfig parse_rope(const ConfigReader& top, int64_t max_position_embeddings) {
  RopeConfig rope;
  const json& root = top.object();
  std::string section;
  if (top.has("rope_parameters")) {
    section = "rope_parameters";
  } else if (top.has("rope_scaling")) {
    section = "rope_scaling";
  }
  double top_theta = top.positive_number_or("rope_theta", 10000.0);
  if (top.has("partial_rotary_factor") && top.number("partial_rotary_factor") != 1.0) {
    top.fail("partial_rotary_factor", "is not 1.0; partial rotary embeddings are not used by this family");
  }
  rope.theta = top_theta;
  if (section.empty()) return rope;

  const json& params = root.at(section);
  if (!params.is_object()) {
    top.fail(section, absl::StrCat("is ", params.dump(), "; expected an object"));
  }
  ConfigReader reader(params, top.file(), section + ".");
  // Per-layer-type rope parameters (nested objects) are used by other families only.
  for (auto it = params.begin(); it != params.end(); ++it) {
    if (it.value().is_object()) {
      reader.fail(it.key(), "is an object; per-layer-type rope parameters are not supported for this family");
    }
  }
  std::string type_key = reader.has("rope_type") ? "rope_type" : "type";
  std::string type_name = reader.string_or(type_key, "default");
  rope.type = parse_rope_type(reader, type_key, type_name);
  rope.theta = reader.positive_number_or("rope_theta", top_theta);
  if (reader.has("partial_rotary_factor") && reader.number("partial_rotary_factor") != 1.0) {
    reader.fail("partial_rotary_factor", "is not 1.0; partial rotary embeddings are not used by this family");
  }
  int64_t original = top.integer_or("original_max_position_embeddings", 1, max_position_embeddings);
  switch (rope.type) {
    case RopeType::kDefault:
      break;
    case RopeType::kLinear:
    case RopeType::kDynamic:
      rope.factor = reader.positive_number("factor");
      break;
    case RopeType::kLlama3:
      rope.factor = reader.positive_number("factor");
      rope.low_freq_factor = reader.positive_number("low_freq_factor");
      rope.high_freq_factor = reader.positive_number("high_freq_factor");
      if (rope.high_freq_factor == rope.low_freq_factor) {
        reader.fail("high_freq_factor", "equals low_freq_factor; the llama3 smoothing divides by their difference");
      }
      rope.original_max_position_embeddings = reader.integer_or("original_max_position_embeddings", 1, original);
      break;
    case RopeType::kYarn:
      rope.original_max_position_embeddings = reader.integer_or("original_max_position_embeddings", 1, original);
      rope.factor = reader.has("factor") ? reader.positive_number("factor")
                                         : static_cast<double>(max_position_embeddings) /
                                               static_cast<double>(rope.original_max_position_embeddings);
      if (reader.has("attention_factor")) rope.attention_factor = reader.positive_number("attention_factor");
      if (reader.has("mscale")) rope.mscale = reader.number("mscale");
      if (reader.has("mscale_all_dim")) rope.mscale_all_dim = reader.number("mscale_all_dim");
      // transformers treats 0 or null as "use the default" here.
      if (reader.has("beta_fast") && reader.number("beta_fast") != 0) rope.beta_fast = reader.number("beta_fast");
      if (reader.has("beta_slow") && reader.number("beta_slow") != 0) rope.beta_slow = reader.number("beta_slow");
      rope.truncate = reader.boolean_or("truncate", true);
      break;
  }
  return rope;
}

std::optional<core::DType> parse_stored_dtype(const ConfigReader& top) {
  for (std::string_view key : {"dtype", "torch_dtype"}) {
    if (!top.has(key)) continue;
    std::string name = top.string_or(key, "");
    if (name == "float32") return core::DType::kF32;
    if (name == "bfloat16") return core::DType::kBF16;
    if (name == "float16") return core::DType::kF16;
    if (name == "auto") return std::nullopt;
    top.fail(key, absl::StrCat("is \"", name, "\"; expected float32, bfloat16 or float16"));
  }
  return std::nullopt;
}

std::vector<int64_t> parse_token_ids(const ConfigReader& top, std::string_view key) {
  std::vector<int64_t> ids;
  if (!top.has(key)) return ids;
  const json& v = top.object().at(std::string(key));
  if (v.is_number_integer()) {
    ids.push_back(top.integer(key, 0));
  } else if (v.is_array()) {
    for (const json& item : v) {
      if (!item.is_number_integer() || item.get<int64_t>() < 0) {
        top.fail(key, absl::StrCat("is ", v.dump(), "; expected a token id or a list of token ids"));
      }
      ids.push_back(item.get<int64_t>());
    }
  } else {
    top.fail(key, absl::StrCat("is ", v.dump(), "; expected a token id or a list of token ids"));
  }
  return ids;
}

}  // namespace

std::string_view rope_type_name(RopeType type) {
  switch (type) {
    case RopeType::kDefault: return "default";
    case RopeType::kLinear: return "linear";
    case RopeType::kDynamic: return "dynamic";
    case RopeType::kYarn: return "yarn";
    case RopeType::kLlama3: return "llama3";
  }
  return "?";
}

std::string supported_architecture_names() {
  return absl::StrJoin(kArchitectures, ", ",
                       [](std::string* out, const ArchitectureInfo& a) { out->append(a.class_name.data(), a.class_name.size()); });
}

int64_t ModelConfig::num_parameters() const {
  const int64_t C = hidden_size, D = head_dim, H = num_attention_heads, Hkv = num_key_value_heads;
  int64_t attention = C * H * D + 2 * C * Hkv * D + H * D * C;
  if (qkv_bias) attention += H * D + 2 * Hkv * D;
  if (o_bias) attention += C;
  if (qk_norm) attention += 2 * D;
  int64_t mlp = 3 * C * intermediate_size + (mlp_bias ? 2 * intermediate_size + C : 0);
  int64_t per_layer = attention + mlp + 2 * C;
  int64_t embeddings = vocab_size * C * (tie_word_embeddings ? 1 : 2);
  return embeddings + num_hidden_layers * per_layer + C;
}

ModelConfig parse_model_config(std::string_view json_text, const std::string& file) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    throw core::FormatError(absl::StrCat(file, ": not valid JSON: ", e.what()));
  }
  if (!root.is_object()) throw core::FormatError(absl::StrCat(file, ": expected a JSON object at the top level"));
  ConfigReader top(root, file);
  ModelConfig config;

  // The architecture: `architectures[0]` when present, else `model_type`.
  const ArchitectureInfo* arch = nullptr;
  std::string named;
  if (top.has("architectures")) {
    const json& list = root.at("architectures");
    if (!list.is_array() || list.size() != 1 || !list[0].is_string()) {
      top.fail("architectures", absl::StrCat("is ", list.dump(), "; expected a list with one class name"));
    }
    named = list[0].get<std::string>();
    for (const ArchitectureInfo& a : kArchitectures) {
      if (a.class_name == named) arch = &a;
    }
    if (arch == nullptr) {
      top.fail("architectures", absl::StrCat("is [\"", named, "\"]; supported: ", supported_architecture_names()));
    }
  } else {
    named = top.string_or("model_type", "");
    for (const ArchitectureInfo& a : kArchitectures) {
      if (a.model_type == named) arch = &a;
    }
    if (arch == nullptr) {
      throw core::FormatError(absl::StrCat(file, ": no \"architectures\" and \"model_type\" is \"", named,
                                           "\"; supported: ", supported_architecture_names()));
    }
  }
  config.architecture = arch->architecture;
  config.architecture_name = std::string(arch->class_name);
  config.model_type = top.string_or("model_type", std::string(arch->model_type));
  if (config.model_type != arch->model_type) {
    top.fail("model_type", absl::StrCat("is \"", config.model_type, "\" but architectures names ",
                                        std::string(arch->class_name), " (model_type \"",
                                        std::string(arch->model_type), "\")"));
  }

  std::string act = top.string_or("hidden_act", "silu");
  if (act != "silu") top.fail("hidden_act", absl::StrCat("is \"", act, "\"; this family uses \"silu\" (SwiGLU)"));

  config.vocab_size = top.integer("vocab_size", 1);
  config.hidden_size = top.integer("hidden_size", 1);
  config.intermediate_size = top.integer("intermediate_size", 1);
  config.num_hidden_layers = top.integer("num_hidden_layers", 1);
  config.num_attention_heads = top.integer("num_attention_heads", 1);
  config.num_key_value_heads = top.integer_or("num_key_value_heads", 1, config.num_attention_heads);
  if (config.num_attention_heads % config.num_key_value_heads != 0) {
    top.fail("num_key_value_heads", absl::StrCat("is ", config.num_key_value_heads,
                                                 "; it must divide num_attention_heads (", config.num_attention_heads,
                                                 ") for grouped-query attention"));
  }
  if (top.has("head_dim")) {
    config.head_dim = top.integer("head_dim", 2);
  } else {
    if (config.hidden_size % config.num_attention_heads != 0) {
      top.fail("hidden_size", absl::StrCat("is ", config.hidden_size, "; without head_dim it must be divisible by "
                                           "num_attention_heads (", config.num_attention_heads, ")"));
    }
    config.head_dim = config.hidden_size / config.num_attention_heads;
  }
  if (config.head_dim % 2 != 0) {
    top.fail("head_dim", absl::StrCat("is ", config.head_dim, "; rotary embeddings need an even head dimension"));
  }

  const int64_t default_max_positions = config.architecture == Architecture::kLlama     ? 2048
                                        : config.architecture == Architecture::kMistral ? 4096 * 32
                                                                                        : 32768;
  config.max_position_embeddings = top.integer_or("max_position_embeddings", 1, default_max_positions);
  config.rms_norm_eps = top.positive_number_or("rms_norm_eps", 1e-6);
  config.rope = parse_rope(top, config.max_position_embeddings);
  config.tie_word_embeddings = top.boolean_or("tie_word_embeddings", false);
  config.stored_dtype = parse_stored_dtype(top);
  if (top.has("bos_token_id")) config.bos_token_id = top.integer("bos_token_id", 0);
  config.eos_token_ids = parse_token_ids(top, "eos_token_id");

  switch (config.architecture) {
    case Architecture::kLlama:
      config.qkv_bias = config.o_bias = top.boolean_or("attention_bias", false);
      config.mlp_bias = top.boolean_or("mlp_bias", false);
      break;
    case Architecture::kMistral:
      break;  // no biases anywhere
    case Architecture::kQwen2:
      config.qkv_bias = true;  // fixed in the architecture, not a config key
      break;
    case Architecture::kQwen3:
      config.qkv_bias = config.o_bias = top.boolean_or("attention_bias", false);
      config.qk_norm = true;
      break;
  }

  // Sliding-window attention: Mistral applies `sliding_window` to every layer; Qwen2/Qwen3 only when
  // `use_sliding_window` is true, to the layers that `layer_types` marks (or those from max_window_layers on).
  std::optional<int64_t> window;
  if (top.has("sliding_window")) window = top.integer("sliding_window", 1);
  config.layer_sliding_window.assign(static_cast<size_t>(config.num_hidden_layers), std::nullopt);
  if (config.architecture == Architecture::kMistral) {
    for (auto& w : config.layer_sliding_window) w = window;
  } else if (config.architecture == Architecture::kQwen2 || config.architecture == Architecture::kQwen3) {
    bool use = top.boolean_or("use_sliding_window", false);
    if (use && window) {
      if (top.has("layer_types")) {
        const json& types = root.at("layer_types");
        if (!types.is_array() || static_cast<int64_t>(types.size()) != config.num_hidden_layers) {
          top.fail("layer_types", absl::StrCat("is ", types.dump(), "; expected one entry per layer (",
                                               config.num_hidden_layers, ")"));
        }
        for (size_t i = 0; i < types.size(); ++i) {
          if (types[i] == "sliding_attention") {
            config.layer_sliding_window[i] = window;
          } else if (types[i] != "full_attention") {
            top.fail("layer_types", absl::StrCat("has ", types[i].dump(), " at ", i,
                                                 "; expected \"full_attention\" or \"sliding_attention\""));
          }
        }
      } else {
        int64_t first = top.integer_or("max_window_layers", 0, config.num_hidden_layers);
        for (int64_t i = first; i < config.num_hidden_layers; ++i) config.layer_sliding_window[i] = window;
      }
    }
  }
  return config;
}

ModelConfig load_model_config(const std::string& model_dir) {
  std::string path = model_dir + "/config.json";
  return parse_model_config(core::read_file(path, 16u << 20), path);
}

}  // namespace freehold::io
