// The Llama-family decoder (Llama, Mistral, Qwen2, Qwen3) on frozen weights: embedding, RMSNorm, RoPE,
// grouped-query attention through scaled_dot_product_attention, SwiGLU MLP and the LM head (tied or not).
// Built from a ModelConfig; every parameter keeps its Hugging Face name. Computes as transformers does, so
// logits agree with it (tests/conformance/model_logits_test.py).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/hf_config.h"
#include "model/kv_cache.h"
#include "model/linear.h"
#include "model/rotary_embedding.h"

namespace freehold::model {

struct RmsNorm {
  at::Tensor weight;  // (C) or (D) for the Qwen3 q/k norms
  double eps = 1e-6;
  at::Tensor forward(const at::Tensor& x) const;
};

struct Attention {
  Linear q_proj;  // (H·D, C)
  Linear k_proj;  // (H_kv·D, C)
  Linear v_proj;  // (H_kv·D, C)
  Linear o_proj;  // (C, H·D)
  std::optional<RmsNorm> q_norm;  // Qwen3: over D, before RoPE
  std::optional<RmsNorm> k_norm;
  std::optional<int64_t> sliding_window;
};

struct Mlp {
  Linear gate_proj;  // (I, C)
  Linear up_proj;    // (I, C)
  Linear down_proj;  // (C, I)
};

struct DecoderLayer {
  RmsNorm input_layernorm;
  Attention self_attn;
  RmsNorm post_attention_layernorm;
  Mlp mlp;
};

// One batch for the forward pass. Packed batches give each document its own segment id and restart
// position_ids at 0; attention never crosses a segment boundary.
struct ForwardInput {
  at::Tensor input_ids;     // (B, T) int64
  at::Tensor position_ids;  // (B, T) int64, or undefined for 0..T-1
  at::Tensor segment_ids;   // (B, T) int64, or undefined for one sequence per row
};

// Computes projections that read one input together: the attention's q/k/v and the MLP's gate/up. Given the
// projections (each (out_i, in)) and x (..., in), returns their outputs (..., out_i) in order, each equal to
// projections[i]->forward(x) within rounding. The model knows no adapter, so adapters/ provides this
// (adapters/lora_group.h: one low-rank GEMM for the LoRA-adapted ones) and installs it on the model.
using ProjectionGroupForward = std::vector<at::Tensor> (*)(std::span<const Linear* const> projections,
                                                           const at::Tensor& x);

struct LoadOptions {
  // The dtype weights are kept and computed in; nullopt keeps the checkpoint's. Weights already in this dtype
  // stay in the checkpoint's mmap (no copy).
  std::optional<core::DType> dtype;
  // Refuse weights containing NaN or Inf (RELIABILITY.md S21).
  bool check_finite = true;
  // Where the weights live and the model computes; on the CPU, weights already in the dtype stay in the mmap.
  c10::Device device = c10::Device(c10::kCPU);
};

class Transformer {
 public:
  // Reads config.json and the safetensors weights (single file or sharded) from `model_dir`.
  static Transformer load(const std::string& model_dir, const LoadOptions& options = {});

  // → final hidden states (B, T, C), after the last RMSNorm.
  at::Tensor hidden_states(const ForwardInput& input) const;
  // → logits (B, T, V) in the model dtype.
  at::Tensor forward(const ForwardInput& input) const;
  // hidden (B, T, C) → logits (B, T, V).
  at::Tensor lm_head_forward(const at::Tensor& hidden) const;
  // Incremental decoding: the final hidden states (B, T, C) of T new tokens (B, T) at positions
  // cache.length … cache.length + T - 1, attending to the cached keys and values and to each other (causally);
  // appends their keys and values to `cache` and advances cache.length. No packing (segment ids) here.
  at::Tensor hidden_states_cached(const at::Tensor& input_ids, KvCache& cache) const;

  // Activation checkpointing (model.activation_checkpointing): while grad mode is on, each decoder layer keeps
  // only its input for the backward pass and is recomputed there (model/activation_checkpoint.h). Same results.
  void set_activation_checkpointing(bool on) { activation_checkpointing_ = on; }
  bool activation_checkpointing() const { return activation_checkpointing_; }

  // Projections reading one input (q/k/v, gate/up) go through `group_forward` when set, else one by one through
  // Linear::forward (the default). adapters::set_lora_grouping installs and removes the LoRA one.
  void set_projection_group_forward(ProjectionGroupForward group_forward) { group_forward_ = group_forward; }
  ProjectionGroupForward projection_group_forward() const { return group_forward_; }

  const io::ModelConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  const std::string& model_dir() const { return model_dir_; }
  // Every projection of every layer, by HF name order; adapters attach here. The LM head is not included.
  std::vector<Linear*> projections();
  std::vector<const Linear*> projections() const;
  const Linear& lm_head() const { return lm_head_; }
  const at::Tensor& embed_tokens() const { return embed_tokens_; }  // (V, C)
  const std::vector<DecoderLayer>& layers() const { return layers_; }
  int64_t num_parameters() const;

 private:
  // With `cache` (layer `layer_index`'s slots of it), keys and values are appended there and attention spans
  // every cached position; without, it spans the T positions of x.
  at::Tensor attention_forward(const Attention& attn, const at::Tensor& x, const at::Tensor& cos,
                               const at::Tensor& sin, const at::Tensor& segment_ids, KvCache* cache = nullptr,
                               size_t layer_index = 0) const;
  // One decoder layer: h + attention(norm(h)), then + mlp(norm(·)). h (B, T, C) → (B, T, C).
  at::Tensor layer_forward(const DecoderLayer& layer, const at::Tensor& h, const at::Tensor& cos,
                           const at::Tensor& sin, const at::Tensor& segment_ids, KvCache* cache = nullptr,
                           size_t layer_index = 0) const;

  io::ModelConfig config_;
  std::string model_dir_;
  at::ScalarType dtype_ = at::kFloat;
  at::Tensor embed_tokens_;  // (V, C)
  std::vector<DecoderLayer> layers_;
  RmsNorm norm_;
  Linear lm_head_;  // weight is embed_tokens_ when tied
  RotaryEmbedding rotary_;
  bool activation_checkpointing_ = false;
  ProjectionGroupForward group_forward_ = nullptr;
};

}  // namespace freehold::model
