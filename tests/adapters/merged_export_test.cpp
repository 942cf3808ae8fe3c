// export_merged_model on a tiny random Llama with adapters made by AdapterSet: the merged directory gives the
// logits of base + adapter (fp32, bf16, sharded), --verify passes on it and fails on an export with one module left
// unmerged, and every refusal (existing or input-replacing output, non-finite base, merge or cast) leaves no output
// and no temporary directory behind. Conformance against transformers and PEFT is tests/conformance/export_test.py.
#include "adapters/merged_export.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/full.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include <gtest/gtest.h>

#include "adapters/adapter_set.h"
#include "core/error.h"
#include "core/file.h"
#include "io/peft_adapter.h"
#include "io/weight_files.h"
#include "nlohmann/json.hpp"
#include "tests/model/tiny_checkpoint.h"

namespace freehold::adapters {
namespace {

namespace fs = std::filesystem;
using model::testing::llama_config_json;
using model::testing::make_temp_dir;
using model::testing::write_checkpoint;

// vocab 97, hidden 48, intermediate 80, 2 layers, 6 heads over 2 kv heads. Matrices are scaled up from the
// helper's std 0.05 to ~1/sqrt(fan_in) so logits are O(1) and an adapter visibly moves them.
std::string make_base(const std::string& tag, at::ScalarType dtype = at::kFloat,
                      const std::function<at::Tensor(const std::string&, at::Tensor)>& edit = nullptr) {
  std::string dir = make_temp_dir(tag);
  write_checkpoint(dir, llama_config_json(97, 48, 80, 2, 6, 2, dtype == at::kFloat ? "float32" : "bfloat16"), dtype,
                   5, [&](const std::string& name, at::Tensor t) {
                     if (t.dim() == 2) t = (t.to(at::kFloat) * 3.0).to(t.scalar_type());
                     return edit ? edit(name, t) : t;
                   });
  return dir;
}

const std::string& base_dir() {
  static const std::string dir = make_base("export_base");
  return dir;
}

// A PEFT adapter on every projection with B (and DoRA magnitudes) moved off their init.
std::string make_adapter(const std::string& base, bool dora, double b_std = 0.3) {
  std::string dir = make_temp_dir(dora ? "export_dora" : "export_lora");
  model::Transformer m = model::Transformer::load(base);
  LoraOptions o;
  o.r = 4;
  o.alpha = 8;
  o.use_dora = dora;
  AdapterSet set = AdapterSet::create(m, o, 11);
  at::NoGradGuard no_grad;
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(12);
  for (const auto& e : set.entries()) {
    e.adapter->lora_B().copy_(at::randn(e.adapter->lora_B().sizes(), g, at::kFloat) * b_std);
    if (dora) e.adapter->magnitude().mul_(1.0 + 0.2 * at::randn({e.adapter->magnitude().size(0)}, g, at::kFloat));
  }
  set.save(dir);
  return dir;
}

const std::string& lora_dir() {
  static const std::string dir = make_adapter(base_dir(), false);
  return dir;
}

at::Tensor logits(const model::Transformer& m) {
  at::NoGradGuard no_grad;
  at::Tensor ids = at::tensor(std::vector<int64_t>{3, 14, 15, 92, 65, 35, 89, 79, 32, 38}, at::kLong).unsqueeze(0);
  return m.forward({ids, {}, {}}).to(at::kFloat);
}

at::Tensor adapted_logits(const std::string& base, const std::string& adapter) {
  model::LoadOptions f32;
  f32.dtype = core::DType::kF32;
  model::Transformer m = model::Transformer::load(base, f32);
  AdapterSet set = AdapterSet::load(m, adapter);
  return logits(m);
}

at::Tensor merged_logits(const std::string& dir) {
  model::LoadOptions f32;
  f32.dtype = core::DType::kF32;
  return logits(model::Transformer::load(dir, f32));
}

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

MergedExportOptions options_for(const std::string& base, const std::string& adapter, const std::string& out) {
  MergedExportOptions o;
  o.base_dir = base;
  o.adapter_dir = adapter;
  o.out_dir = out;
  return o;
}

// Entries of `parent` other than `keep`: temporary directories an export left behind.
std::vector<std::string> leftovers(const std::string& parent, const std::set<std::string>& keep = {}) {
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(parent)) {
    if (!keep.count(entry.path().filename().string())) out.push_back(entry.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(MergedExportTest, LoraAndDoraExportsGiveTheAdapterLogits) {
  for (bool dora : {false, true}) {
    const std::string adapter = dora ? make_adapter(base_dir(), true) : lora_dir();
    const std::string out = make_temp_dir("export_out") + "/merged";
    MergedExportOptions o = options_for(base_dir(), adapter, out);
    o.verify = true;
    MergedExportSummary s = export_merged_model(o);
    EXPECT_EQ(s.merged, 14u);  // 7 projections x 2 layers
    EXPECT_EQ(s.tensors, 2u + 9u * 2u + 1u);
    EXPECT_EQ(s.shards, 1u);
    EXPECT_EQ(s.dtype, core::DType::kF32);
    ASSERT_TRUE(s.verify.has_value());
    EXPECT_LE(s.verify->max_abs_diff, 1e-5);
    const at::Tensor expected = adapted_logits(base_dir(), adapter);
    EXPECT_GT(max_diff(expected, merged_logits(base_dir())), 1e-1) << "the adapter changes the logits";
    EXPECT_LE(max_diff(merged_logits(out), expected), 1e-5) << (dora ? "dora" : "lora");
    // Only the config and the weights: the tiny base has no tokenizer files.
    EXPECT_EQ(leftovers(out), (std::vector<std::string>{"config.json", "model.safetensors"}));
  }
}

TEST(MergedExportTest, Bf16AndShardedExports) {
  const std::string out = make_temp_dir("export_out") + "/bf16";
  MergedExportOptions o = options_for(base_dir(), lora_dir(), out);
  o.dtype = core::DType::kBF16;
  o.max_shard_bytes = 20'000;  // the 97 x 48 embedding alone is 9.3 kB in bf16
  o.verify = true;
  MergedExportSummary s = export_merged_model(o);
  EXPECT_GT(s.shards, 3u);
  EXPECT_TRUE(fs::exists(out + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
  io::WeightFiles files = io::WeightFiles::open_model_dir(out);
  for (const std::string& name : files.names()) EXPECT_EQ(files.info(name).dtype, core::DType::kBF16) << name;
  auto config = nlohmann::json::parse(core::read_file(out + "/config.json"));
  EXPECT_EQ(config["dtype"], "bfloat16");
  ASSERT_TRUE(s.verify.has_value());
  EXPECT_GT(s.verify->max_abs_diff, 0.0);  // bf16 rounding shows
  EXPECT_LE(s.verify->max_abs_diff, s.verify->tolerance);
}

TEST(MergedExportTest, VerifyCatchesAModuleLeftUnmerged) {
  const std::string parent = make_temp_dir("export_out");
  MergedExportOptions o = options_for(base_dir(), lora_dir(), parent + "/wrong");
  o.verify = true;
  o.skip_merge_for_testing = {"model.layers.1.self_attn.v_proj"};
  try {
    export_merged_model(o);
    FAIL() << "verify passed an export with a module left unmerged";
  } catch (const core::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("--verify failed"), std::string::npos) << message;
    EXPECT_NE(message.find("max |merged - (base + adapter)| = "), std::string::npos) << message;
    EXPECT_NE(message.find("tolerance"), std::string::npos) << message;
  }
  EXPECT_EQ(leftovers(parent), std::vector<std::string>{}) << "no output, no temporary directory";

  // The same module list without verify writes the wrong export, and verify_merged_model on it fails too.
  o.verify = false;
  export_merged_model(o);
  EXPECT_THROW(verify_merged_model(base_dir(), lora_dir(), parent + "/wrong", core::DType::kF32), core::Error);
  o.skip_merge_for_testing = {"model.layers.1.self_attn.rotary"};
  o.out_dir = parent + "/other";
  EXPECT_THROW(export_merged_model(o), core::UsageError);
}

TEST(MergedExportTest, OutputRulesAndOverwrite) {
  const std::string parent = make_temp_dir("export_out");
  const std::string out = parent + "/merged";
  export_merged_model(options_for(base_dir(), lora_dir(), out));
  // An existing output is refused; --overwrite replaces it; the base or the adapter as output is refused.
  EXPECT_THROW(export_merged_model(options_for(base_dir(), lora_dir(), out)), core::UsageError);
  core::write_file_atomic(out + "/stale.txt", "old");
  MergedExportOptions o = options_for(base_dir(), lora_dir(), out + "/");
  o.overwrite = true;
  o.dtype = core::DType::kBF16;
  export_merged_model(o);
  EXPECT_FALSE(fs::exists(out + "/stale.txt"));
  EXPECT_EQ(io::WeightFiles::open_model_dir(out).info("model.norm.weight").dtype, core::DType::kBF16);
  EXPECT_EQ(leftovers(parent), std::vector<std::string>{"merged"});
  // An output that holds the base: a directory with the base inside it.
  const std::string holder = make_temp_dir("export_holder");
  const std::string inner = make_base("export_inner_unused");
  fs::rename(inner, holder + "/base");
  for (const auto& [base, input] : {std::pair{base_dir(), base_dir()}, std::pair{base_dir(), lora_dir()},
                                    std::pair{holder + "/base", holder}}) {
    MergedExportOptions bad = options_for(base, lora_dir(), input);
    bad.overwrite = true;
    try {
      export_merged_model(bad);
      ADD_FAILURE() << "exported over " << input;
    } catch (const core::UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("replace the input"), std::string::npos) << e.what();
    }
  }
}

TEST(MergedExportTest, TensorNamesAreNeverPaths) {
  // S19: a base tensor named like a path is exported under that name, inside a shard, and creates no file.
  const std::string base = make_base("export_path_names");
  const std::string evil = "../../escaped/model.safetensors";
  {
    io::WeightFiles files = io::WeightFiles::open_model_dir(base);
    std::vector<io::NamedTensor> tensors;
    for (const std::string& name : files.names()) tensors.push_back({name, files.read_copy(name)});
    tensors.push_back({evil, at::ones({3})});
    io::save_safetensors(base + "/model.safetensors", tensors);
  }
  const std::string parent = make_temp_dir("export_out");
  MergedExportOptions o = options_for(base, lora_dir(), parent + "/a/b");
  o.max_shard_bytes = 20'000;  // shards too, so the name also goes through the index
  export_merged_model(o);
  EXPECT_EQ(leftovers(parent), std::vector<std::string>{"a"});
  EXPECT_EQ(leftovers(parent + "/a"), std::vector<std::string>{"b"});
  io::WeightFiles out = io::WeightFiles::open_model_dir(parent + "/a/b");
  ASSERT_TRUE(out.contains(evil));
  EXPECT_TRUE(at::equal(out.tensor(evil), at::ones({3})));
  for (const std::string& file : leftovers(parent + "/a/b")) {
    EXPECT_TRUE(file == "config.json" || file == "model.safetensors.index.json" ||
                file.rfind("model-", 0) == 0) << file;
  }
}

std::string export_error(const MergedExportOptions& o) {
  try {
    export_merged_model(o);
  } catch (const core::FormatError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(MergedExportTest, NonFiniteResultsAreRefusedAndNothingIsWritten) {
  const std::string parent = make_temp_dir("export_out");
  // An adapter whose merge overflows float32 (finite tensors: the adapter itself loads).
  const std::string huge = make_temp_dir("export_huge");
  {
    io::PeftAdapter a = io::load_peft_adapter(lora_dir());
    std::vector<io::NamedTensor> tensors;
    for (const auto& [key, t] : a.tensors) {
      const bool hit = key.find("layers.1.mlp.up_proj") != std::string::npos;
      tensors.push_back({key, hit ? at::full(t.sizes(), 1e19, at::kFloat) : t});
    }
    io::save_peft_adapter(huge, a.config, tensors);
  }
  std::string message = export_error(options_for(base_dir(), huge, parent + "/a"));
  EXPECT_NE(message.find("model.layers.1.mlp.up_proj"), std::string::npos) << message;
  EXPECT_NE(message.find("NaN or Inf"), std::string::npos) << message;

  // A base weight with a NaN (S21).
  const std::string nan_base = make_base("export_nan_base", at::kFloat, [](const std::string& name, at::Tensor t) {
    if (name == "model.layers.0.post_attention_layernorm.weight") t[3].fill_(std::nan(""));
    return t;
  });
  message = export_error(options_for(nan_base, lora_dir(), parent + "/b"));
  EXPECT_NE(message.find("model.layers.0.post_attention_layernorm.weight"), std::string::npos) << message;

  // Finite values that float16 cannot hold.
  const std::string big_base = make_base("export_big_base", at::kFloat, [](const std::string& name, at::Tensor t) {
    if (name == "model.embed_tokens.weight") t[0][0].fill_(1e6);
    return t;
  });
  MergedExportOptions fp16 = options_for(big_base, lora_dir(), parent + "/c");
  fp16.dtype = core::DType::kF16;
  message = export_error(fp16);
  EXPECT_NE(message.find("model.embed_tokens.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("overflows F16"), std::string::npos) << message;

  EXPECT_EQ(leftovers(parent), std::vector<std::string>{});
}

TEST(MergedExportTest, ConfigDtypeIsRewrittenAndNothingElse) {
  // As transformers writes it: keys sorted, indent 2, a final newline.
  const std::string v5 = "{\n  \"architectures\": [\n    \"LlamaForCausalLM\"\n  ],\n  \"dtype\": \"float32\",\n"
                         "  \"rms_norm_eps\": 1e-05,\n  \"rope_parameters\": {\n    \"rope_theta\": 500000.0,\n"
                         "    \"rope_type\": \"default\"\n  },\n  \"vocab_size\": 320\n}\n";
  std::string expected = v5;
  expected.replace(expected.find("float32"), 7, "bfloat16");
  EXPECT_EQ(config_json_with_dtype(v5, core::DType::kBF16, "config.json"), expected);

  // transformers 4.x: torch_dtype updated, dtype added where sorted order puts it.
  const std::string v4 = "{\n  \"bos_token_id\": 1,\n  \"hidden_size\": 64,\n  \"torch_dtype\": \"bfloat16\",\n"
                         "  \"transformers_version\": \"4.45.0\"\n}\n";
  EXPECT_EQ(config_json_with_dtype(v4, core::DType::kF32, "config.json"),
            "{\n  \"bos_token_id\": 1,\n  \"dtype\": \"float32\",\n  \"hidden_size\": 64,\n"
            "  \"torch_dtype\": \"float32\",\n  \"transformers_version\": \"4.45.0\"\n}\n");

  // Unsorted keys: order kept, dtype appended; raw UTF-8 stays raw.
  EXPECT_EQ(config_json_with_dtype("{\"z\": \"\xC3\xA9\", \"a\": 1}", core::DType::kF16, "c"),
            "{\n  \"z\": \"\xC3\xA9\",\n  \"a\": 1,\n  \"dtype\": \"float16\"\n}");
  EXPECT_THROW(config_json_with_dtype("[1]", core::DType::kF16, "c"), core::FormatError);
}

}  // namespace
}  // namespace freehold::adapters
