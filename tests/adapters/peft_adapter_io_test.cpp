// io/peft_adapter: adapter_config.json reading (types, refusals, PEFT's leniency for unknown keys), writing (the
// field set PEFT 0.21.2 writes), tensor keys, and the refusals of load_peft_adapter / save_peft_adapter.
// (Kept with the adapter tests while tests/io/ is being reworked; it tests io/peft_adapter.cpp only.)
#include "io/peft_adapter.h"

#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

#include <sys/stat.h>

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/file.h"
#include "nlohmann/json.hpp"
#include "tests/model/tiny_checkpoint.h"

namespace freehold::io {
namespace {

std::string parse_error(const std::string& text) {
  try {
    parse_peft_adapter_config(text, "dir/adapter_config.json");
  } catch (const core::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted " << text;
  return "";
}

TEST(PeftAdapterConfigTest, ReadsWhatPeftWrites) {
  // The fields PEFT 0.21.2 wrote for a Qwen3 DoRA adapter with patterns (trimmed target list).
  PeftAdapterConfig c = parse_peft_adapter_config(R"({
    "alora_invocation_tokens": null, "alpha_pattern": {"v_proj": 3}, "arrow_config": null, "auto_mapping": null,
    "base_model_name_or_path": "/models/qwen3", "bias": "none", "corda_config": null, "ensure_weight_tying": false,
    "eva_config": null, "exclude_modules": null, "fan_in_fan_out": false, "inference_mode": true,
    "init_lora_weights": true, "kasa_config": null, "layer_replication": null, "layers_pattern": null,
    "layers_to_transform": null, "loftq_config": {}, "lora_alpha": 8, "lora_bias": false, "lora_dropout": 0.05,
    "lora_ga_config": null, "megatron_config": null, "megatron_core": "megatron.core", "modules_to_save": null,
    "monteclora_config": null, "peft_type": "LORA", "peft_version": "0.21.2", "qalora_group_size": 16, "r": 4,
    "rank_pattern": {"q_proj": 2, "layers\\.1\\..*": 6}, "revision": null,
    "target_modules": ["model.layers.1.self_attn.v_proj", "q_proj"], "target_parameters": null,
    "task_type": "CAUSAL_LM", "trainable_token_indices": null, "use_bdlora": null, "use_dora": true,
    "use_qalora": false, "use_rslora": false, "velora_config": null})",
                                                  "a.json");
  EXPECT_EQ(c.r, 4);
  EXPECT_EQ(c.lora_alpha, 8);
  EXPECT_DOUBLE_EQ(c.lora_dropout, 0.05);
  EXPECT_TRUE(c.use_dora);
  EXPECT_EQ(c.target_modules.kind, ModuleSelector::Kind::kNames);
  EXPECT_EQ(c.target_modules.names, (std::vector<std::string>{"model.layers.1.self_attn.v_proj", "q_proj"}));
  // File order is kept: the first matching key wins in PEFT.
  ASSERT_EQ(c.rank_pattern.size(), 2u);
  EXPECT_EQ(c.rank_pattern[0].first, "q_proj");
  EXPECT_EQ(c.rank_pattern[1].first, "layers\\.1\\..*");
  EXPECT_EQ(c.rank_pattern[1].second, 6);
  EXPECT_EQ(c.alpha_pattern[0].second, 3);
  EXPECT_EQ(*c.base_model_name_or_path, "/models/qwen3");
}

TEST(PeftAdapterConfigTest, MinimalAndStringForms) {
  PeftAdapterConfig c = parse_peft_adapter_config(
      R"({"peft_type": "LORA", "r": 16, "lora_alpha": 0.5, "target_modules": ".*q_proj", "task_type": null,
          "layers_to_transform": null, "init_lora_weights": "pissa_niter_4"})", "a.json");
  EXPECT_EQ(c.target_modules.kind, ModuleSelector::Kind::kRegex);
  EXPECT_EQ(c.target_modules.regex, ".*q_proj");
  EXPECT_EQ(c.lora_alpha, 0.5);
  EXPECT_EQ(c.task_type, "");
  EXPECT_EQ(c.init_lora_weights, "pissa_niter_4");
  c = parse_peft_adapter_config(R"({"peft_type": "LORA", "target_modules": ["q_proj"], "layers_to_transform": 1,
                                    "layers_pattern": "layers"})", "a.json");
  EXPECT_EQ(c.layers_to_transform, (std::vector<int64_t>{1}));
  EXPECT_EQ(c.layers_pattern, (std::vector<std::string>{"layers"}));
}

TEST(PeftAdapterConfigTest, WrongTypesNameFileKeyAndValue) {
  std::string e = parse_error(R"({"peft_type": "LORA", "r": "8"})");
  EXPECT_NE(e.find("dir/adapter_config.json"), std::string::npos) << e;
  EXPECT_NE(e.find("\"r\" is \"8\"; expected a positive integer"), std::string::npos) << e;
  EXPECT_NE(parse_error(R"({"peft_type": "LORA", "r": 0})").find("positive integer"), std::string::npos);
  EXPECT_NE(parse_error(R"({"peft_type": "LORA", "use_dora": "yes"})").find("\"use_dora\" is \"yes\""), std::string::npos);
  EXPECT_NE(parse_error(R"({"peft_type": "LORA", "target_modules": [1]})").find("target_modules"), std::string::npos);
  EXPECT_NE(parse_error(R"({"peft_type": "LORA", "rank_pattern": {"q": 1.5}})").find("rank_pattern.q"), std::string::npos);
  EXPECT_NE(parse_error(R"({"peft_type": "LORA", "lora_dropout": 2})").find("lora_dropout"), std::string::npos);
  EXPECT_NE(parse_error(R"({"r": 8})").find("\"peft_type\" is missing"), std::string::npos);
  EXPECT_NE(parse_error(R"([1])").find("JSON object"), std::string::npos);
  EXPECT_NE(parse_error(R"({"peft_type": "LORA",)").find("not valid JSON"), std::string::npos);
}

TEST(PeftAdapterConfigTest, RefusesWhatFreeholdDoesNotCompute) {
  struct Case {
    const char* field;
    const char* expect;
  };
  for (const Case& c : std::vector<Case>{
           {R"("peft_type": "IA3")", "\"LORA\" only"},
           {R"("bias": "all")", "\"none\" only"},
           {R"("bias": "lora_only")", "\"none\" only"},
           {R"("fan_in_fan_out": true)", "false only"},
           {R"("modules_to_save": ["lm_head"])", "merge_and_unload"},
           {R"("lora_bias": true)", "lora_B"},
           {R"("use_qalora": true)", "QALoRA"},
           {R"("alora_invocation_tokens": [5, 6])", "activated LoRA"},
           {R"("trainable_token_indices": [1])", "embedding rows"},
           {R"("layer_replication": [[0, 2]])", "replicated"},
           {R"("target_parameters": ["experts.w"])", "nn.Parameter"},
           {R"("init_lora_weights": "mica")", "MiCA"},
           {R"("task_type": "SEQ_CLS")", "CAUSAL_LM"},
       }) {
    std::string text = absl::StrCat(R"({"r": 8, )", c.field, c.field[1] == 'p' ? "" : R"(, "peft_type": "LORA")", "}");
    std::string e = parse_error(text);
    EXPECT_NE(e.find(c.expect), std::string::npos) << text << " → " << e;
    EXPECT_NE(e.find("dir/adapter_config.json"), std::string::npos) << e;
  }
  // PEFT's own consistency rules.
  EXPECT_NE(parse_error(R"({"peft_type": "LORA", "target_modules": ".*", "layers_to_transform": [0]})").find("cannot be used"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"peft_type": "LORA", "target_modules": ["q"], "layers_pattern": "layers"})").find("needs"),
            std::string::npos);
}

TEST(PeftAdapterConfigTest, IgnoresWhatPeftIgnores) {
  // Init-only settings, and keys a newer PEFT may add (PEFT drops those with a warning).
  PeftAdapterConfig c = parse_peft_adapter_config(
      R"({"peft_type": "LORA", "loftq_config": {"loftq_bits": 4}, "eva_config": {"rho": 2.0}, "megatron_config": {},
          "runtime_config": {"ephemeral_gpu_offload": false}, "some_future_field": 3, "modules_to_save": [],
          "target_parameters": []})", "a.json");
  EXPECT_EQ(c.r, 8);
}

TEST(PeftAdapterConfigTest, WritesEveryPeftFieldAndReadsBack) {
  PeftAdapterConfig c;
  c.r = 6;
  c.lora_alpha = 12;
  c.lora_dropout = 0.1;
  c.use_rslora = true;
  c.target_modules = ModuleSelector::of_names({"v_proj", "q_proj"});
  c.exclude_modules = ModuleSelector::of_regex(".*layers\\.0\\..*");
  c.rank_pattern = {{"q_proj", 2}};
  c.alpha_pattern = {{"v_proj", 2.5}};
  c.base_model_name_or_path = "/m";
  std::string text = peft_adapter_config_json(c);
  nlohmann::json j = nlohmann::json::parse(text);
  // The key set PEFT 0.21.2's LoraConfig.save_pretrained writes.
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "alora_invocation_tokens", "alpha_pattern", "arrow_config", "auto_mapping", "base_model_name_or_path",
                      "bias", "corda_config", "ensure_weight_tying", "eva_config", "exclude_modules", "fan_in_fan_out",
                      "inference_mode", "init_lora_weights", "kasa_config", "layer_replication", "layers_pattern",
                      "layers_to_transform", "loftq_config", "lora_alpha", "lora_bias", "lora_dropout", "lora_ga_config",
                      "megatron_config", "megatron_core", "modules_to_save", "monteclora_config", "peft_type",
                      "peft_version", "qalora_group_size", "r", "rank_pattern", "revision", "target_modules",
                      "target_parameters", "task_type", "trainable_token_indices", "use_bdlora", "use_dora",
                      "use_qalora", "use_rslora", "velora_config"}));
  EXPECT_EQ(j["lora_alpha"], 12);
  EXPECT_TRUE(j["lora_alpha"].is_number_integer()) << "integral alphas are written as PEFT's int";
  EXPECT_EQ(j["alpha_pattern"]["v_proj"], 2.5);
  EXPECT_EQ(j["target_modules"], nlohmann::json({"q_proj", "v_proj"}));
  EXPECT_EQ(j["init_lora_weights"], true);
  EXPECT_EQ(j["peft_version"], kPeftFormatVersion);
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  PeftAdapterConfig back = parse_peft_adapter_config(text, "x");
  EXPECT_EQ(back.r, 6);
  EXPECT_TRUE(back.use_rslora);
  EXPECT_EQ(back.exclude_modules.regex, ".*layers\\.0\\..*");
  EXPECT_EQ(back.rank_pattern, c.rank_pattern);
  EXPECT_EQ(back.alpha_pattern, c.alpha_pattern);
}

TEST(PeftTensorKeyTest, KeysRoundTrip) {
  for (PeftTensorKind kind : {PeftTensorKind::kLoraA, PeftTensorKind::kLoraB, PeftTensorKind::kMagnitude}) {
    std::string key = peft_tensor_key("model.layers.3.mlp.up_proj", kind);
    auto parsed = parse_peft_tensor_key(key);
    ASSERT_TRUE(parsed) << key;
    EXPECT_EQ(parsed->module, "model.layers.3.mlp.up_proj");
    EXPECT_EQ(parsed->kind, kind);
  }
  EXPECT_EQ(peft_tensor_key("m.q", PeftTensorKind::kLoraA), "base_model.model.m.q.lora_A.weight");
  EXPECT_EQ(peft_tensor_key("m.q", PeftTensorKind::kMagnitude), "base_model.model.m.q.lora_magnitude_vector");
  for (const char* bad : {"model.layers.0.q_proj.lora_A.weight", "base_model.model.m.q.lora_A.default.weight",
                          "base_model.model.m.q.lora_B.bias", "base_model.model.lm_head.weight",
                          "base_model.model..lora_A.weight", "base_model.model.m.q.lora_embedding_A"}) {
    EXPECT_FALSE(parse_peft_tensor_key(bad)) << bad;
  }
}

PeftAdapterConfig q_config() {
  PeftAdapterConfig c;
  c.r = 2;
  c.target_modules = ModuleSelector::of_names({"q_proj"});
  return c;
}

TEST(PeftAdapterFilesTest, SaveAndLoad) {
  std::string dir = model::testing::make_temp_dir("peft_io") + "/adapter";  // created by save
  std::vector<NamedTensor> tensors = {{peft_tensor_key("model.layers.0.self_attn.q_proj", PeftTensorKind::kLoraA), at::ones({2, 8})},
                                      {peft_tensor_key("model.layers.0.self_attn.q_proj", PeftTensorKind::kLoraB), at::zeros({8, 2})}};
  save_peft_adapter(dir, q_config(), tensors);
  PeftAdapter a = load_peft_adapter(dir);
  EXPECT_EQ(a.config.r, 2);
  ASSERT_EQ(a.tensors.size(), 2u);
  EXPECT_EQ(a.tensors.at(tensors[0].name).sizes(), (std::vector<int64_t>{2, 8}));
}

TEST(PeftAdapterFilesTest, RefusesEmptyNonFiniteAndForeignTensors) {
  std::string dir = model::testing::make_temp_dir("peft_refuse");
  try {
    save_peft_adapter(dir, q_config(), {});
    ADD_FAILURE();
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("without tensors"), std::string::npos);
  }
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::string name = peft_tensor_key("model.layers.0.self_attn.q_proj", PeftTensorKind::kLoraA);
    try {
      save_peft_adapter(dir, q_config(), {{name, at::full({2, 8}, bad)}});
      ADD_FAILURE();
    } catch (const core::Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("NaN or Inf"), std::string::npos) << e.what();
    }
  }
  struct stat st {};
  EXPECT_NE(::stat((dir + "/" + kAdapterWeightsFile).c_str(), &st), 0) << "nothing was written";
  // A file written by someone else with a non-finite value, or a modules_to_save copy, is refused on load.
  core::write_file_atomic(dir + "/" + kAdapterConfigFile, peft_adapter_config_json(q_config()));
  save_safetensors(dir + "/" + kAdapterWeightsFile,
                   {{peft_tensor_key("model.layers.0.self_attn.q_proj", PeftTensorKind::kLoraA), at::full({2, 8}, NAN)}});
  EXPECT_THROW(load_peft_adapter(dir), core::FormatError);
  save_safetensors(dir + "/" + kAdapterWeightsFile, {{"base_model.model.lm_head.modules_to_save.weight", at::ones({2, 8})}});
  try {
    load_peft_adapter(dir);
    ADD_FAILURE();
  } catch (const core::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("lm_head.modules_to_save.weight"), std::string::npos) << e.what();
  }
}

TEST(PeftAdapterFilesTest, PickleIsRefusedWithAHint) {
  std::string dir = model::testing::make_temp_dir("peft_bin");
  core::write_file_atomic(dir + "/" + kAdapterConfigFile, peft_adapter_config_json(q_config()));
  core::write_file_atomic(dir + "/adapter_model.bin", std::string("\x80\x02}q\x00.", 6));
  try {
    load_peft_adapter(dir);
    ADD_FAILURE();
  } catch (const core::FormatError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("adapter_model.bin"), std::string::npos) << m;
    EXPECT_NE(m.find("never loads"), std::string::npos) << m;
    EXPECT_NE(m.find("save_file(torch.load("), std::string::npos) << m;
  }
  std::string empty = model::testing::make_temp_dir("peft_none");
  EXPECT_THROW(load_peft_adapter(empty), core::FormatError);
}

}  // namespace
}  // namespace freehold::io
