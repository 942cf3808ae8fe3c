// Incremental decoding with the KV cache gives the logits of a full forward over the whole text: a prefill of the
// prompt then one token at a time, or several at a time, for Llama (GQA) and Mistral (sliding window shorter than
// the text); and a cache that would overflow is refused.
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/randint.h>

#include <string>

#include <gtest/gtest.h>

#include "absl/strings/str_replace.h"
#include "core/error.h"
#include "model/kv_cache.h"
#include "model/transformer.h"
#include "tests/model/tiny_checkpoint.h"

namespace freehold::model {
namespace {

// Logits (1, N, V) of `ids` (1, N) fed in pieces of the given sizes through one cache.
at::Tensor cached_logits(const Transformer& model, const at::Tensor& ids, const std::vector<int64_t>& pieces) {
  KvCache cache = KvCache::allocate(model.config(), 1, ids.size(1), at::TensorOptions().dtype(model.dtype()));
  std::vector<at::Tensor> out;
  int64_t start = 0;
  for (int64_t n : pieces) {
    out.push_back(model.lm_head_forward(model.hidden_states_cached(ids.narrow(1, start, n), cache)));
    start += n;
  }
  EXPECT_EQ(start, ids.size(1));
  EXPECT_EQ(cache.length, ids.size(1));
  return at::cat(out, 1);
}

void expect_cache_matches_full(const std::string& config_json, const std::string& tag) {
  at::NoGradGuard no_grad;
  const std::string dir = testing::make_temp_dir(tag);
  testing::write_checkpoint(dir, config_json, at::kFloat, 17);
  Transformer model = Transformer::load(dir);
  at::Tensor ids = at::randint(model.config().vocab_size, {1, 13}, at::kLong);
  at::Tensor full = model.forward({ids, {}, {}});  // (1, 13, V)
  const double scale = full.abs().max().item<double>();
  // fp32; the cached path multiplies other shapes (one row instead of 13), so sums round differently.
  const double tolerance = 1e-5 * scale;
  for (const std::vector<int64_t>& pieces :
       {std::vector<int64_t>{5, 1, 1, 1, 1, 1, 1, 1, 1}, std::vector<int64_t>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
        std::vector<int64_t>{4, 3, 6}}) {
    at::Tensor cached = cached_logits(model, ids, pieces);
    const double diff = (cached - full).abs().max().item<double>();
    EXPECT_LE(diff, tolerance) << tag << ": pieces of " << pieces.size();
  }
}

TEST(KvCacheTest, LlamaGqaCachedLogitsEqualAFullForward) {
  expect_cache_matches_full(testing::llama_config_json(89, 48, 96, 3, 6, 2, "float32"), "kv_llama");
}

TEST(KvCacheTest, MistralSlidingWindowCachedLogitsEqualAFullForward) {
  // A window of 4 over 13 tokens: the cached path must drop keys outside the window exactly as the full mask.
  std::string config = absl::StrReplaceAll(testing::llama_config_json(89, 48, 96, 2, 4, 4, "float32"),
                                           {{"LlamaForCausalLM", "MistralForCausalLM"},
                                            {"\"llama\"", "\"mistral\", \"sliding_window\": 4"}});
  expect_cache_matches_full(config, "kv_mistral");
}

TEST(KvCacheTest, OverflowIsRefused) {
  at::NoGradGuard no_grad;
  const std::string dir = testing::make_temp_dir("kv_overflow");
  testing::write_checkpoint(dir, testing::llama_config_json(89, 48, 96, 1, 6, 2, "float32"), at::kFloat, 3);
  Transformer model = Transformer::load(dir);
  KvCache cache = KvCache::allocate(model.config(), 1, 4, at::TensorOptions().dtype(model.dtype()));
  model.hidden_states_cached(at::randint(89, {1, 3}, at::kLong), cache);
  try {
    model.hidden_states_cached(at::randint(89, {1, 2}, at::kLong), cache);
    ADD_FAILURE() << "overflowed the cache";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("capacity 4"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace freehold::model
