// The trainer's loss with the fused linear + cross-entropy against the unfused forward() + sum_cross_entropy: the
// HF shift and ignored labels on random tensors, then a whole tiny random model with LoRA adapters, whose loss and
// every adapter gradient must agree with model.fused_kernels on and off (fp32 and bf16): the fused loss and the
// fused LoRA projections and the fused RMSNorm backward together, dropout included.
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "adapters/adapter_set.h"
#include "data/batch.h"
#include "kernels/rms_norm.h"
#include "kernels/self_check.h"
#include "model/transformer.h"
#include "tests/model/tiny_checkpoint.h"
#include "trainer/loss.h"

namespace freehold::trainer {
namespace {

constexpr int64_t kI = data::kIgnoreIndex;

TEST(FusedLossTest, SameAsLogitsLossWithShiftAndIgnoredLabels) {
  const at::Tensor hidden = at::randn({2, 5, 8});
  const at::Tensor weight = at::randn({37, 8});
  const at::Tensor labels = at::tensor(std::vector<int64_t>{kI, 1, 36, kI, 3, 7, 4, 0, kI, kI}).reshape({2, 5});
  const double expected = sum_cross_entropy(at::linear(hidden, weight), labels).item<double>();
  EXPECT_NEAR(sum_linear_cross_entropy(hidden, weight, labels, true).item<double>(), expected, 1e-5 * expected);
  EXPECT_NEAR(sum_linear_cross_entropy(hidden, weight, labels, false).item<double>(), expected, 1e-5 * expected);
  // One position per row: nothing to predict.
  EXPECT_EQ(sum_linear_cross_entropy(hidden.narrow(1, 0, 1), weight, labels.narrow(1, 0, 1), true).item<double>(), 0);
}

struct Run {
  double loss = 0;
  std::vector<at::Tensor> grads;  // one per adapter tensor, in AdapterSet::parameters() order
};

Run loss_and_grads(const model::Transformer& model, const adapters::AdapterSet& set, const model::ForwardInput& in,
                   const at::Tensor& labels, model::FusedKernels fused) {
  // As the trainer does: the adapters and the loss follow model.fused_kernels.
  const bool use_fused = use_fused_kernels(fused, model);
  for (const adapters::AdapterSet::Entry& e : set.entries()) e.adapter->set_fused(use_fused);
  kernels::set_fused_kernels_enabled(use_fused);
  std::vector<io::NamedTensor> params = set.parameters();
  for (io::NamedTensor& p : params) p.tensor.mutable_grad() = at::Tensor();
  at::manual_seed(5);
  const at::Tensor loss = model_sum_cross_entropy(model, in, labels, fused) / 11.0;
  loss.backward();
  Run r;
  r.loss = loss.item<double>();
  for (const io::NamedTensor& p : params) {
    EXPECT_TRUE(p.tensor.grad().defined()) << p.name;
    r.grads.push_back(p.tensor.grad().clone());
  }
  return r;
}

void check_model(at::ScalarType dtype, const std::string& dtype_name, double rel_tol) {
  const std::string dir = model::testing::make_temp_dir("fused_loss_" + dtype_name);
  // V = 301 (odd, over one 256-lane block), C = 32, 2 layers, GQA 4/2 heads.
  model::testing::write_checkpoint(dir, model::testing::llama_config_json(301, 32, 64, 2, 4, 2, dtype_name), dtype, 7);
  model::Transformer model = model::Transformer::load(dir);
  adapters::LoraOptions options;
  options.r = 4;
  options.alpha = 8;
  options.dropout = 0.1;  // both paths draw one seed per mask (kernels/dropout.h): reseeded, the same masks
  adapters::AdapterSet set = adapters::AdapterSet::create(model, options, 3);
  set.set_training(true);
  {  // B starts at zero, which would make every lora_A gradient zero: give it values.
    at::NoGradGuard no_grad;
    for (const io::NamedTensor& p : set.parameters()) {
      if (p.name.find("lora_B") != std::string::npos) p.tensor.copy_(at::randn(p.tensor.sizes()) * 0.05);
    }
  }
  at::Tensor ids = at::randint(301, {2, 13}, at::TensorOptions().dtype(at::kLong));
  at::Tensor labels = ids.clone();
  labels[0][4] = kI;
  labels[1][9] = kI;
  const model::ForwardInput in{ids, at::Tensor(), at::Tensor()};

  const Run off = loss_and_grads(model, set, in, labels, model::FusedKernels::kOff);
  const Run on = loss_and_grads(model, set, in, labels, model::FusedKernels::kOn);
  EXPECT_NEAR(on.loss, off.loss, rel_tol * off.loss);
  ASSERT_EQ(on.grads.size(), off.grads.size());
  const std::vector<io::NamedTensor> params = set.parameters();
  for (size_t i = 0; i < on.grads.size(); ++i) {
    const double scale = off.grads[i].to(at::kDouble).abs().max().item<double>();
    const double diff = (on.grads[i].to(at::kDouble) - off.grads[i].to(at::kDouble)).abs().max().item<double>();
    EXPECT_GT(scale, 0) << params[i].name;
    EXPECT_LE(diff, rel_tol * scale) << params[i].name << ": fused and unfused gradients differ by " << diff
                                     << " (largest element " << scale << ")";
  }
  // auto on a CPU whose kernels pass the self-check is the fused path ...
  kernels::reset_self_check_for_testing("");
  EXPECT_EQ(loss_and_grads(model, set, in, labels, model::FusedKernels::kAuto).loss, on.loss);
  // ... and after a failed self-check, the unfused one.
  kernels::reset_self_check_for_testing("linear_cross_entropy");
  EXPECT_EQ(loss_and_grads(model, set, in, labels, model::FusedKernels::kAuto).loss, off.loss);
  kernels::reset_self_check_for_testing("");
  kernels::set_fused_kernels_enabled(true);
}

// fp32: summation order and the 3-ulp exp only. bf16: d logits is rounded to bf16 before the 1/N scaling instead of
// after, which moves gradients by about one bf16 ulp (2^-8) of their size.
TEST(FusedLossTest, WholeModelLossAndAdapterGradientsAgreeFp32) { check_model(at::kFloat, "float32", 1e-4); }
TEST(FusedLossTest, WholeModelLossAndAdapterGradientsAgreeBf16) { check_model(at::kBFloat16, "bfloat16", 2e-2); }

}  // namespace
}  // namespace freehold::trainer
