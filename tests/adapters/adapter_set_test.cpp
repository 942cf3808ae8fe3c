// AdapterSet on a tiny random Llama: attach from options, parameter bookkeeping, save → load round trips, and
// the S24 checks of an adapter that does not fit its base.
#include "adapters/adapter_set.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/file.h"
#include "io/peft_adapter.h"
#include "io/weight_files.h"
#include "tests/model/tiny_checkpoint.h"

namespace freehold::adapters {
namespace {

using model::testing::llama_config_json;
using model::testing::make_temp_dir;
using model::testing::write_checkpoint;

// vocab 97, hidden 48, intermediate 80, 2 layers, 6 heads over 2 kv heads (head_dim 8): k/v_proj are (16, 48).
const std::string& base_dir() {
  static const std::string dir = [] {
    std::string d = make_temp_dir("adapter_base");
    write_checkpoint(d, llama_config_json(97, 48, 80, 2, 6, 2, "float32"), at::kFloat, 3);
    return d;
  }();
  return dir;
}

model::Transformer load_base() { return model::Transformer::load(base_dir()); }

at::Tensor logits(const model::Transformer& m) {
  at::NoGradGuard no_grad;
  at::Tensor ids = at::tensor(std::vector<int64_t>{3, 14, 15, 92, 65, 35, 89, 79}, at::kLong).unsqueeze(0);
  return m.forward({ids, {}, {}});
}

// Makes every B non-zero (and every DoRA magnitude off its init) so an adapter changes the logits.
void randomize(const AdapterSet& set, uint64_t seed) {
  at::NoGradGuard no_grad;
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (const auto& e : set.entries()) {
    e.adapter->lora_B().copy_(at::randn(e.adapter->lora_B().sizes(), g, at::kFloat) * 0.1);
    if (e.adapter->magnitude().defined()) e.adapter->magnitude().mul_(1.0 + 0.1 * at::randn({e.adapter->magnitude().size(0)}, g, at::kFloat));
  }
}

std::string load_error(const std::string& adapter_dir) {
  model::Transformer m = load_base();
  try {
    AdapterSet::load(m, adapter_dir);
  } catch (const core::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "loaded " << adapter_dir;
  return "";
}

LoraOptions small_options() {
  LoraOptions o;
  o.r = 4;
  o.alpha = 8;
  o.dropout = 0.0;
  return o;
}

TEST(AdapterSetTest, DefaultInitLeavesTheModelUnchangedAndCountsParameters) {
  model::Transformer base = load_base();
  at::Tensor before = logits(base);
  model::Transformer m = load_base();
  LoraOptions o = small_options();
  AdapterSet set = AdapterSet::create(m, o, 1);
  ASSERT_EQ(set.entries().size(), 14u);
  EXPECT_TRUE(at::equal(logits(m), before)) << "B = 0: the adapter adds exactly zero";
  // Per layer: q (48 in, 48 out), k and v (48, 16), o (48, 48), gate and up (48, 80), down (80, 48).
  const int64_t per_layer = 4 * ((48 + 48) + 2 * (48 + 16) + (48 + 48) + 2 * (48 + 80) + (80 + 48));
  EXPECT_EQ(set.num_parameters(), 2 * per_layer);
  for (const io::NamedTensor& p : set.parameters()) {
    EXPECT_TRUE(p.tensor.requires_grad()) << p.name;
    EXPECT_TRUE(io::parse_peft_tensor_key(p.name).has_value()) << p.name;
  }
  o.use_dora = true;
  model::Transformer d = load_base();
  AdapterSet dora = AdapterSet::create(d, o, 1);
  EXPECT_EQ(dora.num_parameters(), 2 * per_layer + 2 * (48 + 16 + 16 + 48 + 80 + 80 + 48));
  EXPECT_LT((logits(d) - before).abs().max().item<float>(), 1e-5);
}

TEST(AdapterSetTest, SaveLoadRoundTripGivesTheSameLogits) {
  for (bool dora : {false, true}) {
    model::Transformer m = load_base();
    LoraOptions o = small_options();
    o.use_dora = dora;
    o.use_rslora = dora;
    o.target_modules = {"all-linear"};
    o.rank_pattern = {{"down_proj", 2}};
    o.alpha_pattern = {{R"(layers\.1\..*)", 3}};
    o.init = "gaussian";
    AdapterSet set = AdapterSet::create(m, o, 5);
    randomize(set, 6);
    at::Tensor expected = logits(m);
    EXPECT_GT((expected - logits(load_base())).abs().max().item<float>(), 1e-3) << "the adapter matters";
    std::string dir = make_temp_dir("roundtrip");
    set.save(dir);

    model::Transformer m2 = load_base();
    AdapterSet loaded = AdapterSet::load(m2, dir);
    EXPECT_TRUE(at::equal(logits(m2), expected)) << "dora " << dora;
    ASSERT_EQ(loaded.entries().size(), set.entries().size());
    for (size_t i = 0; i < set.entries().size(); ++i) {
      EXPECT_EQ(loaded.entries()[i].adapter->options().r, set.entries()[i].adapter->options().r);
      EXPECT_EQ(loaded.entries()[i].adapter->scale(), set.entries()[i].adapter->scale());
    }
    EXPECT_EQ(loaded.entries()[6].adapter->options().r, 2);  // layers.0.mlp.down_proj
    // all-linear is saved as the list of projection names PEFT would target.
    const io::PeftAdapterConfig& c = loaded.config();
    EXPECT_EQ(c.target_modules.names, (std::vector<std::string>{"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                                                "up_proj", "v_proj"}));
  }
}

TEST(AdapterSetTest, LayersAndExcludeSelectModules) {
  model::Transformer m = load_base();
  LoraOptions o = small_options();
  o.target_modules = {"all-linear"};
  o.layers = {1};
  o.exclude_modules = {"mlp.down_proj"};
  AdapterSet set = AdapterSet::create(m, o, 1);
  std::vector<std::string> names;
  for (const auto& e : set.entries()) names.push_back(e.module);
  EXPECT_EQ(names, (std::vector<std::string>{"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj",
                                             "model.layers.1.self_attn.v_proj", "model.layers.1.self_attn.o_proj",
                                             "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj"}));
}

TEST(AdapterSetTest, PissaKeepsTheModelAndRecordsTheResidual) {
  model::Transformer base = load_base();
  model::Transformer m = load_base();
  LoraOptions o = small_options();
  o.target_modules = {"q_proj", "down_proj"};
  o.init = "pissa";
  AdapterSet set = AdapterSet::create(m, o, 1);
  EXPECT_LT((logits(m) - logits(base)).abs().max().item<float>(), 1e-4) << "W_res + s·BA = W";
  std::vector<io::NamedTensor> residuals = set.residual_base_weights();
  ASSERT_EQ(residuals.size(), 4u);
  EXPECT_EQ(residuals[0].name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_TRUE(at::equal(residuals[0].tensor, m.layers()[0].self_attn.q_proj.weight()));
  EXPECT_FALSE(at::equal(residuals[0].tensor, base.layers()[0].self_attn.q_proj.weight()));
}

TEST(AdapterSetTest, TrainingModeSwitchesDropout) {
  model::Transformer m = load_base();
  LoraOptions o = small_options();
  o.dropout = 0.5;
  AdapterSet set = AdapterSet::create(m, o, 1);
  randomize(set, 2);
  at::Tensor eval = logits(m);
  set.set_training(true);
  EXPECT_GT((logits(m) - eval).abs().max().item<float>(), 1e-4);
  set.set_training(false);
  EXPECT_TRUE(at::equal(logits(m), eval));
}

TEST(AdapterSetTest, BadOptionsAreUsageErrors) {
  model::Transformer m = load_base();
  LoraOptions o = small_options();
  o.target_modules = {"q_proj", "input_layernorm"};
  EXPECT_THROW(AdapterSet::create(m, o, 1), core::UsageError);
  o.target_modules = {"q_proj"};
  o.r = 0;
  o.init = "svd";
  try {
    AdapterSet::create(m, o, 1);
    ADD_FAILURE();
  } catch (const core::UsageError& e) {
    // Every problem at once.
    EXPECT_NE(std::string(e.what()).find("adapter.r"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("adapter.init"), std::string::npos) << e.what();
  }
}

// Saves a randomized adapter, lets `edit` change its tensors, rewrites the file.
std::string saved_adapter(const std::function<void(std::map<std::string, at::Tensor>&)>& edit, bool dora = false) {
  model::Transformer m = load_base();
  LoraOptions o = small_options();
  o.use_dora = dora;
  o.target_modules = {"q_proj", "v_proj"};
  AdapterSet set = AdapterSet::create(m, o, 1);
  randomize(set, 2);
  std::string dir = make_temp_dir("s24");
  set.save(dir);
  std::map<std::string, at::Tensor> tensors;
  for (const io::NamedTensor& t : set.parameters()) tensors[t.name] = t.tensor.detach();
  edit(tensors);
  std::vector<io::NamedTensor> out;
  for (auto& [name, t] : tensors) out.push_back({name, t});
  io::save_safetensors(dir + "/" + io::kAdapterWeightsFile, out);
  return dir;
}

const std::string kQ0A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
const std::string kV1B = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight";

TEST(AdapterSetTest, S24_RankMismatchNamesTheTensorAndBothShapes) {
  std::string e = load_error(saved_adapter([](auto& t) { t[kQ0A] = at::randn({8, 48}); }));
  EXPECT_NE(e.find(kQ0A), std::string::npos) << e;
  EXPECT_NE(e.find("[8, 48]"), std::string::npos) << e;
  EXPECT_NE(e.find("[4, 48]"), std::string::npos) << e;
  EXPECT_NE(e.find("r 4"), std::string::npos) << e;
}

TEST(AdapterSetTest, S24_WrongOutFeaturesNamesTheTensor) {
  std::string e = load_error(saved_adapter([](auto& t) { t[kV1B] = at::randn({48, 4}); }));
  EXPECT_NE(e.find(kV1B), std::string::npos) << e;
  EXPECT_NE(e.find("has shape [48, 4]; expected [16, 4]"), std::string::npos) << e;
}

TEST(AdapterSetTest, S24_MissingTensorAndForeignModule) {
  std::string e = load_error(saved_adapter([](auto& t) { t.erase(kV1B); }));
  EXPECT_NE(e.find("missing tensor \"" + kV1B + "\" (expected shape [16, 4])"), std::string::npos) << e;
  e = load_error(saved_adapter([](auto& t) {
    t["base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"] = at::randn({4, 48});
  }));
  EXPECT_NE(e.find("model.layers.7.self_attn.q_proj does not exist in the base model"), std::string::npos) << e;
  e = load_error(saved_adapter([](auto& t) {
    t["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = at::randn({4, 48});
  }));
  EXPECT_NE(e.find("is not targeted"), std::string::npos) << e;
  e = load_error(saved_adapter([](auto& t) { t.erase("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"); }, true));
  EXPECT_NE(e.find("lora_magnitude_vector\" (expected shape [48])"), std::string::npos) << e;
}

TEST(AdapterSetTest, S24_AdapterForAnotherModelSize) {
  // An adapter saved on a model with hidden size 48 does not fit one with hidden size 32.
  std::string other = make_temp_dir("other_base");
  write_checkpoint(other, llama_config_json(97, 32, 80, 2, 4, 2, "float32"), at::kFloat, 3);
  std::string adapter = saved_adapter([](auto&) {});
  model::Transformer m = model::Transformer::load(other);
  try {
    AdapterSet::load(m, adapter);
    ADD_FAILURE();
  } catch (const core::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("expected [4, 32]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace freehold::adapters
