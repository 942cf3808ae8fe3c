// The fused AdamW step against its ATen reference on the CPU: bit for bit over many tensors of odd sizes, with and
// without weight decay, LoRA+ learning rates, both lerp branches and several steps; tensors without a gradient;
// the refusals of the fused binding and the dispatcher's fallback; a NaN gradient. ctest runs this file a second
// time with ATEN_CPU_CAPABILITY=default (tests/kernels/CMakeLists.txt), where ATen rounds every product
// separately, so both contractions of adamw_math.h are proven against the ATen they stand for.
#include "kernels/adamw.h"

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "kernels/adamw_cpu.h"
#include "kernels/rms_norm.h"  // set_fused_kernels_enabled
#include "kernels/self_check.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using ::testing::HasSubstr;
using testing::count_bit_differences;
using testing::seeded_randn;

// Parameters and optimizer state of an adapter-like set of tensors.
struct TensorSet {
  std::vector<at::Tensor> params, exp_avgs, exp_avg_sqs;

  TensorSet clone() const {
    TensorSet out;
    for (const at::Tensor& t : params) out.params.push_back(t.clone());
    for (const at::Tensor& t : exp_avgs) out.exp_avgs.push_back(t.clone());
    for (const at::Tensor& t : exp_avg_sqs) out.exp_avg_sqs.push_back(t.clone());
    return out;
  }
};

// Odd sizes around the CPU chunk (2048) and ATen's vector widths, LoRA-like 2-D shapes and an empty tensor.
const std::vector<std::vector<int64_t>> kShapes = {{1},    {7},      {129},   {4097},    {2048}, {2049},
                                                   {16, 129}, {129, 16}, {3, 5, 7}, {0, 16}, {16, 576}, {1536, 16}};

TensorSet make_set(uint64_t seed) {
  TensorSet s;
  for (const auto& shape : kShapes) {
    s.params.push_back(seeded_randn(shape, at::kFloat, seed++) * 0.1);
    s.exp_avgs.push_back(at::zeros(shape, at::kFloat));
    s.exp_avg_sqs.push_back(at::zeros(shape, at::kFloat));
  }
  return s;
}

// Step `step`'s gradients: magnitudes from 1e-6 to 10 by tensor, and every fifth tensor (rotating) without one.
std::vector<at::Tensor> make_grads(const TensorSet& s, int64_t step, uint64_t seed) {
  std::vector<at::Tensor> grads;
  for (size_t i = 0; i < s.params.size(); ++i) {
    if ((static_cast<int64_t>(i) + step) % 5 == 0) {
      grads.emplace_back();
      continue;
    }
    const double scale = std::pow(10.0, static_cast<double>(i % 8) - 6);
    grads.push_back(seeded_randn(s.params[i].sizes().vec(), at::kFloat, seed + 1000 * step + i) * scale);
  }
  return grads;
}

// LoRA+: every other tensor is in the B group (lr × 16), and the schedule scales both.
std::vector<double> make_lrs(size_t n, double lr, double factor) {
  std::vector<double> lrs;
  for (size_t i = 0; i < n; ++i) lrs.push_back((lr * (i % 2 == 1 ? 16.0 : 1.0)) * factor);
  return lrs;
}

void expect_same_bits(const TensorSet& fused, const TensorSet& reference, const std::string& where) {
  for (size_t i = 0; i < fused.params.size(); ++i) {
    SCOPED_TRACE(where + " tensor " + std::to_string(i) + " shape " + c10::str(fused.params[i].sizes()));
    EXPECT_EQ(count_bit_differences(fused.params[i], reference.params[i]), 0);
    EXPECT_EQ(count_bit_differences(fused.exp_avgs[i], reference.exp_avgs[i]), 0);
    EXPECT_EQ(count_bit_differences(fused.exp_avg_sqs[i], reference.exp_avg_sqs[i]), 0);
  }
}

// The machine's ATen must be one the CPU kernel reproduces; otherwise adamw_step() falls back and these tests
// would prove nothing.
void require_matching_arithmetic() {
  const AdamWCpuArithmetic& a = adamw_cpu_arithmetic();
  ASSERT_TRUE(a.matches_aten) << a.description;
  const char* capability = std::getenv("ATEN_CPU_CAPABILITY");
  if (capability != nullptr && std::string(capability) == "default") {
    EXPECT_EQ(a.contraction, AdamWContraction::kSeparate) << a.description;
  }
}

struct Config {
  const char* name;
  AdamWHyperparameters hyper;
};

TEST(AdamWKernelTest, FusedIsBitIdenticalToReferenceOverOddSizesAndSteps) {
  require_matching_arithmetic();
  const Config configs[] = {
      {"defaults, no weight decay", {0.9, 0.999, 1e-8, 0.0}},
      {"weight decay, beta1 0.8", {0.8, 0.95, 1e-6, 0.1}},
      {"beta1 0.3: lerp's second branch, eps 0", {0.3, 0.5, 0.0, 0.01}},
  };
  uint64_t seed = 100;
  for (const Config& config : configs) {
    SCOPED_TRACE(config.name);
    const TensorSet start = make_set(seed += 50);
    TensorSet fused = start.clone(), reference = start.clone();
    const double factors[] = {1.0, 0.5, 0.25, 0.9, 1e-3, 0.0};  // the last: a schedule at lr 0
    for (int64_t step = 1; step <= 6; ++step) {
      const std::vector<at::Tensor> grads = make_grads(start, step, seed);
      const std::vector<double> lrs = make_lrs(start.params.size(), 2e-3, factors[step - 1]);
      adamw_step_fused(fused.params, grads, fused.exp_avgs, fused.exp_avg_sqs, lrs, config.hyper, step);
      adamw_step_reference(reference.params, grads, reference.exp_avgs, reference.exp_avg_sqs, lrs, config.hyper,
                           step);
      expect_same_bits(fused, reference, "step " + std::to_string(step));
    }
    // The steps moved the parameters (a kernel that did nothing would fail here, not above).
    EXPECT_GT(count_bit_differences(fused.params[3], start.params[3]), 4000);
  }
}

TEST(AdamWKernelTest, TensorsWithoutGradientAreLeftAlone) {
  require_matching_arithmetic();
  TensorSet s = make_set(7);
  const TensorSet before = s.clone();
  std::vector<at::Tensor> grads = make_grads(s, 1, 8);
  ASSERT_FALSE(grads[4].defined());
  grads[0] = at::Tensor();
  adamw_step_fused(s.params, grads, s.exp_avgs, s.exp_avg_sqs, make_lrs(s.params.size(), 1e-2, 1.0),
                   {0.9, 0.999, 1e-8, 0.1}, 1);
  for (size_t i : {0, 4}) {
    EXPECT_EQ(count_bit_differences(s.params[i], before.params[i]), 0) << i;  // not even decayed
    EXPECT_EQ(count_bit_differences(s.exp_avgs[i], before.exp_avgs[i]), 0) << i;
    EXPECT_EQ(count_bit_differences(s.exp_avg_sqs[i], before.exp_avg_sqs[i]), 0) << i;
  }
  EXPECT_GT(count_bit_differences(s.params[3], before.params[3]), 4000);
}

TEST(AdamWKernelTest, BitsDoNotDependOnTheThreadCount) {
  require_matching_arithmetic();
  const TensorSet start = make_set(300);
  TensorSet one = start.clone(), many = start.clone();
  const std::vector<at::Tensor> grads = make_grads(start, 2, 301);
  const std::vector<double> lrs = make_lrs(start.params.size(), 1e-3, 1.0);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  adamw_step_fused(one.params, grads, one.exp_avgs, one.exp_avg_sqs, lrs, {}, 3);
  at::set_num_threads(std::max(threads, 2));
  adamw_step_fused(many.params, grads, many.exp_avgs, many.exp_avg_sqs, lrs, {}, 3);
  at::set_num_threads(threads);
  expect_same_bits(one, many, "1 thread vs several");
}

TEST(AdamWKernelTest, FusedRefusesNonContiguousAndNonFloat32AndStepRoutesThemToTheReference) {
  require_matching_arithmetic();
  const AdamWHyperparameters hyper{0.9, 0.999, 1e-8, 0.05};
  // A transposed (strided) parameter, and a double-precision set.
  const at::Tensor p = seeded_randn({16, 129}, at::kFloat, 1).t();
  const at::Tensor g = seeded_randn({129, 16}, at::kFloat, 2);
  const std::vector<double> lrs = {1e-2};
  {
    std::vector<at::Tensor> params = {p.clone()}, m = {at::zeros({129, 16})}, v = {at::zeros({129, 16})};
    ASSERT_FALSE(params[0].is_contiguous());
    try {
      adamw_step_fused(params, {g}, m, v, lrs, hyper, 1);
      ADD_FAILURE() << "a non-contiguous parameter was accepted";
    } catch (const c10::Error& e) {
      EXPECT_THAT(e.what_without_backtrace(),
                  HasSubstr("params[0] (shape [129, 16], strides [1, 129]) is not contiguous"));
    }
    std::vector<at::Tensor> ref_params = {params[0].clone()}, ref_m = {m[0].clone()}, ref_v = {v[0].clone()};
    ASSERT_FALSE(ref_params[0].is_contiguous());  // clone keeps the strides
    adamw_step(params, {g}, m, v, lrs, hyper, 1);
    adamw_step_reference(ref_params, {g}, ref_m, ref_v, lrs, hyper, 1);
    EXPECT_EQ(count_bit_differences(params[0], ref_params[0]), 0);
    EXPECT_EQ(count_bit_differences(m[0], ref_m[0]), 0);
    EXPECT_GT(count_bit_differences(params[0], p), 2000);
  }
  {
    const auto f64 = at::TensorOptions().dtype(at::kDouble);
    std::vector<at::Tensor> params = {p.contiguous().to(at::kDouble)}, m = {at::zeros({129, 16}, f64)},
                            v = {at::zeros({129, 16}, f64)};
    const std::vector<at::Tensor> grads = {g.to(at::kDouble)};
    try {
      adamw_step_fused(params, grads, m, v, lrs, hyper, 1);
      ADD_FAILURE() << "a double parameter was accepted";
    } catch (const c10::Error& e) {
      EXPECT_THAT(e.what_without_backtrace(), HasSubstr("params[0] is Double; the fused kernels take Float only"));
    }
    std::vector<at::Tensor> ref_params = {params[0].clone()}, ref_m = {m[0].clone()}, ref_v = {v[0].clone()};
    adamw_step(params, grads, m, v, lrs, hyper, 1);
    adamw_step_reference(ref_params, grads, ref_m, ref_v, lrs, hyper, 1);
    EXPECT_TRUE(params[0].equal(ref_params[0]));
    EXPECT_FALSE(params[0].equal(p.contiguous().to(at::kDouble)));
  }
  {  // A float32 gradient that is a strided view: refused by name.
    std::vector<at::Tensor> params = {p.contiguous()}, m = {at::zeros({129, 16})}, v = {at::zeros({129, 16})};
    const std::vector<at::Tensor> grads = {seeded_randn({16, 129}, at::kFloat, 3).t()};
    EXPECT_THAT(adamw_fused_refusal(params, grads, m, v), HasSubstr("grads[0]"));
  }
}

TEST(AdamWKernelTest, ArgumentsAreCheckedWithTheirValues) {
  std::vector<at::Tensor> params = {at::zeros({3})}, m = {at::zeros({3})}, v = {at::zeros({4})};
  const std::vector<at::Tensor> grads = {at::ones({3})};
  const std::vector<double> lrs = {1e-3};
  try {
    adamw_step_fused(params, grads, m, v, lrs, {}, 1);
    ADD_FAILURE() << "a mismatched exp_avg_sq was accepted";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), HasSubstr("exp_avg_sqs[0] must match params[0] (shape [3]"));
  }
  v = {at::zeros({3})};
  EXPECT_THROW(adamw_step_reference(params, grads, m, v, lrs, {}, 0), c10::Error);  // step counts this step
  EXPECT_THROW(adamw_step(params, grads, m, v, {}, {}, 1), c10::Error);             // one lr per tensor
  EXPECT_THROW(adamw_step(params, grads, m, v, {std::nan("")}, {}, 1), c10::Error);
  EXPECT_THROW(adamw_step(params, grads, m, v, lrs, {1.0, 0.999, 1e-8, 0.0}, 1), c10::Error);  // beta1 < 1
}

// The caller guarantees finite gradients (the trainer skips a non-finite step), but a NaN must not crash and must
// do what the reference does: NaN in that tensor's elements whose gradient is NaN, every other bit as the reference.
TEST(AdamWKernelTest, NanGradientPoisonsOnlyItsElementsAsTheReferenceDoes) {
  require_matching_arithmetic();
  const TensorSet start = make_set(500);
  TensorSet fused = start.clone(), reference = start.clone();
  std::vector<at::Tensor> grads = make_grads(start, 1, 501);
  ASSERT_TRUE(grads[3].defined());
  grads[3][17] = std::numeric_limits<float>::quiet_NaN();
  grads[3][4096] = std::numeric_limits<float>::infinity();
  const std::vector<double> lrs = make_lrs(start.params.size(), 1e-3, 1.0);
  adamw_step_fused(fused.params, grads, fused.exp_avgs, fused.exp_avg_sqs, lrs, {0.9, 0.999, 1e-8, 0.1}, 1);
  adamw_step_reference(reference.params, grads, reference.exp_avgs, reference.exp_avg_sqs, lrs,
                       {0.9, 0.999, 1e-8, 0.1}, 1);
  for (size_t i = 0; i < start.params.size(); ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i));
    const at::Tensor* pairs[3][2] = {{&fused.params[i], &reference.params[i]},
                                     {&fused.exp_avgs[i], &reference.exp_avgs[i]},
                                     {&fused.exp_avg_sqs[i], &reference.exp_avg_sqs[i]}};
    for (const auto& pair : pairs) {
      const at::Tensor nan_fused = at::isnan(*pair[0]), nan_reference = at::isnan(*pair[1]);
      EXPECT_TRUE(nan_fused.equal(nan_reference));
      const at::Tensor finite = nan_fused.logical_not();
      EXPECT_EQ(count_bit_differences(pair[0]->masked_select(finite), pair[1]->masked_select(finite)), 0);
    }
  }
  EXPECT_TRUE(std::isnan(fused.params[3][17].item<float>()));
  EXPECT_TRUE(std::isnan(fused.params[3][4096].item<float>()));  // inf/inf in m/sqrt(v)
  EXPECT_EQ(at::isnan(fused.params[3]).sum().item<int64_t>(), 2);
}

// The CPU kernel's square root is ATen's: MKL's, where the wheel has it, which is not always correctly rounded.
TEST(AdamWKernelTest, SqrtOfTheKernelIsAtensSqrt) {
  require_matching_arithmetic();
  const at::Tensor x =
      seeded_randn({4099}, at::kFloat, 900).abs() * at::pow(10.0, seeded_randn({4099}, at::kFloat, 901) * 4);
  at::Tensor ours = at::empty_like(x);
  const AdamWSqrtFn fn = adamw_cpu_arithmetic().mkl_sqrt ? adamw_mkl_sqrt() : &adamw_sqrt_correctly_rounded;
  for (int64_t i = 0; i < x.numel(); i += kAdamWCpuChunk) {
    fn(x.const_data_ptr<float>() + i, ours.mutable_data_ptr<float>() + i, std::min(kAdamWCpuChunk, x.numel() - i));
  }
  EXPECT_EQ(count_bit_differences(ours, x.sqrt()), 0) << adamw_cpu_arithmetic().description;
}

// The two contractions differ (so the probe that picks one is meaningful) and each rounds as its name says.
TEST(AdamWKernelTest, ContractionsRoundAsNamed) {
  const float w = 0.1f;
  const at::Tensor a = seeded_randn({1000}, at::kFloat, 1), b = seeded_randn({1000}, at::kFloat, 2);
  int differing = 0;
  for (int64_t i = 0; i < 1000; ++i) {
    const float m = a[i].item<float>(), g = b[i].item<float>();
    const float separate = adamw_lerp<AdamWContraction::kSeparate>(m, g, w);
    const float fused = adamw_lerp<AdamWContraction::kFused>(m, g, w);
    volatile float product = w * (g - m);  // stored, so that no compiler contracts the sum below
    EXPECT_EQ(separate, m + product) << i;
    EXPECT_EQ(fused, std::fma(w, g - m, m)) << i;
    differing += separate != fused;
  }
  EXPECT_GT(differing, 50);
}

TEST(AdamWKernelTest, SelfCheckPassesAndAForcedMismatchNamesAdamw) {
  // Only AdamW's lines: the other kernels' checks have their own test (self_check_test.cpp).
  const auto adamw_lines = [](const SelfCheckReport& report) {
    std::vector<std::string> lines;
    for (const std::string& f : report.failures) {
      if (f.rfind("adamw", 0) == 0) lines.push_back(f);
    }
    return lines;
  };
  const std::vector<std::string> passing = adamw_lines(run_kernel_self_check(at::Device(at::kCPU), at::kBFloat16));
  EXPECT_TRUE(passing.empty()) << ::testing::PrintToString(passing);
  const std::vector<std::string> failing =
      adamw_lines(run_kernel_self_check(at::Device(at::kCPU), at::kFloat, "adamw"));
  ASSERT_EQ(failing.size(), 3u) << ::testing::PrintToString(failing);
  for (size_t i = 0; i < failing.size(); ++i) {
    EXPECT_THAT(failing[i], HasSubstr("adamw param " + std::to_string(i) + ": max |fused - reference|"));
  }
}

// As ATen's in-place ops do: a backward through a graph that saved p before the step is refused, not wrong.
TEST(AdamWKernelTest, FusedStepCountsAsAnInPlaceWrite) {
  at::Tensor p = seeded_randn({129}, at::kFloat, 800).set_requires_grad(true);
  const at::Tensor loss = (p * p).sum();  // saves p
  std::vector<at::Tensor> m = {at::zeros({129})}, v = {at::zeros({129})};
  const int64_t version = p._version(), m_version = m[0]._version();
  {
    at::NoGradGuard no_grad;
    adamw_step_fused({p}, {seeded_randn({129}, at::kFloat, 801)}, m, v, {1e-3}, {}, 1);
  }
  EXPECT_EQ(p._version(), version + 1);
  EXPECT_EQ(m[0]._version(), m_version + 1);
  EXPECT_THROW(loss.backward(), c10::Error);
}

TEST(AdamWKernelTest, DisabledFusedKernelsStillComputeTheReference) {
  const TensorSet start = make_set(700);
  TensorSet dispatched = start.clone(), reference = start.clone();
  const std::vector<at::Tensor> grads = make_grads(start, 1, 701);
  const std::vector<double> lrs = make_lrs(start.params.size(), 1e-3, 1.0);
  set_fused_kernels_enabled(false);
  adamw_step(dispatched.params, grads, dispatched.exp_avgs, dispatched.exp_avg_sqs, lrs, {}, 1);
  set_fused_kernels_enabled(true);
  adamw_step_reference(reference.params, grads, reference.exp_avgs, reference.exp_avg_sqs, lrs, {}, 1);
  expect_same_bits(dispatched, reference, "fused kernels off");
}

}  // namespace
}  // namespace freehold::kernels
