// Token choice in `freehold generate` against transformers: temperature and top-p filtering equal
// TemperatureLogitsWarper + TopPLogitsWarper on the same logits, and seeded draws equal torch.multinomial's with a
// generator of the same seed (goldens from tests/model/make_sampling_goldens.py). Greedy is argmax (first of
// ties); the same seed gives the same tokens, another seed other ones.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/isinf.h>

#include <string>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "io/safetensors.h"
#include "model/generation.h"

namespace freehold::model {
namespace {

const std::string kGoldens = std::string(FREEHOLD_SOURCE_DIR) + "/tests/model/data/sampling_goldens.safetensors";

struct Goldens {
  std::shared_ptr<io::SafetensorsFile> file = io::SafetensorsFile::open(kGoldens);
  at::Tensor logits = file->tensor("logits").clone();  // (R, V)
  at::Tensor cases = file->tensor("cases").clone();    // (K, 2): temperature, top_p
};

TEST(SamplingTest, TemperatureAndTopPEqualTransformersWarpers) {
  Goldens g;
  for (int64_t k = 0; k < g.cases.size(0); ++k) {
    const double temperature = g.cases[k][0].item<double>(), top_p = g.cases[k][1].item<double>();
    at::Tensor expected = g.file->tensor(absl::StrCat("warped.", k));
    at::Tensor ours = apply_temperature(g.logits, temperature);
    if (top_p < 1) ours = apply_top_p(ours, top_p);
    // Same float32 ops in the same order: equal, including which entries are -inf.
    EXPECT_TRUE(at::equal(at::isinf(ours), at::isinf(expected))) << "case " << k << ": another nucleus";
    EXPECT_TRUE(at::equal(ours, expected)) << "case " << k << " (T " << temperature << ", top_p " << top_p << ")";
  }
}

TEST(SamplingTest, SeededDrawsEqualTorchMultinomial) {
  Goldens g;
  for (int64_t k = 0; k < g.cases.size(0); ++k) {
    SamplingOptions options{g.cases[k][0].item<double>(), g.cases[k][1].item<double>()};
    at::Tensor expected = g.file->tensor(absl::StrCat("draws.", k));
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(1234 + k);
    for (int64_t r = 0; r < g.logits.size(0); ++r) {
      EXPECT_EQ(choose_token(g.logits[r], options, generator), expected[r].item<int64_t>())
          << "case " << k << " row " << r;
    }
  }
}

TEST(SamplingTest, GreedyIsTheFirstArgmax) {
  Goldens g;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(0);
  EXPECT_EQ(choose_token(g.logits[3], {}, generator), 10);  // row 3 ties at 10..13
  EXPECT_EQ(choose_token(g.logits[5], {}, generator), 0);   // a flat row
  EXPECT_EQ(choose_token(g.logits[0], {}, generator), g.logits[0].argmax().item<int64_t>());
}

TEST(SamplingTest, TheSameSeedGivesTheSameTokens) {
  Goldens g;
  const SamplingOptions options{1.2, 0.97};
  auto draw = [&](uint64_t seed) {
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
    std::vector<int64_t> tokens;
    for (int i = 0; i < 40; ++i) tokens.push_back(choose_token(g.logits[i % g.logits.size(0)], options, generator));
    return tokens;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(SamplingTest, TopPKeepsTheMostLikelyTokenEvenWhenItAloneExceedsP) {
  Goldens g;
  at::Tensor kept = apply_top_p(g.logits, 1e-6);
  for (int64_t r = 0; r < g.logits.size(0); ++r) {
    EXPECT_EQ((~at::isinf(kept[r])).sum().item<int64_t>(), 1) << "row " << r;
  }
}

}  // namespace
}  // namespace freehold::model
