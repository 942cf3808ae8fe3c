#include "tests/model/tiny_checkpoint.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <stdlib.h>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "model/transformer.h"

namespace freehold::model::testing {

std::string llama_config_json(int64_t vocab, int64_t hidden, int64_t intermediate, int64_t layers, int64_t heads,
                              int64_t kv_heads, const std::string& dtype_name) {
  return absl::StrCat(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": )", vocab,
                      R"(, "hidden_size": )", hidden, R"(, "intermediate_size": )", intermediate,
                      R"(, "num_hidden_layers": )", layers, R"(, "num_attention_heads": )", heads,
                      R"(, "num_key_value_heads": )", kv_heads,
                      R"(, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "hidden_act": "silu",
                         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
                         "tie_word_embeddings": false, "dtype": ")",
                      dtype_name, R"("})");
}

void write_checkpoint(const std::string& dir, const std::string& config_json, at::ScalarType dtype, uint64_t seed,
                      const std::function<at::Tensor(const std::string&, at::Tensor)>& edit) {
  io::ModelConfig c = io::parse_model_config(config_json, dir + "/config.json");
  core::write_file_atomic(dir + "/config.json", config_json);
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  gen.set_current_seed(seed);
  std::vector<io::NamedTensor> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool is_norm) {
    at::Tensor t = at::randn(shape, gen, at::kFloat) * 0.05;
    if (is_norm) t = t + 1.0;
    t = t.to(dtype);
    if (edit) t = edit(name, t);
    if (t.defined()) tensors.push_back({name, t});
  };
  const int64_t C = c.hidden_size, D = c.head_dim, H = c.num_attention_heads, Hkv = c.num_key_value_heads;
  add("model.embed_tokens.weight", {c.vocab_size, C}, false);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    std::string p = absl::StrCat("model.layers.", i, ".");
    add(p + "input_layernorm.weight", {C}, true);
    add(p + "post_attention_layernorm.weight", {C}, true);
    add(p + "self_attn.q_proj.weight", {H * D, C}, false);
    add(p + "self_attn.k_proj.weight", {Hkv * D, C}, false);
    add(p + "self_attn.v_proj.weight", {Hkv * D, C}, false);
    add(p + "self_attn.o_proj.weight", {C, H * D}, false);
    add(p + "mlp.gate_proj.weight", {c.intermediate_size, C}, false);
    add(p + "mlp.up_proj.weight", {c.intermediate_size, C}, false);
    add(p + "mlp.down_proj.weight", {C, c.intermediate_size}, false);
  }
  add("model.norm.weight", {C}, true);
  add("lm_head.weight", {c.vocab_size, C}, false);
  io::save_safetensors(dir + "/model.safetensors", tensors);
}

std::string make_temp_dir(const std::string& tag) {
  std::string pattern = ::testing::TempDir() + "freehold_" + tag + "_XXXXXX";
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

}  // namespace freehold::model::testing
