// Linear + cross-entropy on the GPU: the CUDA row kernel against the CPU row kernel (bit for bit: same lane math,
// same order) and the fused pass against the GPU reference (loss and gradients). Built only with -DFREEHOLD_CUDA=ON;
// each *_CUDA test skips itself without a GPU.
#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randint.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <string>

#include "kernels/cross_entropy.cuh"
#include "kernels/cross_entropy_cpu.h"
#include "kernels/linear_cross_entropy.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace freehold::kernels {
namespace {

using testing::count_not_close;
using testing::seeded_randn;

TEST(CrossEntropyCudaTest, RowKernelBitIdenticalToCpu_CUDA) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 300;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const ElementType type = dtype == at::kFloat ? ElementType::kF32
                             : dtype == at::kBFloat16 ? ElementType::kBF16 : ElementType::kF16;
    for (int64_t rows : {1, 7, 129}) {
      for (int64_t V : {1, 7, 129, 4097}) {
        SCOPED_TRACE(::testing::Message() << dtype << " rows " << rows << " V " << V);
        seed += 2;
        at::Tensor logits_cpu = (seeded_randn({rows, V}, at::kFloat, seed) * 3).to(dtype);
        at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1);
        at::Tensor targets_cpu = at::randint(V, {rows}, gen, at::TensorOptions().dtype(at::kLong));
        targets_cpu[0] = -100;
        at::Tensor logits = logits_cpu.cuda();
        const at::Tensor targets = targets_cpu.cuda();
        at::Tensor loss = at::empty({rows}, logits.options().dtype(at::kFloat));
        at::Tensor loss_cpu = at::empty({rows});
        const cudaError_t status = cross_entropy_rows_cuda(
            type, logits.mutable_data_ptr(), targets.const_data_ptr<int64_t>(), loss.mutable_data_ptr<float>(), rows,
            V, -100, true, c10::cuda::getCurrentCUDAStream().stream());
        ASSERT_EQ(status, cudaSuccess) << cudaGetErrorString(status);
        cross_entropy_rows_cpu(type, logits_cpu.mutable_data_ptr(), targets_cpu.const_data_ptr<int64_t>(),
                               loss_cpu.mutable_data_ptr<float>(), rows, V, -100, true);
        EXPECT_TRUE(at::equal(loss.cpu(), loss_cpu));
        EXPECT_EQ(testing::count_bit_differences(logits.cpu(), logits_cpu), 0);
      }
    }
  }
}

TEST(CrossEntropyCudaTest, FusedPassMatchesGpuReference_CUDA) {
  SKIP_WITHOUT_GPU();
  uint64_t seed = 400;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t N : {1, 7, 129}) {
      for (int64_t V : {7, 4097}) {
        SCOPED_TRACE(::testing::Message() << dtype << " N " << N << " V " << V);
        seed += 3;
        const at::Tensor hidden = seeded_randn({N, 32}, dtype, seed).cuda();
        const at::Tensor weight = (seeded_randn({V, 32}, at::kFloat, seed + 1) * 0.5).to(dtype).cuda();
        at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 2);
        const at::Tensor targets = at::randint(V, {N}, gen, at::TensorOptions().dtype(at::kLong)).cuda();
        at::Tensor h_ref = hidden.clone().set_requires_grad(true), h = hidden.clone().set_requires_grad(true);
        const at::Tensor ref = linear_cross_entropy_reference(h_ref, weight, targets, -100);
        const at::Tensor got = linear_cross_entropy_fused(h, weight, targets, {-100, 5 * V * hidden.element_size()});
        const double rtol = dtype == at::kFloat ? 1e-4 : 3e-2, atol = dtype == at::kFloat ? 1e-5 : 2e-3;
        std::string where;
        EXPECT_EQ(count_not_close(got.detach(), ref.detach(), rtol, atol, &where), 0) << "loss: " << where;
        ref.backward();
        got.backward();
        EXPECT_EQ(count_not_close(h.grad(), h_ref.grad(), rtol, atol, &where), 0) << "d hidden: " << where;
      }
    }
  }
}

}  // namespace
}  // namespace freehold::kernels
