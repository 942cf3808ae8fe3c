// AdamW against the update written out in double precision (torch.optim.AdamW's formula), grad clipping against
// the definition, LoRA+ groups by PEFT's rule, and the optimizer state round trip.
#include "trainer/adamw.h"

#include <ATen/ops/full.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "trainer/grad_clip.h"

namespace freehold::trainer {
namespace {

at::Tensor leaf(std::vector<float> values) {
  at::Tensor t = at::zeros({static_cast<int64_t>(values.size())}, at::kFloat);
  for (size_t i = 0; i < values.size(); ++i) t[i] = values[i];
  return t.reshape({1, -1}).set_requires_grad(true);
}

// The update of one scalar, in double.
struct RefAdam {
  double p, m = 0, v = 0;
  int t = 0;
  void step(double g, double lr, double b1, double b2, double eps, double wd) {
    ++t;
    p *= 1 - lr * wd;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const double mhat_lr = lr / (1 - std::pow(b1, t));
    p -= mhat_lr * m / (std::sqrt(v) / std::sqrt(1 - std::pow(b2, t)) + eps);
  }
};

TEST(AdamWTest, MatchesTheUpdateWithWeightDecayAndLoraPlus) {
  at::Tensor a = leaf({0.5f, -1.25f, 2.0f});
  at::Tensor b = leaf({0.1f, -0.3f});
  AdamWOptions o;
  o.beta1 = 0.8;
  o.beta2 = 0.95;
  o.eps = 1e-6;
  o.weight_decay = 0.1;
  o.loraplus_lr_ratio = 16;
  AdamW opt({{"base_model.model.x.lora_A.weight", a}, {"base_model.model.x.lora_B.weight", b}}, o);
  EXPECT_EQ(opt.lr_multiplier(0), 1.0);
  EXPECT_EQ(opt.lr_multiplier(1), 16.0);
  std::vector<RefAdam> ra = {{0.5}, {-1.25}, {2.0}}, rb = {{0.1}, {-0.3}};
  const double grads_a[3][3] = {{0.3, -0.2, 1.0}, {-0.5, 0.25, 0.0}, {2.0, -1.0, 0.125}};
  const double grads_b[3][2] = {{1.0, 0.5}, {-0.75, 0.0}, {0.5, 3.0}};
  const double lr = 1e-2, factors[3] = {1.0, 0.5, 0.25};
  for (int s = 0; s < 3; ++s) {
    a.mutable_grad() = leaf({float(grads_a[s][0]), float(grads_a[s][1]), float(grads_a[s][2])}).detach();
    b.mutable_grad() = leaf({float(grads_b[s][0]), float(grads_b[s][1])}).detach();
    opt.step(lr, factors[s]);
    opt.zero_grad();
    EXPECT_FALSE(a.grad().defined());
    for (int i = 0; i < 3; ++i) ra[i].step(float(grads_a[s][i]), lr * factors[s], 0.8, 0.95, 1e-6, 0.1);
    for (int i = 0; i < 2; ++i) rb[i].step(float(grads_b[s][i]), 16 * lr * factors[s], 0.8, 0.95, 1e-6, 0.1);
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(a[0][i].item<double>(), ra[i].p, 2e-6 * std::abs(ra[i].p) + 1e-7) << s;
    for (int i = 0; i < 2; ++i) EXPECT_NEAR(b[0][i].item<double>(), rb[i].p, 2e-6 * std::abs(rb[i].p) + 1e-7) << s;
  }
  EXPECT_EQ(opt.steps_taken(), 3);
}

TEST(AdamWTest, TensorsWithoutGradientAreLeftAlone) {
  at::Tensor a = leaf({1.0f});
  AdamW opt({{"a.lora_A.weight", a}}, {});
  opt.step(1.0, 1.0);
  EXPECT_EQ(a.item<float>(), 1.0f);
}

TEST(AdamWTest, LoraPlusGroupFollowsPeft) {
  at::Tensor two_d = at::zeros({2, 2});
  at::Tensor one_d = at::zeros({2});
  EXPECT_TRUE(is_loraplus_b("m.q_proj.lora_B.weight", two_d));
  EXPECT_TRUE(is_loraplus_b("m.embed.lora_embedding_B", two_d));
  EXPECT_TRUE(is_loraplus_b("m.q_proj.lora_magnitude_vector", one_d));
  EXPECT_FALSE(is_loraplus_b("m.q_proj.lora_A.weight", two_d));
}

TEST(AdamWTest, StateRoundTripsThroughSafetensors) {
  at::Tensor a = at::randn({3, 4}).set_requires_grad(true);
  AdamW opt({{"a.lora_A.weight", a}}, {});
  a.mutable_grad() = at::randn({3, 4});
  opt.step(0.1, 1.0);
  const std::string path = (std::filesystem::temp_directory_path() / "freehold_adamw_state.safetensors").string();
  opt.save(path);
  at::Tensor a2 = a.detach().clone().set_requires_grad(true);
  AdamW restored({{"a.lora_A.weight", a2}}, {});
  restored.load(path);
  EXPECT_EQ(restored.steps_taken(), 1);
  auto s1 = opt.state_tensors(), s2 = restored.state_tensors();
  ASSERT_EQ(s1.size(), s2.size());
  for (size_t i = 0; i < s1.size(); ++i) EXPECT_TRUE(s1[i].tensor.equal(s2[i].tensor)) << s1[i].name;
  at::Tensor other = at::randn({3, 5}).set_requires_grad(true);
  AdamW mismatched({{"a.lora_A.weight", other}}, {});
  EXPECT_THROW(mismatched.load(path), core::FormatError);
  AdamW renamed({{"b.lora_A.weight", a2}}, {});
  EXPECT_THROW(renamed.load(path), core::FormatError);
  std::filesystem::remove(path);
}

TEST(GradClipTest, ClipsByGlobalNormAsTorch) {
  at::Tensor a = leaf({3.0f}), b = leaf({4.0f});
  a.mutable_grad() = at::full({1, 1}, 3.0f);
  b.mutable_grad() = at::full({1, 1}, 4.0f);
  const double norm = clip_grad_norm({{"a", a}, {"b", b}}, 1.0);
  EXPECT_NEAR(norm, 5.0, 1e-6);
  const double coef = 1.0 / (5.0 + 1e-6);
  EXPECT_NEAR(a.grad().item<double>(), 3 * coef, 1e-6);
  EXPECT_NEAR(b.grad().item<double>(), 4 * coef, 1e-6);
  // Below the limit: unchanged. 0 disables clipping but still measures.
  EXPECT_NEAR(clip_grad_norm({{"a", a}, {"b", b}}, 10.0), 1.0, 1e-5);
  a.mutable_grad() = at::full({1, 1}, 30.0f);
  EXPECT_NEAR(clip_grad_norm({{"a", a}}, 0.0), 30.0, 1e-5);
  EXPECT_EQ(a.grad().item<float>(), 30.0f);
}

TEST(GradClipTest, NonFiniteNormIsReportedAndNothingIsScaled) {
  at::Tensor a = leaf({1.0f}), b = leaf({1.0f});
  a.mutable_grad() = at::full({1, 1}, std::nanf(""));
  b.mutable_grad() = at::full({1, 1}, 2.0f);
  EXPECT_FALSE(std::isfinite(clip_grad_norm({{"a", a}, {"b", b}}, 1.0)));
  EXPECT_EQ(b.grad().item<float>(), 2.0f);
  a.mutable_grad() = at::full({1, 1}, INFINITY);
  EXPECT_FALSE(std::isfinite(clip_grad_norm({{"a", a}, {"b", b}}, 1.0)));
}

}  // namespace
}  // namespace freehold::trainer
