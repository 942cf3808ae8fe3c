#include "io/hf_config.h"

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace freehold::io {
namespace {

// A transformers 5.x Llama config.json, with `rope_parameters` and `dtype`.
const char* kLlamaV5 = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
  "vocab_size": 320, "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
  "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
  "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
  "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false, "dtype": "bfloat16",
  "eos_token_id": [1, 2], "bos_token_id": 0
})";

// The same model as transformers 4.x wrote it: top-level `rope_theta`, `rope_scaling`, `torch_dtype`.
const char* kLlamaV4 = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
  "vocab_size": 320, "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
  "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
  "rope_theta": 500000.0,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 32},
  "torch_dtype": "bfloat16", "eos_token_id": 2
})";

std::string replace(std::string text, const std::string& from, const std::string& to) {
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

std::string error_of(const std::string& json) {
  try {
    parse_model_config(json, "m/config.json");
  } catch (const core::FormatError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for " << json;
  return "";
}

TEST(HfConfigTest, ReadsBothConfigGenerationsTheSameWay) {
  ModelConfig v5 = parse_model_config(kLlamaV5, "v5/config.json");
  ModelConfig v4 = parse_model_config(kLlamaV4, "v4/config.json");
  for (const ModelConfig* c : {&v5, &v4}) {
    EXPECT_EQ(c->architecture, Architecture::kLlama);
    EXPECT_EQ(c->head_dim, 8);
    EXPECT_EQ(c->num_key_value_heads, 2);
    EXPECT_EQ(c->rope.type, RopeType::kLlama3);
    EXPECT_DOUBLE_EQ(c->rope.theta, 500000.0);
    EXPECT_DOUBLE_EQ(c->rope.factor, 8.0);
    EXPECT_EQ(c->rope.original_max_position_embeddings, 32);
    EXPECT_EQ(c->stored_dtype, core::DType::kBF16);
    EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  }
  EXPECT_EQ(v5.eos_token_ids, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(v4.eos_token_ids, (std::vector<int64_t>{2}));
}

TEST(HfConfigTest, FamilySpecificStructure) {
  std::string qwen2 = replace(replace(kLlamaV5, "LlamaForCausalLM", "Qwen2ForCausalLM"), "\"llama\"", "\"qwen2\"");
  ModelConfig q2 = parse_model_config(qwen2, "q2");
  EXPECT_TRUE(q2.qkv_bias);  // Qwen2 always has q/k/v bias, whatever attention_bias says
  EXPECT_FALSE(q2.o_bias);
  EXPECT_FALSE(q2.qk_norm);

  std::string qwen3 = replace(replace(kLlamaV5, "LlamaForCausalLM", "Qwen3ForCausalLM"), "\"llama\"", "\"qwen3\"");
  qwen3 = replace(qwen3, "\"hidden_act\"", "\"head_dim\": 16, \"hidden_act\"");
  ModelConfig q3 = parse_model_config(qwen3, "q3");
  EXPECT_TRUE(q3.qk_norm);
  EXPECT_EQ(q3.head_dim, 16);  // explicit, not hidden / heads

  std::string mistral = replace(replace(kLlamaV5, "LlamaForCausalLM", "MistralForCausalLM"), "\"llama\"", "\"mistral\"");
  mistral = replace(mistral, "\"hidden_act\"", "\"sliding_window\": 16, \"hidden_act\"");
  ModelConfig m = parse_model_config(mistral, "m");
  ASSERT_EQ(m.layer_sliding_window.size(), 2u);
  EXPECT_EQ(m.layer_sliding_window[0], 16);
  EXPECT_EQ(m.layer_sliding_window[1], 16);
}

TEST(HfConfigTest, QwenSlidingWindowFollowsLayerTypesOnlyWhenEnabled) {
  std::string base = replace(replace(kLlamaV5, "LlamaForCausalLM", "Qwen2ForCausalLM"), "\"llama\"", "\"qwen2\"");
  std::string off = replace(base, "\"hidden_act\"", "\"sliding_window\": 8, \"use_sliding_window\": false, \"hidden_act\"");
  for (const auto& w : parse_model_config(off, "q").layer_sliding_window) EXPECT_FALSE(w.has_value());
  std::string on = replace(base, "\"hidden_act\"",
                           "\"sliding_window\": 8, \"use_sliding_window\": true, "
                           "\"layer_types\": [\"full_attention\", \"sliding_attention\"], \"hidden_act\"");
  ModelConfig c = parse_model_config(on, "q");
  EXPECT_FALSE(c.layer_sliding_window[0].has_value());
  EXPECT_EQ(c.layer_sliding_window[1], 8);
}

TEST(HfConfigTest, RefusesWhatItCannotRunWithKeyValueAndAlternatives) {
  std::string e = error_of(replace(kLlamaV5, "LlamaForCausalLM", "GPT2LMHeadModel"));
  EXPECT_NE(e.find("architectures"), std::string::npos) << e;
  EXPECT_NE(e.find("GPT2LMHeadModel"), std::string::npos) << e;
  EXPECT_NE(e.find("Qwen3ForCausalLM"), std::string::npos) << e;

  e = error_of(replace(kLlamaV5, "\"llama3\"", "\"longrope\""));
  EXPECT_NE(e.find("rope_parameters.rope_type"), std::string::npos) << e;
  EXPECT_NE(e.find("longrope"), std::string::npos) << e;
  EXPECT_NE(e.find("yarn"), std::string::npos) << e;

  e = error_of(replace(kLlamaV5, "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"));
  EXPECT_NE(e.find("num_key_value_heads"), std::string::npos) << e;
  EXPECT_NE(e.find("3"), std::string::npos) << e;

  e = error_of(replace(kLlamaV5, "\"hidden_size\": 64,", ""));
  EXPECT_NE(e.find("\"hidden_size\" is missing"), std::string::npos) << e;

  e = error_of(replace(kLlamaV5, "\"vocab_size\": 320", "\"vocab_size\": -4"));
  EXPECT_NE(e.find("vocab_size"), std::string::npos) << e;

  e = error_of(replace(kLlamaV5, "\"silu\"", "\"gelu\""));
  EXPECT_NE(e.find("hidden_act"), std::string::npos) << e;

  e = error_of(replace(kLlamaV5, "\"bfloat16\"", "\"float8\""));
  EXPECT_NE(e.find("float8"), std::string::npos) << e;

  e = error_of("[1, 2]");
  EXPECT_NE(e.find("m/config.json"), std::string::npos) << e;
  e = error_of("{not json");
  EXPECT_NE(e.find("not valid JSON"), std::string::npos) << e;
}

TEST(HfConfigTest, ParameterCountMatchesTheTensorsOfEachStructure) {
  ModelConfig c = parse_model_config(kLlamaV5, "m");
  // embed + lm_head + per layer (q 64·64, k 64·16, v 64·16, o 64·64, mlp 3·64·172, 2 norms) + final norm
  const int64_t per_layer = 64 * 64 * 2 + 64 * 16 * 2 + 3 * 64 * 172 + 2 * 64;
  EXPECT_EQ(c.num_parameters(), 2 * 320 * 64 + 2 * per_layer + 64);
}

}  // namespace
}  // namespace freehold::io
