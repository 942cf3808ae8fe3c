// Hugging Face config.json → ModelConfig for the Llama family (Llama, Mistral, Qwen2, Qwen3). Torch-free.
// Reads both generations of the file (DESIGN.md §9): transformers 4.x (`rope_theta`, `rope_scaling`,
// `torch_dtype`) and transformers 5.x (`rope_parameters`, `dtype`). Anything we cannot run exactly as
// transformers would is refused with the key, the value and what is supported.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"

namespace freehold::io {

enum class Architecture { kLlama, kMistral, kQwen2, kQwen3 };

// Rotary embedding variants transformers applies to these families (modeling_rope_utils.py).
enum class RopeType { kDefault, kLinear, kDynamic, kYarn, kLlama3 };

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;                          // linear, dynamic, yarn, llama3
  int64_t original_max_position_embeddings = 0; // llama3, yarn
  double low_freq_factor = 1.0;                 // llama3
  double high_freq_factor = 4.0;                // llama3
  std::optional<double> attention_factor;       // yarn: scales cos/sin; derived from factor/mscale when absent
  double beta_fast = 32.0;                      // yarn
  double beta_slow = 1.0;                       // yarn
  std::optional<double> mscale;                 // yarn
  std::optional<double> mscale_all_dim;         // yarn
  bool truncate = true;                         // yarn
};

std::string_view rope_type_name(RopeType type);

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string architecture_name;  // as in config.json, e.g. "LlamaForCausalLM"
  std::string model_type;         // "llama", "mistral", "qwen2", "qwen3"
  int64_t vocab_size = 0;         // V
  int64_t hidden_size = 0;        // C
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;  // L
  int64_t num_attention_heads = 0;  // H
  int64_t num_key_value_heads = 0;  // H_kv
  int64_t head_dim = 0;             // D
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // bias on q_proj, k_proj, v_proj
  bool o_bias = false;    // bias on o_proj
  bool mlp_bias = false;  // bias on gate_proj, up_proj, down_proj
  bool qk_norm = false;   // Qwen3: RMSNorm over D on queries and keys before RoPE
  // Per layer: the sliding window (keys in (t - W, t] are visible), or nullopt for full causal attention.
  std::vector<std::optional<int64_t>> layer_sliding_window;
  std::optional<core::DType> stored_dtype;  // `dtype` (5.x) or `torch_dtype` (4.x), when present
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;

  int64_t num_parameters() const;  // as the weights in the checkpoint (tied LM head counted once)
};

// `file` is used in error messages only.
ModelConfig parse_model_config(std::string_view json_text, const std::string& file);
// Reads `model_dir`/config.json.
ModelConfig load_model_config(const std::string& model_dir);

// The architectures accepted, for messages: "LlamaForCausalLM, MistralForCausalLM, ...".
std::string supported_architecture_names();

}  // namespace freehold::io
