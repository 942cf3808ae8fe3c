// Dropout's binding: draws seeds, checks tensors, picks the kernel of the device (dropout.h).
#include "kernels/dropout.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Generator.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <mutex>
#include <optional>

#include "kernels/dropout_cpu.h"
#include "kernels/dropout_math.h"
#include "kernels/element_type.h"

#if defined(FREEHOLD_WITH_CUDA)
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/dropout.cuh"
#endif

namespace freehold::kernels {
namespace {

#if defined(FREEHOLD_WITH_CUDA)
void check_launch(const char* op, cudaError_t status, const at::Device& device, int64_t n) {
  TORCH_CHECK(status == cudaSuccess, op, ": launching the kernel on ", device, " failed: ", cudaGetErrorString(status),
              " (", n, " elements). HINT: an earlier asynchronous CUDA error can surface here; rerun with "
              "CUDA_LAUNCH_BLOCKING=1");
}
#endif

// 1/(1 − p) as at::dropout's noise holds it: the reciprocal in float (ATen divides by a CPU scalar through its
// reciprocal in the op math type), rounded to the element type.
float kept_scale(at::ScalarType dtype, double p) {
  const float reciprocal = 1.0f / static_cast<float>(1.0 - p);
  switch (dtype) {
    case at::kBFloat16:
      return static_cast<float>(c10::BFloat16(reciprocal));
    case at::kHalf:
      return static_cast<float>(c10::Half(reciprocal));
    default:
      return reciprocal;
  }
}

}  // namespace

void check_dropout_probability(const char* op, double p) {
  TORCH_CHECK(std::isfinite(p) && p >= 0 && p < 1, op, ": dropout must be a probability in [0, 1), got ", p);
}

uint64_t draw_dropout_seed(const at::Device& device) {
  if (device.is_cpu()) {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    return at::check_generator<at::CPUGeneratorImpl>(gen)->random64();
  }
#if defined(FREEHOLD_WITH_CUDA)
  if (device.is_cuda()) {
    at::Generator gen = at::cuda::detail::getDefaultCUDAGenerator(device.index());
    std::lock_guard<std::mutex> lock(gen.mutex());
    auto* cuda_gen = at::check_generator<at::CUDAGeneratorImpl>(gen);
    // Philox's state is (seed, offset); one mask takes one offset step (offsets move in fours), and its seed mixes
    // both, so consecutive masks are unrelated and a restored state redraws the same one.
    const uint64_t offset = cuda_gen->philox_offset_per_thread();
    cuda_gen->set_philox_offset_per_thread(offset + 4);
    return dropout_mix64(cuda_gen->current_seed() ^ dropout_mix64(offset + kDropoutWeyl));
  }
#endif
  TORCH_CHECK(false, "draw_dropout_seed: no dropout generator for device ", device, " in this build");
}

at::Tensor dropout_mask_reference(at::IntArrayRef sizes, uint64_t seed, double p, const at::Device& device) {
  check_dropout_probability("dropout_mask_reference", p);
  at::Tensor mask = at::empty(sizes, at::TensorOptions().dtype(at::kBool));
  const uint64_t threshold = dropout_threshold(p);
  bool* data = mask.mutable_data_ptr<bool>();
  for (int64_t i = 0; i < mask.numel(); ++i) data[i] = dropout_keep(seed, static_cast<uint64_t>(i), threshold);
  return device.is_cpu() ? mask : mask.to(device);
}

at::Tensor dropout_mask(at::IntArrayRef sizes, uint64_t seed, double p, const at::Device& device) {
  check_dropout_probability("dropout_mask", p);
  TORCH_CHECK(device_has_kernel(device), "dropout_mask: no kernel for device ", device, " in this build");
  at::Tensor mask = at::empty(sizes, at::TensorOptions().dtype(at::kBool).device(device));
  auto* keep = reinterpret_cast<uint8_t*>(mask.mutable_data_ptr());
  if (device.is_cpu()) {
    dropout_mask_cpu(seed, dropout_threshold(p), keep, mask.numel());
    return mask;
  }
#if defined(FREEHOLD_WITH_CUDA)
  const c10::cuda::CUDAGuard device_guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  check_launch("dropout_mask", dropout_mask_cuda(seed, dropout_threshold(p), keep, mask.numel(), stream), device,
               mask.numel());
#endif
  return mask;
}

at::Tensor dropout_reference(const at::Tensor& x, uint64_t seed, double p) {
  check_dropout_probability("dropout_reference", p);
  TORCH_CHECK(x.defined() && at::isFloatingType(x.scalar_type()), "dropout_reference: x must be a floating-point ",
              "tensor, got ", x.defined() ? c10::toString(x.scalar_type()) : "an undefined tensor");
  if (p == 0.0) return x;
  return x * dropout_mask_reference(x.sizes(), seed, p, x.device()).to(x.scalar_type()).div_(1.0 - p);
}

at::Tensor dropout_apply(const at::Tensor& x_in, uint64_t seed, double p) {
  check_dropout_probability("dropout_apply", p);
  TORCH_CHECK(x_in.defined() && at::isFloatingType(x_in.scalar_type()), "dropout_apply: x must be a floating-point ",
              "tensor, got ", x_in.defined() ? c10::toString(x_in.scalar_type()) : "an undefined tensor");
  if (p == 0.0) return x_in;
  const std::optional<ElementType> type = element_type(x_in.scalar_type());
  if (!type || x_in.layout() != at::kStrided || !device_has_kernel(x_in.device())) {
    at::NoGradGuard no_grad;
    return dropout_reference(x_in, seed, p).contiguous();
  }
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  const float scale = kept_scale(x.scalar_type(), p);
  const uint64_t threshold = dropout_threshold(p);
  if (x.device().is_cpu()) {
    dropout_apply_cpu(*type, seed, threshold, scale, x.const_data_ptr(), y.mutable_data_ptr(), x.numel());
    return y;
  }
#if defined(FREEHOLD_WITH_CUDA)
  const c10::cuda::CUDAGuard device_guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  check_launch("dropout_apply",
               dropout_apply_cuda(*type, seed, threshold, scale, x.const_data_ptr(), y.mutable_data_ptr(), x.numel(),
                                  stream),
               x.device(), x.numel());
#endif
  return y;
}

}  // namespace freehold::kernels
