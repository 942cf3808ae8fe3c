// Loss normalisation: token-weighted over the step, HF shift, zero-target micro-batches give 0 and no NaN.
#include "trainer/loss.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/full.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include <cmath>

#include "data/batch.h"

namespace freehold::trainer {
namespace {

constexpr int64_t kI = data::kIgnoreIndex;

double nll(const at::Tensor& logits, int64_t b, int64_t t, int64_t label) {
  return -at::log_softmax(logits[b][t].to(at::kDouble), 0)[label].item<double>();
}

TEST(LossTest, HfShiftAndIgnoredPositions) {
  at::Tensor logits = at::randn({2, 4, 5});
  at::Tensor labels = at::tensor(std::vector<int64_t>{kI, 1, 2, kI, 3, kI, 4, 0}).reshape({2, 4});
  EXPECT_EQ(count_target_tokens(labels), 4);  // labels[1][0] = 3 is never a target: nothing predicts it
  const double expected = nll(logits, 0, 0, 1) + nll(logits, 0, 1, 2) + nll(logits, 1, 1, 4) + nll(logits, 1, 2, 0);
  EXPECT_NEAR(sum_cross_entropy(logits, labels).item<double>(), expected, 1e-5);
  EXPECT_NEAR(micro_batch_loss(logits, labels, 8).item<double>(), expected / 8, 1e-6);
}

TEST(LossTest, TokenWeightedAcrossMicroBatches) {
  // Two micro-batches with 1 and 3 targets: the step loss is the mean over the 4 tokens, not the mean of means.
  at::Tensor l1 = at::randn({1, 3, 6}), l2 = at::randn({1, 4, 6});
  at::Tensor y1 = at::tensor(std::vector<int64_t>{0, kI, 2}).reshape({1, 3});
  at::Tensor y2 = at::tensor(std::vector<int64_t>{0, 1, 2, 3}).reshape({1, 4});
  const int64_t n = count_target_tokens(y1) + count_target_tokens(y2);
  ASSERT_EQ(n, 4);
  const double step = micro_batch_loss(l1, y1, n).item<double>() + micro_batch_loss(l2, y2, n).item<double>();
  const double expected = (nll(l1, 0, 1, 2) + nll(l2, 0, 0, 1) + nll(l2, 0, 1, 2) + nll(l2, 0, 2, 3)) / 4;
  EXPECT_NEAR(step, expected, 1e-6);
}

TEST(LossTest, ZeroTargetsGiveZeroAndFiniteGradients) {
  at::Tensor logits = at::randn({2, 3, 4}).set_requires_grad(true);
  at::Tensor labels = at::full({2, 3}, kI, at::kLong);
  EXPECT_EQ(count_target_tokens(labels), 0);
  at::Tensor loss = micro_batch_loss(logits, labels, 0);
  EXPECT_EQ(loss.item<double>(), 0.0);
  loss.backward();
  EXPECT_TRUE(at::isfinite(logits.grad()).all().item<bool>());
  EXPECT_EQ(logits.grad().abs().sum().item<double>(), 0.0);
  // A single-token row has nothing to predict.
  at::Tensor one = at::randn({1, 1, 4}).set_requires_grad(true);
  EXPECT_EQ(micro_batch_loss(one, at::full({1, 1}, int64_t{2}, at::kLong), 3).item<double>(), 0.0);
}

}  // namespace
}  // namespace freehold::trainer
