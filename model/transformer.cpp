#include "model/transformer.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scaled_dot_product_attention.h>

#include <array>
#include <cmath>
#include <set>

#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "io/weight_files.h"
#include "kernels/all_finite.h"
#include "kernels/causal_attention.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "model/activation_checkpoint.h"

namespace freehold::model {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Takes the model's tensors out of the checkpoint by name, checking each against the shape the config implies
// (RELIABILITY.md S24), converting to the compute dtype only when it differs (otherwise the tensor stays a view of
// the mmap), and refusing non-finite values (S21).
class WeightTaker {
 public:
  WeightTaker(const io::WeightFiles& files, std::string model_dir, const LoadOptions& options)
      : files_(files), model_dir_(std::move(model_dir)), check_finite_(options.check_finite), device_(options.device) {
    // All floating-point tensors of a checkpoint share one dtype; a stray one is a broken or mixed export.
    std::optional<core::DType> stored;
    std::string first_name;
    for (const std::string& name : files_.names()) {
      const io::TensorInfo& info = files_.info(name);
      if (!core::is_floating(info.dtype)) continue;
      if (!stored) {
        stored = info.dtype;
        first_name = name;
      } else if (info.dtype != *stored) {
        throw core::FormatError(absl::StrCat(
            files_.file_of(name), ": tensor \"", name, "\" is ", std::string(core::dtype_name(info.dtype)), " but \"", first_name,
            "\" is ", std::string(core::dtype_name(*stored)), "; a model's weights must share one floating-point dtype"));
      }
    }
    if (!stored) throw core::FormatError(absl::StrCat(model_dir_, ": the checkpoint has no floating-point tensors"));
    stored_ = *stored;
    if (stored_ == core::DType::kF64 && !options.dtype) {
      target_ = at::kFloat;  // nothing in this family computes in float64
    } else {
      target_ = io::to_scalar_type(options.dtype.value_or(stored_));
    }
  }

  at::ScalarType target() const { return target_; }
  core::DType stored() const { return stored_; }

  at::Tensor take(const std::string& name, const std::vector<int64_t>& shape) {
    if (!files_.contains(name)) {
      throw core::FormatError(absl::StrCat(model_dir_, ": tensor \"", name, "\" of shape ", shape_text(shape),
                                           " is missing from the checkpoint; it is required by config.json"));
    }
    const io::TensorInfo& info = files_.info(name);
    if (info.shape != shape) {
      throw core::FormatError(absl::StrCat(files_.file_of(name), ": tensor \"", name, "\" has shape ",
                                           shape_text(info.shape), " but config.json implies ", shape_text(shape)));
    }
    if (!core::is_floating(info.dtype)) {
      throw core::FormatError(absl::StrCat(files_.file_of(name), ": tensor \"", name, "\" is ",
                                           std::string(core::dtype_name(info.dtype)), "; expected a floating-point weight"));
    }
    used_.insert(name);
    at::Tensor tensor = files_.tensor(name);
    if (check_finite_) require_finite(name, tensor);
    if (tensor.scalar_type() != target_) tensor = tensor.to(target_);
    if (tensor.device() != device_) tensor = tensor.to(device_);
    return tensor;
  }

  // Checkpoint tensors nobody asked for: transformers warns about these; so do we.
  void warn_unused() const {
    std::vector<std::string> unused;
    for (const std::string& name : files_.names()) {
      // Old Llama exports carry the rotary frequencies as a buffer; they are recomputed from config.json.
      if (!used_.count(name) && name.find("rotary_emb.inv_freq") == std::string::npos) unused.push_back(name);
    }
    if (unused.empty()) return;
    if (unused.size() > 5) unused.resize(5), unused.push_back("...");
    core::log_warning(model_dir_, ": ignoring checkpoint tensors the model does not use: ",
                      absl::StrJoin(unused, ", "));
  }

 private:
  void require_finite(const std::string& name, const at::Tensor& tensor) const {
    if (!kernels::all_finite(tensor)) {  // reads the mapping in place: no temporary
      throw core::FormatError(absl::StrCat(files_.file_of(name), ": tensor \"", name,
                                           "\" contains NaN or Inf; refusing to use non-finite weights"));
    }
  }

  const io::WeightFiles& files_;
  std::string model_dir_;
  bool check_finite_;
  c10::Device device_;
  core::DType stored_ = core::DType::kF32;
  at::ScalarType target_ = at::kFloat;
  std::set<std::string> used_;
};

Linear take_linear(WeightTaker& taker, const std::string& name, int64_t out, int64_t in, bool bias) {
  at::Tensor weight = taker.take(name + ".weight", {out, in});
  at::Tensor b = bias ? taker.take(name + ".bias", {out}) : at::Tensor();
  return Linear(name, weight, b);
}

// Boolean mask (B, 1, T, T_k), true where query t (at position past + t) may attend to key s (at position s):
// causal, same segment, inside the window. Without a cache past is 0 and T_k is T.
at::Tensor build_attention_mask(int64_t T, const at::Tensor& segment_ids, std::optional<int64_t> window,
                                const at::Device& device, int64_t past = 0) {
  const at::TensorOptions positions = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor query = at::arange(past, past + T, positions).unsqueeze(1);  // (T, 1)
  at::Tensor key = at::arange(past + T, positions).unsqueeze(0);          // (1, T_k)
  at::Tensor mask = key <= query;
  if (window) mask = mask.logical_and(key > query - *window);
  mask = mask.unsqueeze(0);  // (1, T, T)
  if (segment_ids.defined()) {
    mask = mask.logical_and(segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1));  // (B, T, T)
  }
  return mask.unsqueeze(1);
}

// Projections that read the same x: together through the installed group forward (adapters/lora_group.h), else
// one by one. An array, so callers take the outputs apart with a structured binding.
template <size_t N>
std::array<at::Tensor, N> forward_projections(ProjectionGroupForward group_forward,
                                              const std::array<const Linear*, N>& projections, const at::Tensor& x) {
  std::array<at::Tensor, N> outputs;
  if (group_forward == nullptr) {
    for (size_t i = 0; i < N; ++i) outputs[i] = projections[i]->forward(x);
    return outputs;
  }
  std::vector<at::Tensor> grouped = group_forward(projections, x);
  FH_CHECK(grouped.size() == N, "the projection group forward returned ", grouped.size(), " outputs for ", N,
           " projections (", projections[0]->name(), ", ...)");
  for (size_t i = 0; i < N; ++i) outputs[i] = std::move(grouped[i]);
  return outputs;
}

}  // namespace

// kernels::rms_norm picks the fused kernel, or the differentiable reference while autograd needs gradients.
at::Tensor RmsNorm::forward(const at::Tensor& x) const { return kernels::rms_norm(x, weight, eps); }

Transformer Transformer::load(const std::string& model_dir, const LoadOptions& options) {
  Transformer model;
  model.model_dir_ = model_dir;
  model.config_ = io::load_model_config(model_dir);
  const io::ModelConfig& c = model.config_;
  io::WeightFiles files = io::WeightFiles::open_model_dir(model_dir);
  WeightTaker taker(files, model_dir, options);
  model.dtype_ = taker.target();
  if (c.stored_dtype && *c.stored_dtype != taker.stored()) {
    core::log_warning(model_dir, "/config.json declares dtype ", std::string(core::dtype_name(*c.stored_dtype)),
                      " but the weights are stored as ", std::string(core::dtype_name(taker.stored())), "; using the weights' dtype");
  }

  const int64_t C = c.hidden_size, H = c.num_attention_heads, Hkv = c.num_key_value_heads, D = c.head_dim;
  const int64_t I = c.intermediate_size, V = c.vocab_size;
  model.embed_tokens_ = taker.take("model.embed_tokens.weight", {V, C});
  model.layers_.reserve(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string prefix = absl::StrCat("model.layers.", i, ".");
    DecoderLayer layer;
    layer.input_layernorm = {taker.take(prefix + "input_layernorm.weight", {C}), c.rms_norm_eps};
    layer.post_attention_layernorm = {taker.take(prefix + "post_attention_layernorm.weight", {C}), c.rms_norm_eps};
    Attention& attn = layer.self_attn;
    attn.q_proj = take_linear(taker, prefix + "self_attn.q_proj", H * D, C, c.qkv_bias);
    attn.k_proj = take_linear(taker, prefix + "self_attn.k_proj", Hkv * D, C, c.qkv_bias);
    attn.v_proj = take_linear(taker, prefix + "self_attn.v_proj", Hkv * D, C, c.qkv_bias);
    attn.o_proj = take_linear(taker, prefix + "self_attn.o_proj", C, H * D, c.o_bias);
    if (c.qk_norm) {
      attn.q_norm = RmsNorm{taker.take(prefix + "self_attn.q_norm.weight", {D}), c.rms_norm_eps};
      attn.k_norm = RmsNorm{taker.take(prefix + "self_attn.k_norm.weight", {D}), c.rms_norm_eps};
    }
    attn.sliding_window = c.layer_sliding_window[static_cast<size_t>(i)];
    layer.mlp.gate_proj = take_linear(taker, prefix + "mlp.gate_proj", I, C, c.mlp_bias);
    layer.mlp.up_proj = take_linear(taker, prefix + "mlp.up_proj", I, C, c.mlp_bias);
    layer.mlp.down_proj = take_linear(taker, prefix + "mlp.down_proj", C, I, c.mlp_bias);
    model.layers_.push_back(std::move(layer));
  }
  model.norm_ = {taker.take("model.norm.weight", {C}), c.rms_norm_eps};
  if (c.tie_word_embeddings) {
    model.lm_head_ = Linear("lm_head", model.embed_tokens_, at::Tensor());
  } else {
    model.lm_head_ = take_linear(taker, "lm_head", V, C, false);
  }
  taker.warn_unused();
  model.rotary_ = RotaryEmbedding(c.rope, D, c.max_position_embeddings);
  return model;
}

at::Tensor Transformer::attention_forward(const Attention& attn, const at::Tensor& x, const at::Tensor& cos,
                                          const at::Tensor& sin, const at::Tensor& segment_ids, KvCache* cache,
                                          size_t layer_index) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t H = config_.num_attention_heads, Hkv = config_.num_key_value_heads, D = config_.head_dim;
  auto [q_flat, k_flat, v_flat] =
      forward_projections(group_forward_, std::array{&attn.q_proj, &attn.k_proj, &attn.v_proj}, x);
  at::Tensor q = q_flat.view({B, T, H, D});    // (B, T, H, D)
  at::Tensor k = k_flat.view({B, T, Hkv, D});  // (B, T, H_kv, D)
  at::Tensor v = v_flat.view({B, T, Hkv, D});
  if (attn.q_norm) q = attn.q_norm->forward(q);
  if (attn.k_norm) k = attn.k_norm->forward(k);
  if (cache != nullptr && !at::GradMode::is_enabled()) {
    // Generation: q and k are this step's own tensors and nothing differentiates them, so they rotate in place.
    q = kernels::rope_(q.transpose(1, 2), cos, sin);  // (B, H, T, D)
    k = kernels::rope_(k.transpose(1, 2), cos, sin);  // (B, H_kv, T, D)
  } else {
    q = apply_rotary(q.transpose(1, 2), cos, sin);  // (B, H, T, D)
    k = apply_rotary(k.transpose(1, 2), cos, sin);  // (B, H_kv, T, D)
  }
  v = v.transpose(1, 2);

  std::optional<at::Tensor> mask;
  bool is_causal = true;
  const int64_t past = cache ? cache->length : 0;
  if (cache) {  // append this step's keys and values; attend over every cached position
    cache->keys[layer_index].narrow(2, past, T).copy_(k);
    cache->values[layer_index].narrow(2, past, T).copy_(v);
    k = cache->keys[layer_index].narrow(2, 0, past + T);  // (B, H_kv, T_k, D)
    v = cache->values[layer_index].narrow(2, 0, past + T);
  }
  if (segment_ids.defined() || attn.sliding_window || (past > 0 && T > 1)) {
    mask = build_attention_mask(T, segment_ids, attn.sliding_window, x.device(), past);
    is_causal = false;
  } else if (past > 0) {
    is_causal = false;  // one new query sees every cached key (SDPA's is_causal aligns top-left)
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  // Plain causal attention (training, scoring) on the fp32 CPU GEMMs where they are oneDNN's; the rest in ATen.
  at::Tensor out = !mask && is_causal && past == 0
                       ? kernels::causal_attention(q, k, v, scale)
                       : at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, is_causal, scale,
                                                          /*enable_gqa=*/H != Hkv);
  out = out.transpose(1, 2).reshape({B, T, H * D});
  return attn.o_proj.forward(out);
}

at::Tensor Transformer::hidden_states(const ForwardInput& input) const {
  FH_CHECK(input.input_ids.dim() == 2, "input_ids must be (B, T), got ", input.input_ids.dim(), " dims");
  const int64_t B = input.input_ids.size(0), T = input.input_ids.size(1);
  at::Tensor position_ids = input.position_ids;
  if (!position_ids.defined()) {
    position_ids = at::arange(T, input.input_ids.options().dtype(at::kLong)).unsqueeze(0).expand({B, T});
  }
  auto [cos, sin] = rotary_.cos_sin(position_ids, dtype_);  // (B, T, D)
  at::Tensor h = at::embedding(embed_tokens_, input.input_ids);  // (B, T, C)
  const bool checkpoint = activation_checkpointing_ && at::GradMode::is_enabled();
  for (const DecoderLayer& layer : layers_) {
    if (checkpoint) {
      // The closure is called again in the backward pass: it holds its tensors by value.
      h = checkpointed_forward([this, &layer, cos = cos, sin = sin, segment_ids = input.segment_ids](
                                   const at::Tensor& x) { return layer_forward(layer, x, cos, sin, segment_ids); },
                               h);
    } else {
      h = layer_forward(layer, h, cos, sin, input.segment_ids);
    }
  }
  return norm_.forward(h);
}

at::Tensor Transformer::layer_forward(const DecoderLayer& layer, const at::Tensor& h, const at::Tensor& cos,
                                      const at::Tensor& sin, const at::Tensor& segment_ids, KvCache* cache,
                                      size_t layer_index) const {
  at::Tensor out =
      h + attention_forward(layer.self_attn, layer.input_layernorm.forward(h), cos, sin, segment_ids, cache, layer_index);
  const Mlp& mlp = layer.mlp;
  at::Tensor x = layer.post_attention_layernorm.forward(out);
  auto [gate, up] = forward_projections(group_forward_, std::array{&mlp.gate_proj, &mlp.up_proj}, x);  // (B, T, I)
  return out + mlp.down_proj.forward(kernels::swiglu(gate, up));  // silu(gate) * up
}

at::Tensor Transformer::hidden_states_cached(const at::Tensor& input_ids, KvCache& cache) const {
  FH_CHECK(input_ids.dim() == 2, "input_ids must be (B, T), got ", input_ids.dim(), " dims");
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  FH_CHECK(cache.keys.size() == layers_.size(), "KV cache has ", cache.keys.size(), " layers; the model ",
           layers_.size());
  FH_CHECK(cache.keys[0].size(0) == B, "KV cache is for ", cache.keys[0].size(0), " sequences, input has ", B);
  if (cache.length + T > cache.capacity()) {
    throw core::UsageError(absl::StrCat("KV cache: ", cache.length, " cached + ", T, " new positions exceed its capacity ",
                                        cache.capacity()));
  }
  at::Tensor position_ids =
      at::arange(cache.length, cache.length + T, input_ids.options().dtype(at::kLong)).unsqueeze(0).expand({B, T});
  auto [cos, sin] = rotary_.cos_sin(position_ids, dtype_);  // (B, T, D)
  at::Tensor h = at::embedding(embed_tokens_, input_ids);    // (B, T, C)
  for (size_t i = 0; i < layers_.size(); ++i) h = layer_forward(layers_[i], h, cos, sin, at::Tensor(), &cache, i);
  cache.length += T;
  return norm_.forward(h);
}

KvCache KvCache::allocate(const io::ModelConfig& config, int64_t batch, int64_t capacity,
                          const at::TensorOptions& options) {
  KvCache cache;
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    cache.keys.push_back(at::empty({batch, config.num_key_value_heads, capacity, config.head_dim}, options));
    cache.values.push_back(at::empty({batch, config.num_key_value_heads, capacity, config.head_dim}, options));
  }
  return cache;
}

at::Tensor Transformer::lm_head_forward(const at::Tensor& hidden) const { return lm_head_.forward(hidden); }

at::Tensor Transformer::forward(const ForwardInput& input) const { return lm_head_forward(hidden_states(input)); }

std::vector<Linear*> Transformer::projections() {
  std::vector<Linear*> out;
  for (DecoderLayer& layer : layers_) {
    for (Linear* l : {&layer.self_attn.q_proj, &layer.self_attn.k_proj, &layer.self_attn.v_proj,
                      &layer.self_attn.o_proj, &layer.mlp.gate_proj, &layer.mlp.up_proj, &layer.mlp.down_proj}) {
      out.push_back(l);
    }
  }
  return out;
}

std::vector<const Linear*> Transformer::projections() const {
  std::vector<const Linear*> out;
  for (Linear* l : const_cast<Transformer*>(this)->projections()) out.push_back(l);
  return out;
}

int64_t Transformer::num_parameters() const { return config_.num_parameters(); }

}  // namespace freehold::model
