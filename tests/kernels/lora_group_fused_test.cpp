// LoRA projections sharing one input as one autograd node (lora_group_fused) against one lora_linear_reference per
// projection (lora_group_reference): outputs and the gradients of x and of every lora_A and lora_B, over odd token
// counts, a different r and out per member, a bias on some, fp32 and a bf16 base with fp32 adapters, strided x,
// one member, members without a gradient, and the argument checks.
#include "kernels/lora_group_fused.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/equal.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <string>
#include <vector>

#include "kernels/lora_linear_fused.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using testing::seeded_randn;

struct MemberShape {
  int64_t out, r;
  bool bias;
  double scale;
};

struct Result {
  std::vector<at::Tensor> y;        // per member
  at::Tensor x_grad;                // undefined when x needs none
  std::vector<at::Tensor> A_grads;  // per member
  std::vector<at::Tensor> B_grads;
};

// Fresh leaves for x (keeping its strides) and every lora_A and lora_B, one pass, backward with `dys`.
Result run(bool fused, const at::Tensor& x_in, bool x_grad, const std::vector<LoraGroupMember>& members_in,
           const std::vector<at::Tensor>& dys) {
  at::Tensor x = x_in.detach();
  if (x_grad) x.set_requires_grad(true);
  std::vector<LoraGroupMember> members = members_in;
  for (LoraGroupMember& m : members) {
    m.lora_A = m.lora_A.detach().clone().set_requires_grad(true);
    m.lora_B = m.lora_B.detach().clone().set_requires_grad(true);
  }
  Result r;
  r.y = fused ? lora_group_fused(x, members) : lora_group_reference(x, members);
  torch::autograd::backward(r.y, dys);
  for (at::Tensor& y : r.y) y = y.detach();
  if (x_grad) r.x_grad = x.grad();
  for (const LoraGroupMember& m : members) {
    r.A_grads.push_back(m.lora_A.grad());
    r.B_grads.push_back(m.lora_B.grad());
  }
  return r;
}

// max |a − b| <= rel · max |b|, and the same dtype and shape.
void expect_close(const at::Tensor& a, const at::Tensor& b, double rel, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_EQ(a.scalar_type(), b.scalar_type()) << what;
  const double scale = b.to(at::kDouble).abs().max().item<double>();
  const double diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  EXPECT_GT(scale, 0) << what << ": an all-zero reference checks nothing";
  EXPECT_LE(diff, rel * scale) << what << ": max difference " << diff << ", largest element " << scale;
}

std::vector<LoraGroupMember> make_members(const std::vector<MemberShape>& shapes, int64_t in, at::ScalarType base,
                                          at::ScalarType adapter, uint64_t seed) {
  std::vector<LoraGroupMember> members;
  for (const MemberShape& s : shapes) {
    seed += 10;
    members.push_back({seeded_randn({s.out, in}, base, seed) * 0.2,
                       s.bias ? seeded_randn({s.out}, base, seed + 1) : at::Tensor(),
                       seeded_randn({s.r, in}, adapter, seed + 2) * 0.3,
                       seeded_randn({s.out, s.r}, adapter, seed + 3) * 0.3, s.scale});
  }
  return members;
}

// Outputs and gradients within the tolerances stated below.
void check(const at::Tensor& x, const std::vector<MemberShape>& shapes, bool x_grad, uint64_t seed) {
  const at::ScalarType base = x.scalar_type();
  const std::vector<LoraGroupMember> members = make_members(shapes, x.size(-1), base, at::kFloat, seed);
  std::vector<at::Tensor> dys;
  for (size_t i = 0; i < shapes.size(); ++i) {
    std::vector<int64_t> y_shape(x.sizes().begin(), x.sizes().end());
    y_shape.back() = shapes[i].out;
    dys.push_back(seeded_randn(y_shape, base, seed + 100 + i));
  }
  const Result ref = run(false, x, x_grad, members, dys);
  const Result got = run(true, x, x_grad, members, dys);
  // fp32: the same products summed in another grouping. bf16 base: the output is rounded to bf16 once on both
  // sides (at most one ulp apart); d x adds the members' parts in another order in bf16 (autograd adds n rounded
  // partial gradients): a few bf16 roundings of the sum.
  const double rel_y = base == at::kFloat ? 1e-5 : 1e-2;
  const double rel_x = base == at::kFloat ? 1e-5 : 2e-2;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const std::string m = "member " + std::to_string(i);
    expect_close(got.y[i], ref.y[i], rel_y, m + " y");
    // d lora_A and d lora_B are fp32 GEMMs over fp32 copies of the same operands on both sides.
    expect_close(got.A_grads[i], ref.A_grads[i], 1e-5, m + " d lora_A");
    expect_close(got.B_grads[i], ref.B_grads[i], 1e-5, m + " d lora_B");
  }
  if (x_grad) {
    expect_close(got.x_grad, ref.x_grad, rel_x, "d x");
  } else {
    EXPECT_FALSE(got.x_grad.defined());
  }
}

// q/k/v-like: three members with different out and r, a bias on two; gate/up-like: two members of one shape.
const std::vector<MemberShape> kQkv = {{33, 4, true, 2.0}, {11, 1, false, 0.5}, {11, 3, true, 1.5}};
const std::vector<MemberShape> kGateUp = {{40, 5, false, 2.0}, {40, 5, false, 2.0}};

TEST(LoraGroupFusedTest, MatchesReferenceOverOddTokenCounts) {
  uint64_t seed = 1;
  for (at::ScalarType base : {at::kFloat, at::kBFloat16}) {
    for (int64_t T : {1, 7, 129, 4097}) {
      for (const auto* shapes : {&kQkv, &kGateUp}) {
        SCOPED_TRACE(::testing::Message() << base << " T " << T << " members " << shapes->size());
        seed += 1000;
        check(seeded_randn({T, 24}, base, seed), *shapes, /*x_grad=*/true, seed);
      }
    }
  }
}

TEST(LoraGroupFusedTest, BatchedInputAndOddWidth) {
  for (at::ScalarType base : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(::testing::Message() << base);
    check(seeded_randn({2, 9, 65}, base, 20), kQkv, true, 21);
    check(seeded_randn({3, 5, 129}, base, 22), kGateUp, true, 23);
  }
}

TEST(LoraGroupFusedTest, NonContiguousInput) {
  for (at::ScalarType base : {at::kFloat, at::kBFloat16}) {
    const at::Tensor x = seeded_randn({40, 3, 24}, base, 30).transpose(0, 1);  // (3, 40, 24), strided
    ASSERT_FALSE(x.is_contiguous());
    check(x, kQkv, true, 31);
  }
}

TEST(LoraGroupFusedTest, OneMemberAndNoInputGradient) {
  // One member is lora_linear_reference itself; the first layer's input comes from the frozen embedding, so no d x.
  check(seeded_randn({6, 17}, at::kFloat, 50), {{9, 2, true, 1.0}}, /*x_grad=*/true, 51);
  check(seeded_randn({6, 17}, at::kFloat, 52), kQkv, /*x_grad=*/false, 53);
}

TEST(LoraGroupFusedTest, FrozenAdapterGetsNoGradient) {
  std::vector<LoraGroupMember> members = make_members(kQkv, 12, at::kFloat, at::kFloat, 60);
  const at::Tensor x = seeded_randn({5, 12}, at::kFloat, 61).set_requires_grad(true);
  members[0].lora_A.set_requires_grad(true);
  members[0].lora_B.set_requires_grad(true);
  members[2].lora_B.set_requires_grad(true);  // member 1 and member 2's A stay frozen
  const std::vector<at::Tensor> y = lora_group_fused(x, members);
  (y[0].sum() + y[1].sum() + y[2].sum()).backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_TRUE(members[0].lora_A.grad().defined());
  EXPECT_TRUE(members[0].lora_B.grad().defined());
  EXPECT_FALSE(members[1].lora_A.grad().defined());
  EXPECT_FALSE(members[1].lora_B.grad().defined());
  EXPECT_FALSE(members[2].lora_A.grad().defined());
  EXPECT_TRUE(members[2].lora_B.grad().defined());
}

TEST(LoraGroupFusedTest, UnusedOutputCountsAsZeroGradient) {
  // Only q is used: k and v get no gradient from the loss, so their B gradients are zero and d x is q's alone.
  const std::vector<LoraGroupMember> members = make_members(kQkv, 12, at::kFloat, at::kFloat, 70);
  const at::Tensor x = seeded_randn({5, 12}, at::kFloat, 71);
  auto grads = [&](bool fused) {
    std::vector<LoraGroupMember> m = members;
    for (LoraGroupMember& e : m) e.lora_B = e.lora_B.clone().set_requires_grad(true);
    at::Tensor xg = x.clone().set_requires_grad(true);
    (fused ? lora_group_fused(xg, m) : lora_group_reference(xg, m))[0].sum().backward();
    return std::vector<at::Tensor>{xg.grad(), m[0].lora_B.grad(), m[1].lora_B.grad()};
  };
  const std::vector<at::Tensor> got = grads(true), ref = grads(false);
  expect_close(got[0], ref[0], 1e-5, "d x");
  expect_close(got[1], ref[1], 1e-5, "q d lora_B");
  EXPECT_EQ(got[2].abs().max().item<float>(), 0.0f);
}

TEST(LoraGroupFusedTest, BadArgumentsNameTheMemberAndShape) {
  const at::Tensor x = seeded_randn({5, 12}, at::kFloat, 80);
  auto expect_error = [&](std::vector<LoraGroupMember> members, const std::string& message) {
    try {
      (void)lora_group_fused(x, members);
      ADD_FAILURE() << "no error for " << message;
    } catch (const c10::Error& e) {
      EXPECT_THAT(e.what_without_backtrace(), ::testing::HasSubstr(message));
    }
  };
  const std::vector<LoraGroupMember> good = make_members(kQkv, 12, at::kFloat, at::kFloat, 81);
  expect_error({}, "needs at least one member, got none");
  std::vector<LoraGroupMember> bad = good;
  bad[1].lora_B = bad[1].lora_B.t();
  expect_error(bad, "member 1: lora_B must be (11, 1), got [1, 11]");
  bad = good;
  bad[2].lora_A = bad[2].lora_A.to(at::kBFloat16);
  expect_error(bad, "member 2: lora_A and lora_B must have the group's adapter dtype Float, got BFloat16");
  bad = good;
  bad[0].weight = seeded_randn({33, 13}, at::kFloat, 82);
  expect_error(bad, "member 0: weight must be (out, 12) to read x [5, 12], got [33, 13]");
}

}  // namespace
}  // namespace freehold::kernels
