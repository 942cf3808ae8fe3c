// merged_weight against LoraLinear's forward: a projection with the merged weight (and the untouched bias) gives
// what the adapter computes, for LoRA, rsLoRA and DoRA, from float32 and bfloat16 base weights; a non-finite merge
// is refused naming the module (RELIABILITY.md N6).
#include "adapters/merge.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/full.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>

#include <gtest/gtest.h>

#include "core/error.h"

namespace freehold::adapters {
namespace {

const char kModule[] = "model.layers.1.mlp.down_proj";

struct Case {
  model::Linear base;
  std::shared_ptr<LoraLinear> adapter;
  at::Tensor x;  // (3, 7, in)
};

// A (out 19, in 23) projection, rank 5, odd sizes on purpose; weights in `dtype`, adapter in float32.
Case make(uint64_t seed, LoraLinearOptions options, at::ScalarType dtype, bool bias) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor w = (at::randn({19, 23}, g, at::kFloat) * 0.2).to(dtype);
  at::Tensor b = bias ? (at::randn({19}, g, at::kFloat) * 0.1).to(dtype) : at::Tensor();
  model::Linear base(kModule, w, b);
  at::Tensor A = at::randn({5, 23}, g, at::kFloat) * 0.3;
  at::Tensor B = at::randn({19, 5}, g, at::kFloat) * 0.3;
  at::Tensor m = options.use_dora ? at::randn({19}, g, at::kFloat).abs() + 0.5 : at::Tensor();
  auto adapter = std::make_shared<LoraLinear>(base, options, A, B, m);
  base.set_adapter(adapter);
  return {base, adapter, at::randn({3, 7, 23}, g, at::kFloat)};
}

TEST(MergeTest, MergedProjectionEqualsTheAdapterForward) {
  struct Variant {
    const char* name;
    LoraLinearOptions options;
  };
  const Variant variants[] = {
      {"lora", {5, 12.0, 0.0, false, false}},
      {"rslora", {5, 12.0, 0.0, true, false}},
      {"dora", {5, 8.0, 0.0, false, true}},
      {"dora+rslora", {5, 8.0, 0.0, true, true}},
  };
  at::NoGradGuard no_grad;
  uint64_t seed = 10;
  for (const Variant& v : variants) {
    for (bool bias : {true, false}) {
      // float32 base weights: both sides compute in float32, so only summation order differs. bfloat16 base
      // weights: merged_weight upcasts the stored values exactly, and the reference computes in float32 from the
      // same upcast weight (the bf16 forward itself would round every activation).
      for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
        Case c = make(++seed, v.options, dtype, bias);
        at::Tensor merged = merged_weight(kModule, *c.adapter, c.base.weight());
        ASSERT_EQ(merged.scalar_type(), at::kFloat);
        ASSERT_EQ(merged.sizes(), c.base.weight().sizes());
        at::Tensor bias32 = bias ? c.base.bias().to(at::kFloat) : at::Tensor();
        model::Linear base32(kModule, c.base.weight().to(at::kFloat), bias32);
        auto adapter32 = std::make_shared<LoraLinear>(base32, v.options, c.adapter->lora_A(), c.adapter->lora_B(),
                                                      c.adapter->magnitude());
        base32.set_adapter(adapter32);
        at::Tensor expected = base32.forward(c.x);
        at::Tensor got = at::linear(c.x, merged, bias32);
        EXPECT_TRUE(at::allclose(got, expected, 1e-5, 1e-5))
            << v.name << " bias " << bias << " dtype " << c10::toString(dtype) << ": max diff "
            << (got - expected).abs().max().item<double>();
        // The merge changes the weight: an adapter that is not a no-op.
        EXPECT_GT((merged - c.base.weight().to(at::kFloat)).abs().max().item<double>(), 1e-2) << v.name;
      }
    }
  }
}

TEST(MergeTest, DoraMergeHasTheMagnitudeAsRowNorms) {
  at::NoGradGuard no_grad;
  Case c = make(3, {5, 8.0, 0.0, false, true}, at::kFloat, true);
  at::Tensor merged = merged_weight(kModule, *c.adapter, c.base.weight());
  // W' = (m / ‖W + sBA‖) ⊙ (W + sBA): each row of W' has norm m.
  EXPECT_TRUE(at::allclose(merged.norm(2, {1}), c.adapter->magnitude(), 1e-5, 1e-6));
}

std::string merge_error(const model::Linear& base, const LoraLinear& adapter) {
  try {
    merged_weight(kModule, adapter, base.weight());
  } catch (const core::FormatError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(MergeTest, NonFiniteResultIsRefusedNamingTheModule) {
  at::NoGradGuard no_grad;
  model::Linear base(kModule, at::randn({19, 23}) * 0.2, at::Tensor());
  // scale · B A overflows float32: 2.4 · 5 · 1e19 · 1e19 > 3.4e38.
  LoraLinear overflow(base, {5, 12.0, 0.0, false, false}, at::full({5, 23}, 1e19), at::full({19, 5}, 1e19));
  std::string message = merge_error(base, overflow);
  EXPECT_NE(message.find(kModule), std::string::npos) << message;
  EXPECT_NE(message.find("NaN or Inf"), std::string::npos) << message;

  // DoRA on a zero row with B = 0: ‖W + sBA‖ = 0 for that row, and m / 0 · 0 is NaN.
  at::Tensor w = at::randn({19, 23}) * 0.2;
  w[4].zero_();
  model::Linear zero_row(kModule, w, at::Tensor());
  LoraLinear dora(zero_row, {5, 8.0, 0.0, false, true}, at::randn({5, 23}), at::zeros({19, 5}), at::ones({19}));
  message = merge_error(zero_row, dora);
  EXPECT_NE(message.find(kModule), std::string::npos) << message;
  EXPECT_NE(message.find("DoRA"), std::string::npos) << message;
}

}  // namespace
}  // namespace freehold::adapters
