// PEFT's targeting rules on the module names of a two-layer Llama (and a Qwen3 with q_norm/k_norm). The
// conformance test tests/conformance/peft_adapter_test.py checks the same rules against PEFT itself.
#include "adapters/targeting.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace freehold::adapters {
namespace {

std::vector<ModuleInfo> llama_modules(int layers, bool qk_norm = false) {
  std::vector<ModuleInfo> out = {{"model", false}, {"model.embed_tokens", false}, {"model.layers", false}};
  for (int i = 0; i < layers; ++i) {
    std::string l = "model.layers." + std::to_string(i);
    out.push_back({l, false});
    out.push_back({l + ".self_attn", false});
    for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"}) out.push_back({l + ".self_attn." + p, true});
    if (qk_norm) out.push_back({l + ".self_attn.q_norm", false}), out.push_back({l + ".self_attn.k_norm", false});
    out.push_back({l + ".mlp", false});
    for (const char* p : {"gate_proj", "up_proj", "down_proj"}) out.push_back({l + ".mlp." + p, true});
    out.push_back({l + ".mlp.act_fn", false});
    out.push_back({l + ".input_layernorm", false});
    out.push_back({l + ".post_attention_layernorm", false});
  }
  out.push_back({"model.norm", false});
  out.push_back({"model.rotary_emb", false});
  out.push_back({"lm_head", true});
  return out;
}

io::PeftAdapterConfig config_with(io::ModuleSelector targets) {
  io::PeftAdapterConfig c;
  c.r = 8;
  c.lora_alpha = 16;
  c.target_modules = std::move(targets);
  return c;
}

std::vector<std::string> names(const std::vector<TargetedModule>& t) {
  std::vector<std::string> out;
  for (const auto& m : t) out.push_back(m.name);
  return out;
}

std::string error_of(const io::PeftAdapterConfig& c, const std::vector<ModuleInfo>& modules,
                     Strictness s = Strictness::kConfig) {
  try {
    match_targets(c, modules, s);
  } catch (const core::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

TEST(TargetingTest, SuffixMatchesWholeNameComponentsOnly) {
  auto t = match_targets(config_with(io::ModuleSelector::of_names({"q_proj", "mlp.down_proj"})), llama_modules(2),
                         Strictness::kConfig);
  EXPECT_EQ(names(t), (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj",
                                                "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"}));
  // "proj" is not a dotted suffix of "q_proj": PEFT matches on "." + entry.
  EXPECT_NE(error_of(config_with(io::ModuleSelector::of_names({"proj"})), llama_modules(2)).find("matches no module"),
            std::string::npos);
}

TEST(TargetingTest, AllLinearLeavesOutTheLmHead) {
  auto t = match_targets(config_with(io::ModuleSelector::of_regex("all-linear")), llama_modules(2), Strictness::kConfig);
  EXPECT_EQ(t.size(), 14u);
  for (const auto& m : t) EXPECT_NE(m.name, "lm_head");
  // PEFT compares case-insensitively.
  EXPECT_EQ(match_targets(config_with(io::ModuleSelector::of_regex("ALL-LINEAR")), llama_modules(1), Strictness::kConfig).size(), 7u);
}

TEST(TargetingTest, RegexIsAFullMatch) {
  auto t = match_targets(config_with(io::ModuleSelector::of_regex(R"(.*layers\.1\.self_attn\.(q|v)_proj)")),
                         llama_modules(2), Strictness::kConfig);
  EXPECT_EQ(names(t), (std::vector<std::string>{"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}));
  // re.fullmatch, not re.search: "q_proj" alone matches no full name.
  EXPECT_NE(error_of(config_with(io::ModuleSelector::of_regex("q_proj")), llama_modules(2)).find("matches no module"),
            std::string::npos);
  // An alternative that only matches a prefix is backtracked out of, as Python does.
  EXPECT_EQ(match_targets(config_with(io::ModuleSelector::of_regex(R"(model\.layers\.0\.mlp\.(up|up_proj))")),
                          llama_modules(1), Strictness::kConfig).size(), 1u);
}

TEST(TargetingTest, ExcludeModulesByNameOrRegex) {
  io::PeftAdapterConfig c = config_with(io::ModuleSelector::of_names({"q_proj", "v_proj"}));
  c.exclude_modules = io::ModuleSelector::of_names({"layers.0.self_attn.v_proj"});
  EXPECT_EQ(names(match_targets(c, llama_modules(2), Strictness::kConfig)),
            (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj",
                                      "model.layers.1.self_attn.v_proj"}));
  c.exclude_modules = io::ModuleSelector::of_regex(R"(.*\.1\..*)");
  EXPECT_EQ(names(match_targets(c, llama_modules(2), Strictness::kConfig)),
            (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"}));
  c.exclude_modules = io::ModuleSelector::of_names({"k_proj"});  // excludes nothing that matters, but excludes
  EXPECT_EQ(match_targets(c, llama_modules(2), Strictness::kConfig).size(), 4u);
  c.exclude_modules = io::ModuleSelector::of_names({"nothing_here"});
  EXPECT_NE(error_of(c, llama_modules(2)).find("excludes nothing"), std::string::npos);
}

TEST(TargetingTest, LayersToTransformFiltersSuffixMatchesOnly) {
  io::PeftAdapterConfig c = config_with(io::ModuleSelector::of_names({"q_proj", "model.layers.0.mlp.up_proj"}));
  c.layers_to_transform = {1};
  // The exact name in layer 0 is kept (PEFT checks layers only for suffix matches).
  EXPECT_EQ(names(match_targets(c, llama_modules(3), Strictness::kConfig)),
            (std::vector<std::string>{"model.layers.0.mlp.up_proj", "model.layers.1.self_attn.q_proj"}));
  c.layers_pattern = {"layers"};
  c.layers_to_transform = {0, 2};
  EXPECT_EQ(names(match_targets(c, llama_modules(3), Strictness::kConfig)),
            (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj",
                                      "model.layers.2.self_attn.q_proj"}));
  c.layers_pattern = {"blocks"};  // no such path segment: no suffix match survives
  EXPECT_EQ(names(match_targets(c, llama_modules(3), Strictness::kSavedAdapter)),
            (std::vector<std::string>{"model.layers.0.mlp.up_proj"}));
}

TEST(TargetingTest, PatternKeysFirstMatchWinsAtNameBoundaries) {
  std::vector<std::string> keys = {"q_proj", R"(layers\.1\..*)", "self_attn.k_proj"};
  EXPECT_EQ(find_pattern_key(keys, "model.layers.0.self_attn.q_proj"), 0);
  EXPECT_EQ(find_pattern_key(keys, "model.layers.1.self_attn.q_proj"), 0);  // first match wins
  EXPECT_EQ(find_pattern_key(keys, "model.layers.1.mlp.up_proj"), 1);
  EXPECT_EQ(find_pattern_key(keys, "model.layers.0.self_attn.k_proj"), 2);
  EXPECT_EQ(find_pattern_key(keys, "model.layers.0.self_attn.v_proj"), -1);
  EXPECT_EQ(find_pattern_key({"proj"}, "model.layers.0.self_attn.q_proj"), -1);  // needs a "." before the key
  EXPECT_EQ(find_pattern_key({"model.layers.0.self_attn.q_proj"}, "model.layers.0.self_attn.q_proj"), 0);

  io::PeftAdapterConfig c = config_with(io::ModuleSelector::of_names({"q_proj", "v_proj"}));
  c.rank_pattern = {{"v_proj", 4}, {R"(layers\.1\.self_attn\.q_proj)", 2}};
  c.alpha_pattern = {{"q_proj", 3.5}};
  auto t = match_targets(c, llama_modules(2), Strictness::kConfig);
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t[0].r, 8);  EXPECT_EQ(t[0].alpha, 3.5);   // layers.0.q_proj
  EXPECT_EQ(t[1].r, 4);  EXPECT_EQ(t[1].alpha, 16);    // layers.0.v_proj
  EXPECT_EQ(t[2].r, 2);  EXPECT_EQ(t[2].alpha, 3.5);   // layers.1.q_proj
  EXPECT_EQ(t[3].r, 4);  EXPECT_EQ(t[3].alpha, 16);    // layers.1.v_proj

  c.rank_pattern.push_back({"o_proj", 5});  // targets no module: a typo in a config, a warning for a saved adapter
  EXPECT_NE(error_of(c, llama_modules(2)).find("rank_pattern key \"o_proj\" matches no targeted module"), std::string::npos);
  EXPECT_EQ(match_targets(c, llama_modules(2), Strictness::kSavedAdapter).size(), 4u);
}

TEST(TargetingTest, NonLinearTargetIsAnErrorListingTheModules) {
  std::string e = error_of(config_with(io::ModuleSelector::of_names({"q_proj", "input_layernorm"})), llama_modules(28, true));
  EXPECT_NE(e.find("\"model.layers.0.input_layernorm\", which is not a Linear"), std::string::npos) << e;
  // The list folds the 28 layers into one line per module kind and names the norms too.
  EXPECT_NE(e.find("model.layers.N.self_attn.q_proj"), std::string::npos) << e;
  EXPECT_NE(e.find("model.layers.N.self_attn.q_norm"), std::string::npos) << e;
  EXPECT_EQ(e.find("model.layers.27"), std::string::npos) << e;
  EXPECT_LT(e.size(), 1200u) << e;
  // A container (self_attn) is not a Linear either.
  EXPECT_NE(error_of(config_with(io::ModuleSelector::of_names({"self_attn"})), llama_modules(1)).find("not a Linear"),
            std::string::npos);
}

TEST(TargetingTest, UnmatchedEntriesLmHeadAndBadRegexes) {
  std::string e = error_of(config_with(io::ModuleSelector::of_names({"q_proj", "c_attn"})), llama_modules(2));
  EXPECT_NE(e.find("entry \"c_attn\" matches no module"), std::string::npos) << e;
  EXPECT_NE(e.find("model.layers.N.mlp.gate_proj"), std::string::npos) << e;
  // PEFT loads an adapter whose list has an entry that matches nothing (it only fails when nothing matches).
  EXPECT_EQ(match_targets(config_with(io::ModuleSelector::of_names({"q_proj", "c_attn"})), llama_modules(2),
                          Strictness::kSavedAdapter).size(), 2u);
  EXPECT_NE(error_of(config_with(io::ModuleSelector::of_names({"c_attn"})), llama_modules(2), Strictness::kSavedAdapter)
                .find("matches no module"), std::string::npos);
  EXPECT_NE(error_of(config_with(io::ModuleSelector::of_names({"lm_head"})), llama_modules(1)).find("LM head"),
            std::string::npos);
  e = error_of(config_with(io::ModuleSelector::of_regex("model.(layers")), llama_modules(1));
  EXPECT_NE(e.find("not a valid regular expression"), std::string::npos) << e;
  EXPECT_NE(e.find("adapter.target_modules"), std::string::npos) << e;
}

}  // namespace
}  // namespace freehold::adapters
