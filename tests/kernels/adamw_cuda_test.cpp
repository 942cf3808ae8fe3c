// AdamW's CUDA multi-tensor kernel against the same update on the CPU (adamw_math.h with kFused and a correctly
// rounded sqrt: bit for bit) and against the ATen reference on the GPU (a few ulp: CUDA's ATen lerp, addcmul and
// division by a scalar round differently). Built only with -DFREEHOLD_CUDA=ON; each *_CUDA test skips without a GPU.
#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <cuda_runtime_api.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/adamw_cpu.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using testing::count_bit_differences;
using testing::count_not_close;
using testing::seeded_randn;

// Sizes around the GPU chunk (4096) and the CPU chunk, LoRA shapes, an empty tensor.
const std::vector<std::vector<int64_t>> kShapes = {{1}, {7}, {129}, {4097}, {4096}, {8193}, {16, 576},
                                                   {1536, 16}, {0, 16}, {3, 5, 7}};

struct Set {
  std::vector<at::Tensor> params, exp_avgs, exp_avg_sqs;
};

Set make_set(uint64_t seed, const at::Device& device) {
  Set s;
  for (const auto& shape : kShapes) {
    s.params.push_back((seeded_randn(shape, at::kFloat, seed++) * 0.1).to(device));
    s.exp_avgs.push_back(at::zeros(shape, at::kFloat).to(device));
    s.exp_avg_sqs.push_back(at::zeros(shape, at::kFloat).to(device));
  }
  return s;
}

Set to(const Set& s, const at::Device& device) {
  Set out;
  for (const at::Tensor& t : s.params) out.params.push_back(t.to(device, /*non_blocking=*/false, /*copy=*/true));
  for (const at::Tensor& t : s.exp_avgs) out.exp_avgs.push_back(t.to(device, false, true));
  for (const at::Tensor& t : s.exp_avg_sqs) out.exp_avg_sqs.push_back(t.to(device, false, true));
  return out;
}

// The CUDA kernel's update on the CPU: adamw_math.h with kFused and std::sqrt, over the same chunks.
void cpu_twin(Set& s, const std::vector<at::Tensor>& grads, const std::vector<double>& lrs,
              const AdamWHyperparameters& h, int64_t step) {
  const AdamWStepScalars scalars = adamw_step_scalars(h.beta1, h.beta2, h.eps, step);
  std::vector<AdamWTensorPointers> tensors;
  for (size_t i = 0; i < s.params.size(); ++i) {
    if (!grads[i].defined()) continue;
    tensors.push_back({s.params[i].mutable_data_ptr<float>(), grads[i].const_data_ptr<float>(),
                       s.exp_avgs[i].mutable_data_ptr<float>(), s.exp_avg_sqs[i].mutable_data_ptr<float>(),
                       s.params[i].numel(), adamw_tensor_scalars(lrs[i], h.weight_decay, scalars)});
  }
  adamw_step_cpu_kernel(tensors.data(), static_cast<int64_t>(tensors.size()), adamw_constants(scalars),
                        h.weight_decay != 0, AdamWContraction::kFused, &adamw_sqrt_correctly_rounded);
}

TEST(AdamWCudaTest, MatchesTheCpuUpdateBitForBit_CUDA) {
  SKIP_WITHOUT_GPU();
  const at::Device gpu(at::kCUDA, 0), cpu(at::kCPU);
  for (const AdamWHyperparameters& h : {AdamWHyperparameters{0.9, 0.999, 1e-8, 0.0},
                                        AdamWHyperparameters{0.3, 0.95, 1e-6, 0.1}}) {
    SCOPED_TRACE(::testing::Message() << "beta1 " << h.beta1 << " weight_decay " << h.weight_decay);
    Set fused = make_set(10, gpu), reference = to(fused, gpu), twin = to(fused, cpu);
    for (int64_t step = 1; step <= 4; ++step) {
      std::vector<at::Tensor> grads_cpu, grads;
      std::vector<double> lrs;
      for (size_t i = 0; i < kShapes.size(); ++i) {
        lrs.push_back(1e-3 * (i % 2 ? 16.0 : 1.0));
        if ((static_cast<int64_t>(i) + step) % 4 == 0) {  // rotating tensors without a gradient
          grads_cpu.emplace_back();
          grads.emplace_back();
          continue;
        }
        grads_cpu.push_back(seeded_randn(kShapes[i], at::kFloat, 100 * step + i) * std::pow(10.0, double(i % 6) - 4));
        grads.push_back(grads_cpu.back().to(gpu));
      }
      adamw_step_fused(fused.params, grads, fused.exp_avgs, fused.exp_avg_sqs, lrs, h, step);
      adamw_step(reference.params, grads, reference.exp_avgs, reference.exp_avg_sqs, lrs, h, step);  // fused too
      cpu_twin(twin, grads_cpu, lrs, h, step);
      for (size_t i = 0; i < kShapes.size(); ++i) {
        SCOPED_TRACE(::testing::Message() << "step " << step << " tensor " << i);
        EXPECT_EQ(count_bit_differences(fused.params[i].cpu(), twin.params[i]), 0);
        EXPECT_EQ(count_bit_differences(fused.exp_avgs[i].cpu(), twin.exp_avgs[i]), 0);
        EXPECT_EQ(count_bit_differences(fused.exp_avg_sqs[i].cpu(), twin.exp_avg_sqs[i]), 0);
        EXPECT_EQ(count_bit_differences(reference.params[i].cpu(), twin.params[i]), 0);  // adamw_step chose it
      }
    }
  }
}

TEST(AdamWCudaTest, CloseToTheAtenReferenceOnTheGpu_CUDA) {
  SKIP_WITHOUT_GPU();
  const at::Device gpu(at::kCUDA, 0);
  const AdamWHyperparameters h{0.9, 0.999, 1e-8, 0.01};
  Set fused = make_set(40, gpu), reference = to(fused, gpu);
  for (int64_t step = 1; step <= 5; ++step) {
    std::vector<at::Tensor> grads;
    std::vector<double> lrs;
    for (size_t i = 0; i < kShapes.size(); ++i) {
      grads.push_back(seeded_randn(kShapes[i], at::kFloat, 7 * step + i).to(gpu));
      lrs.push_back(2e-3);
    }
    adamw_step_fused(fused.params, grads, fused.exp_avgs, fused.exp_avg_sqs, lrs, h, step);
    adamw_step_reference(reference.params, grads, reference.exp_avgs, reference.exp_avg_sqs, lrs, h, step);
  }
  for (size_t i = 0; i < kShapes.size(); ++i) {
    std::string where;
    // Parameters of magnitude ~0.1 after five updates of ~2e-3: a few fp32 ulp of the update is far below 1e-6.
    EXPECT_EQ(count_not_close(fused.params[i], reference.params[i], 1e-6, 1e-7, &where), 0) << i << " " << where;
    EXPECT_EQ(count_not_close(fused.exp_avgs[i], reference.exp_avgs[i], 1e-5, 1e-9, &where), 0) << i << " " << where;
    EXPECT_EQ(count_not_close(fused.exp_avg_sqs[i], reference.exp_avg_sqs[i], 1e-5, 1e-12, &where), 0)
        << i << " " << where;
  }
}

TEST(AdamWCudaTest, RefusesTensorsOnTwoDevices_CUDA) {
  SKIP_WITHOUT_GPU();
  std::vector<at::Tensor> params = {at::zeros({3}).cuda()}, m = {at::zeros({3}).cuda()}, v = {at::zeros({3}).cuda()};
  const std::vector<at::Tensor> grads = {at::zeros({3})};
  EXPECT_THROW(adamw_step_fused(params, grads, m, v, {1e-3}, {}, 1), c10::Error);
}

}  // namespace
}  // namespace freehold::kernels
