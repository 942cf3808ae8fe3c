// LoraLinear against its formulas written out in plain ATen: LoRA, rsLoRA, DoRA (eval and training with
// dropout), which tensors get gradients, and that dropout acts only while training.
#include "adapters/lora_linear.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>

#include <cmath>

#include <gtest/gtest.h>

#include "kernels/dropout.h"

namespace freehold::adapters {
namespace {

struct Fixture {
  model::Linear base;
  at::Tensor A, B, x;
};

// A (out 19, in 23) projection with a bias, rank 5, a (3, 7, 23) input: odd sizes on purpose.
Fixture make(uint64_t seed, bool bias = true) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor w = at::randn({19, 23}, g, at::kFloat) * 0.2;
  at::Tensor b = bias ? at::randn({19}, g, at::kFloat) * 0.1 : at::Tensor();
  return {model::Linear("model.layers.0.self_attn.q_proj", w, b), at::randn({5, 23}, g, at::kFloat) * 0.3,
          at::randn({19, 5}, g, at::kFloat) * 0.3, at::randn({3, 7, 23}, g, at::kFloat)};
}

TEST(LoraLinearTest, LoraAndRsLoraOutputs) {
  Fixture f = make(1);
  for (bool rslora : {false, true}) {
    LoraLinearOptions o{5, 12.0, 0.0, rslora, false};
    const double scale = rslora ? 12.0 / std::sqrt(5.0) : 12.0 / 5.0;
    EXPECT_DOUBLE_EQ(o.scale(), scale);
    auto adapter = std::make_shared<LoraLinear>(f.base, o, f.A, f.B);
    f.base.set_adapter(adapter);
    at::Tensor expected = at::linear(f.x, f.base.weight(), f.base.bias()) + scale * at::matmul(at::matmul(f.x, f.A.t()), f.B.t());
    EXPECT_TRUE(at::allclose(f.base.forward(f.x), expected, 1e-5, 1e-5));
    EXPECT_TRUE(at::allclose(adapter->delta_weight(), scale * at::matmul(f.B, f.A), 1e-6, 1e-6));
  }
}

TEST(LoraLinearTest, DoraOutputIsTheRescaledDirection) {
  for (bool bias : {true, false}) {
    Fixture f = make(2, bias);
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(3);
    at::Tensor m = at::randn({19}, g, at::kFloat).abs() + 0.5;
    LoraLinearOptions o{5, 8.0, 0.0, false, true};
    auto adapter = std::make_shared<LoraLinear>(f.base, o, f.A, f.B, m);
    f.base.set_adapter(adapter);
    // (m / ‖W + sBA‖_row) ⊙ (W + sBA) x + b
    at::Tensor merged = f.base.weight() + o.scale() * at::matmul(f.B, f.A);
    at::Tensor factor = m / at::linalg_vector_norm(merged, 2, {1});
    at::Tensor expected = at::linear(f.x, merged) * factor;
    if (bias) expected = expected + f.base.bias();
    EXPECT_TRUE(at::allclose(f.base.forward(f.x), expected, 1e-5, 1e-5)) << "bias " << bias;
  }
}

TEST(LoraLinearTest, DoraStartsAsTheBaseWhenBIsZero) {
  Fixture f = make(4);
  LoraLinearOptions o{5, 8.0, 0.0, false, true};
  auto adapter = std::make_shared<LoraLinear>(f.base, o, f.A, at::zeros({19, 5}));
  // The default magnitude is ‖W + s·BA‖ = ‖W‖ per row.
  EXPECT_TRUE(at::allclose(adapter->magnitude(), at::linalg_vector_norm(f.base.weight(), 2, {1}), 1e-6, 1e-6));
  f.base.set_adapter(adapter);
  EXPECT_TRUE(at::allclose(f.base.forward(f.x), f.base.base_forward(f.x), 1e-5, 1e-6));
}

TEST(LoraLinearTest, DropoutOnlyWhileTraining) {
  for (bool dora : {false, true}) {
    Fixture f = make(5);
    auto adapter = std::make_shared<LoraLinear>(f.base, LoraLinearOptions{5, 8.0, 0.5, false, dora}, f.A, f.B);
    f.base.set_adapter(adapter);
    EXPECT_FALSE(adapter->training());
    at::Tensor eval1 = f.base.forward(f.x), eval2 = f.base.forward(f.x);
    EXPECT_TRUE(at::equal(eval1, eval2)) << "eval is deterministic";
    auto no_dropout = std::make_shared<LoraLinear>(f.base, LoraLinearOptions{5, 8.0, 0.0, false, dora}, f.A, f.B);
    EXPECT_TRUE(at::allclose(eval1, no_dropout->forward(f.base, f.x), 1e-6, 1e-6)) << "eval ignores dropout";
    adapter->set_training(true);
    at::Tensor train1 = f.base.forward(f.x), train2 = f.base.forward(f.x);
    EXPECT_GT((train1 - eval1).abs().max().item<float>(), 1e-2) << "dropout changes the adapter's input";
    EXPECT_GT((train1 - train2).abs().max().item<float>(), 1e-2) << "a fresh mask each call";
    if (!dora) {
      // Plain LoRA: dropout touches only the adapter branch, so the base part is intact.
      at::Tensor base = f.base.base_forward(f.x);
      at::Tensor delta = train1 - base;  // scale·B A dropout(x)
      EXPECT_GT(delta.abs().max().item<float>(), 0.0f);
    }
    // Training with dropout 0 is eval.
    no_dropout->set_training(true);
    EXPECT_TRUE(at::allclose(no_dropout->forward(f.base, f.x), eval1, 1e-6, 1e-6));
  }
}

TEST(LoraLinearTest, DoraTrainingWithDropoutUsesTheDroppedInputForTheBaseTerm) {
  // PEFT: y = W x + b + (m/n − 1) W x' + (m/n) s B A x' with x' = dropout(x). Reproduce one mask by seeding.
  Fixture f = make(6);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(7);
  at::Tensor m = at::randn({19}, g, at::kFloat).abs() + 0.5;
  LoraLinearOptions o{5, 8.0, 0.25, false, true};
  auto adapter = std::make_shared<LoraLinear>(f.base, o, f.A, f.B, m);
  adapter->set_training(true);
  at::manual_seed(123);
  at::Tensor got = adapter->forward(f.base, f.x);
  at::manual_seed(123);
  at::Tensor xd = kernels::dropout_reference(f.x, kernels::draw_dropout_seed(f.x.device()), 0.25);
  at::Tensor n = at::linalg_vector_norm(f.base.weight() + o.scale() * at::matmul(f.B, f.A), 2, {1});
  at::Tensor mn = m / n;
  at::Tensor expected = at::linear(f.x, f.base.weight(), f.base.bias()) + (mn - 1) * at::linear(xd, f.base.weight()) +
                        mn * o.scale() * at::matmul(at::matmul(xd, f.A.t()), f.B.t());
  EXPECT_TRUE(at::allclose(got, expected, 1e-5, 1e-5));
}

TEST(LoraLinearTest, OnlyAdapterTensorsGetGradients) {
  for (bool dora : {false, true}) {
    Fixture f = make(8);
    auto adapter = std::make_shared<LoraLinear>(f.base, LoraLinearOptions{5, 8.0, 0.1, false, dora}, f.A, f.B);
    adapter->set_training(true);
    f.base.set_adapter(adapter);
    EXPECT_TRUE(adapter->lora_A().requires_grad() && adapter->lora_A().is_leaf());
    EXPECT_TRUE(adapter->lora_B().requires_grad() && adapter->lora_B().is_leaf());
    EXPECT_EQ(adapter->magnitude().defined(), dora);
    EXPECT_FALSE(f.base.weight().requires_grad());
    f.base.forward(f.x).sum().backward();
    EXPECT_TRUE(adapter->lora_A().grad().defined());
    EXPECT_TRUE(adapter->lora_B().grad().defined());
    if (dora) EXPECT_GT(adapter->magnitude().grad().abs().sum().item<float>(), 0.0f);
    EXPECT_FALSE(f.base.weight().grad().defined());
    EXPECT_FALSE(f.base.bias().grad().defined());
  }
}

TEST(LoraLinearTest, Bf16BaseWithFloat32Adapter) {
  // As PEFT with autocast_adapter_dtype: the adapter computes in float32, the output keeps the base dtype.
  Fixture f = make(9);
  model::Linear base("p", f.base.weight().to(at::kBFloat16), f.base.bias().to(at::kBFloat16));
  auto adapter = std::make_shared<LoraLinear>(base, LoraLinearOptions{5, 8.0, 0.0, false, false}, f.A, f.B);
  base.set_adapter(adapter);
  at::Tensor y = base.forward(f.x.to(at::kBFloat16));
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  at::Tensor reference = at::linear(f.x, f.base.weight(), f.base.bias()) + 1.6 * at::matmul(at::matmul(f.x, f.A.t()), f.B.t());
  EXPECT_LT((y.to(at::kFloat) - reference).abs().max().item<float>(), 0.1f);
}

}  // namespace
}  // namespace freehold::adapters
