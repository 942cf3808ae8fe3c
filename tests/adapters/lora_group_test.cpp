// Which projections lora_group_forward groups (fused plain LoRA without dropout in effect, two or more, one adapter
// dtype) and that the others stay exactly what Linear::forward gives, dropout masks included; then a tiny random
// model whose loss and every adapter gradient agree with grouping on and off, and whose layers call the group
// forward for q/k/v and gate/up.
#include "adapters/lora_group.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/function.h>

#include <memory>
#include <string>
#include <vector>

#include "adapters/adapter_set.h"
#include "adapters/lora_linear.h"
#include "kernels/cpu_gemm.h"
#include "model/transformer.h"
#include "tests/model/tiny_checkpoint.h"

namespace freehold::adapters {
namespace {

// q/k/v-like projections of one 23-wide input: out 19, 7, 7; ranks 4, 2, 3; a bias on q and v.
struct Projections {
  std::vector<model::Linear> linears;
  std::vector<std::shared_ptr<LoraLinear>> loras;  // null where a projection has no adapter
  at::Tensor x;                                     // (3, 5, 23)

  std::vector<const model::Linear*> pointers() const {
    std::vector<const model::Linear*> p;
    for (const model::Linear& l : linears) p.push_back(&l);
    return p;
  }
};

Projections make(double dropout, std::vector<bool> adapted = {true, true, true}) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(11);
  const int64_t outs[] = {19, 7, 7}, ranks[] = {4, 2, 3};
  Projections p;
  for (int i = 0; i < 3; ++i) {
    at::Tensor w = at::randn({outs[i], 23}, g, at::kFloat) * 0.2;
    at::Tensor b = i != 1 ? at::randn({outs[i]}, g, at::kFloat) * 0.1 : at::Tensor();
    p.linears.emplace_back("model.layers.0.self_attn." + std::string(i == 0 ? "q" : i == 1 ? "k" : "v") + "_proj", w, b);
  }
  for (int i = 0; i < 3; ++i) {
    if (!adapted[static_cast<size_t>(i)]) {
      p.loras.push_back(nullptr);
      continue;
    }
    LoraLinearOptions o{ranks[i], 2.0 * static_cast<double>(ranks[i]), dropout, false, false};
    auto lora = std::make_shared<LoraLinear>(p.linears[static_cast<size_t>(i)], o,
                                             at::randn({ranks[i], 23}, g, at::kFloat) * 0.3,
                                             at::randn({outs[i], ranks[i]}, g, at::kFloat) * 0.3);
    lora->set_fused(true);
    lora->set_training(true);
    p.linears[static_cast<size_t>(i)].set_adapter(lora);
    p.loras.push_back(lora);
  }
  p.x = at::randn({3, 5, 23}, g, at::kFloat);
  return p;
}

std::vector<at::Tensor> one_by_one(const Projections& p) {
  std::vector<at::Tensor> y;
  for (const model::Linear& l : p.linears) y.push_back(l.forward(p.x));
  return y;
}

std::string node_name(const at::Tensor& y) { return y.grad_fn() ? y.grad_fn()->name() : "(none)"; }

// The outputs of the grouped projections come from one autograd node.
bool same_node(const at::Tensor& a, const at::Tensor& b) { return a.grad_fn() && a.grad_fn() == b.grad_fn(); }

void expect_close(const at::Tensor& a, const at::Tensor& b, double rel, const std::string& what) {
  const double scale = b.to(at::kDouble).abs().max().item<double>();
  const double diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  EXPECT_GT(scale, 0) << what;
  EXPECT_LE(diff, rel * scale) << what << ": max difference " << diff << ", largest element " << scale;
}

TEST(LoraGroupTest, FusedLoraWithoutDropoutIsOneNode) {
  const Projections p = make(0.0);
  const std::vector<at::Tensor> grouped = lora_group_forward(p.pointers(), p.x);
  ASSERT_EQ(grouped.size(), 3u);
  EXPECT_TRUE(same_node(grouped[0], grouped[1]) && same_node(grouped[0], grouped[2])) << node_name(grouped[0]);
  const std::vector<at::Tensor> single = one_by_one(p);
  EXPECT_FALSE(same_node(single[0], single[1]));
  for (size_t i = 0; i < 3; ++i) expect_close(grouped[i], single[i], 1e-6, p.linears[i].name());
}

TEST(LoraGroupTest, DropoutInTrainingFallsBackWithTheReferenceMasks) {
  // Bit equality with the reference composition needs its GEMM library: BLAS (kernels/cpu_gemm.h).
  kernels::set_cpu_gemm_path(kernels::CpuGemmPath::kBlas);
  struct Reset {
    ~Reset() { kernels::reset_cpu_gemm_path_for_testing(); }
  } reset;
  Projections p = make(0.3);
  at::manual_seed(7);
  const std::vector<at::Tensor> grouped = lora_group_forward(p.pointers(), p.x);
  EXPECT_FALSE(same_node(grouped[0], grouped[1]) || same_node(grouped[1], grouped[2]));
  // The per-projection path draws one dropout seed per projection in q, k, v order: with the same seed, the same bits as the
  // fused projections one by one and as PEFT's composition (fused off).
  at::manual_seed(7);
  const std::vector<at::Tensor> fused = one_by_one(p);
  for (const auto& lora : p.loras) lora->set_fused(false);
  at::manual_seed(7);
  const std::vector<at::Tensor> reference = one_by_one(p);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(at::equal(grouped[i], fused[i])) << p.linears[i].name();
    EXPECT_TRUE(at::equal(grouped[i], reference[i])) << p.linears[i].name();
  }
  // Dropout is a training-time thing: in eval the same adapters group.
  for (const auto& lora : p.loras) lora->set_fused(true), lora->set_training(false);
  const std::vector<at::Tensor> eval = lora_group_forward(p.pointers(), p.x);
  EXPECT_TRUE(same_node(eval[0], eval[1]) && same_node(eval[0], eval[2]));
}

TEST(LoraGroupTest, OnlyQualifyingProjectionsJoin) {
  {  // k without an adapter: q and v grouped, k its base projection.
    const Projections p = make(0.0, {true, false, true});
    const std::vector<at::Tensor> y = lora_group_forward(p.pointers(), p.x);
    EXPECT_TRUE(same_node(y[0], y[2]));
    EXPECT_FALSE(same_node(y[0], y[1]));
    EXPECT_TRUE(at::equal(y[1], p.linears[1].base_forward(p.x)));
  }
  {  // One adapted projection is no group: lora_linear_fused as before, bit for bit.
    const Projections p = make(0.0, {false, true, false});
    const std::vector<at::Tensor> y = lora_group_forward(p.pointers(), p.x);
    const std::vector<at::Tensor> single = one_by_one(p);
    for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(at::equal(y[i], single[i])) << i;
  }
  {  // An adapter that does not compute fused (model.fused_kernels off) stays PEFT's composition.
    Projections p = make(0.0);
    p.loras[0]->set_fused(false);
    EXPECT_FALSE(joins_lora_group(p.linears[0]));
    const std::vector<at::Tensor> y = lora_group_forward(p.pointers(), p.x);
    EXPECT_TRUE(same_node(y[1], y[2]));
    EXPECT_FALSE(same_node(y[0], y[1]));
    EXPECT_TRUE(at::equal(y[0], p.linears[0].forward(p.x)));
  }
  {  // DoRA is not fused, so not grouped.
    Projections p = make(0.0);
    LoraLinearOptions o{4, 8.0, 0.0, false, /*use_dora=*/true};
    auto dora = std::make_shared<LoraLinear>(p.linears[0], o, p.loras[0]->lora_A(), p.loras[0]->lora_B());
    dora->set_fused(true);
    p.linears[0].set_adapter(dora);
    EXPECT_FALSE(joins_lora_group(p.linears[0]));
    EXPECT_TRUE(joins_lora_group(p.linears[1]));
    const std::vector<at::Tensor> y = lora_group_forward(p.pointers(), p.x);
    EXPECT_FALSE(same_node(y[0], y[1]));
    EXPECT_TRUE(same_node(y[1], y[2]));
  }
  {  // Adapters in another dtype than the first joiner's are computed alone.
    Projections p = make(0.0);
    LoraLinearOptions o{2, 4.0, 0.0, false, false};
    auto other = std::make_shared<LoraLinear>(p.linears[1], o, p.loras[1]->lora_A().to(at::kDouble),
                                              p.loras[1]->lora_B().to(at::kDouble));
    other->set_fused(true);
    p.linears[1].set_adapter(other);
    const std::vector<at::Tensor> y = lora_group_forward(p.pointers(), p.x);
    EXPECT_TRUE(same_node(y[0], y[2]));
    EXPECT_FALSE(same_node(y[0], y[1]));
  }
}

// A tiny random model (V 97, C 32, I 48, 2 layers, GQA 4/2 heads) with LoRA on every projection, k_proj at rank 2.
struct TinyModel {
  model::Transformer model;
  std::unique_ptr<AdapterSet> set;
  model::ForwardInput input;
  at::Tensor labels;
};

TinyModel make_model(at::ScalarType dtype, const std::string& dtype_name, double dropout) {
  const std::string dir = model::testing::make_temp_dir("lora_group_" + dtype_name);
  model::testing::write_checkpoint(dir, model::testing::llama_config_json(97, 32, 48, 2, 4, 2, dtype_name), dtype, 5);
  TinyModel t{model::Transformer::load(dir), nullptr, {}, {}};
  LoraOptions options;
  options.r = 4;
  options.alpha = 8;
  options.dropout = dropout;
  options.rank_pattern = {{"k_proj", 2}};
  t.set = std::make_unique<AdapterSet>(AdapterSet::create(t.model, options, 3));
  t.set->set_training(true);
  for (const AdapterSet::Entry& e : t.set->entries()) e.adapter->set_fused(true);
  {  // B starts at zero, which would make every lora_A gradient zero: give it values.
    at::NoGradGuard no_grad;
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(9);
    for (const io::NamedTensor& p : t.set->parameters()) {
      if (p.name.find("lora_B") != std::string::npos) p.tensor.copy_(at::randn(p.tensor.sizes(), g, at::kFloat) * 0.05);
    }
  }
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(13);
  const at::Tensor ids = at::randint(97, {2, 11}, g, at::TensorOptions().dtype(at::kLong));
  t.input = {ids, at::Tensor(), at::Tensor()};
  t.labels = at::randint(97, {2, 11}, g, at::TensorOptions().dtype(at::kLong));
  return t;
}

struct Pass {
  at::Tensor loss;
  std::vector<at::Tensor> grads;  // AdapterSet::parameters() order
};

Pass loss_and_grads(TinyModel& t, bool grouping) {
  set_lora_grouping(t.model, grouping);
  std::vector<io::NamedTensor> params = t.set->parameters();
  for (io::NamedTensor& p : params) p.tensor.mutable_grad() = at::Tensor();
  at::manual_seed(21);  // the same dropout masks in both runs
  const at::Tensor logits = t.model.forward(t.input);  // (B, T, V)
  const at::Tensor loss = at::cross_entropy_loss(logits.to(at::kFloat).reshape({-1, logits.size(-1)}),
                                                 t.labels.reshape({-1}));
  loss.backward();
  Pass r{loss.detach(), {}};
  for (const io::NamedTensor& p : params) {
    EXPECT_TRUE(p.tensor.grad().defined()) << p.name;
    r.grads.push_back(p.tensor.grad().clone());
  }
  return r;
}

void check_model(at::ScalarType dtype, const std::string& dtype_name, double rel_tol) {
  TinyModel t = make_model(dtype, dtype_name, 0.0);
  const Pass off = loss_and_grads(t, false);
  const Pass on = loss_and_grads(t, true);
  const double loss = off.loss.item<double>();
  EXPECT_NEAR(on.loss.item<double>(), loss, rel_tol * loss);
  const std::vector<io::NamedTensor> params = t.set->parameters();
  ASSERT_EQ(on.grads.size(), params.size());
  for (size_t i = 0; i < params.size(); ++i) expect_close(on.grads[i], off.grads[i], rel_tol, params[i].name);
}

// fp32: the same products in another grouping. bf16: d x of q/k/v and gate/up is summed in another order in bf16
// (one rounding of a few ulps), which every earlier layer's gradients inherit.
TEST(LoraGroupTest, ModelLossAndAdapterGradientsAgreeWithGroupingOnAndOffFp32) {
  check_model(at::kFloat, "float32", 1e-5);
}
TEST(LoraGroupTest, ModelLossAndAdapterGradientsAgreeWithGroupingOnAndOffBf16) {
  check_model(at::kBFloat16, "bfloat16", 2e-2);
}

TEST(LoraGroupTest, ModelWithDropoutIsBitIdenticalWithGroupingOn) {
  // Every adapter draws its own mask, so nothing groups: the same masks, the same bits.
  TinyModel t = make_model(at::kFloat, "float32", 0.1);
  const Pass off = loss_and_grads(t, false);
  const Pass on = loss_and_grads(t, true);
  EXPECT_TRUE(at::equal(on.loss, off.loss));
  for (size_t i = 0; i < on.grads.size(); ++i) EXPECT_TRUE(at::equal(on.grads[i], off.grads[i])) << i;
}

// Counts the model's calls, then groups as lora_group_forward does.
int g_group_calls = 0;
std::vector<size_t> g_group_sizes;
std::vector<at::Tensor> counting_group_forward(std::span<const model::Linear* const> projections, const at::Tensor& x) {
  ++g_group_calls;
  g_group_sizes.push_back(projections.size());
  return lora_group_forward(projections, x);
}

TEST(LoraGroupTest, ModelCallsTheGroupForQkvAndGateUpOfEveryLayer) {
  TinyModel t = make_model(at::kFloat, "float32", 0.0);
  const Pass plain = loss_and_grads(t, true);
  t.model.set_projection_group_forward(&counting_group_forward);
  g_group_calls = 0;
  g_group_sizes.clear();
  at::manual_seed(21);
  const at::Tensor logits = t.model.forward(t.input);
  EXPECT_EQ(g_group_calls, 4);  // 2 layers × (attention, MLP)
  EXPECT_EQ(g_group_sizes, (std::vector<size_t>{3, 2, 3, 2}));
  // Activation checkpointing recomputes each layer in the backward pass, through the group again: same values.
  t.model.set_projection_group_forward(&lora_group_forward);
  t.model.set_activation_checkpointing(true);
  const Pass checkpointed = loss_and_grads(t, true);
  t.model.set_activation_checkpointing(false);
  EXPECT_TRUE(at::equal(checkpointed.loss, plain.loss));
  for (size_t i = 0; i < plain.grads.size(); ++i) EXPECT_TRUE(at::equal(checkpointed.grads[i], plain.grads[i])) << i;
  set_lora_grouping(t.model, false);
  EXPECT_EQ(t.model.projection_group_forward(), nullptr);
}

}  // namespace
}  // namespace freehold::adapters
