// AdamW's binding: checks the tensor lists, measures how ATen rounds on the CPU, maps the tensors to raw pointers
// for the CPU or CUDA kernel, and picks a path (adamw.h).
#include "kernels/adamw.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>

#include <cmath>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/adamw_cpu.h"
#include "kernels/rms_norm.h"  // fused_kernels_enabled

#if defined(FREEHOLD_WITH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/adamw.cuh"
#endif

namespace freehold::kernels {
namespace {

// Bit equality of two float tensors of one shape (at::equal, but NaNs never occur in the probes).
bool same_bits(const at::Tensor& a, const at::Tensor& b) { return at::equal(a, b); }

// ATen's lerp and addcmul against adamw_math.h's two contractions on seeded probe inputs. 4099 elements cover
// the vectorized body and the scalar tail of every vector width ATen has; with random inputs about one element in
// five (lerp) and one in fifty (addcmul) tells the two contractions apart.
std::optional<AdamWContraction> measure_contraction() {
  constexpr int64_t n = 4099;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(20240607);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor m = at::randn({n}, gen, f32), g = at::randn({n}, gen, f32) * 3, v = at::rand({n}, gen, f32);
  const double small_weight = 1 - 0.9, large_weight = 1 - 0.3, beta2 = 0.999;
  const at::Tensor lerp_small = m.clone().lerp_(g, small_weight), lerp_large = m.clone().lerp_(g, large_weight);
  const at::Tensor addcmul = v.clone().mul_(beta2).addcmul_(g, g, 1 - beta2);
  for (AdamWContraction k : {AdamWContraction::kFused, AdamWContraction::kSeparate}) {
    at::Tensor small = at::empty({n}, f32), large = at::empty({n}, f32), second = at::empty({n}, f32);
    const float* pm = m.const_data_ptr<float>();
    const float* pg = g.const_data_ptr<float>();
    const float* pv = v.const_data_ptr<float>();
    AdamWConstants c;
    c.beta2 = static_cast<float>(beta2);
    c.one_minus_beta2 = static_cast<float>(1 - beta2);
    for (int64_t i = 0; i < n; ++i) {
      float mi = pm[i], vi = pv[i];
      c.lerp_weight = static_cast<float>(small_weight);
      if (k == AdamWContraction::kFused) {
        adamw_moments<AdamWContraction::kFused>(pg[i], mi, vi, c);
      } else {
        adamw_moments<AdamWContraction::kSeparate>(pg[i], mi, vi, c);
      }
      small.mutable_data_ptr<float>()[i] = mi;
      second.mutable_data_ptr<float>()[i] = vi;
      const float w = static_cast<float>(large_weight);
      large.mutable_data_ptr<float>()[i] = k == AdamWContraction::kFused
                                               ? adamw_lerp<AdamWContraction::kFused>(pm[i], pg[i], w)
                                               : adamw_lerp<AdamWContraction::kSeparate>(pm[i], pg[i], w);
    }
    if (same_bits(small, lerp_small) && same_bits(large, lerp_large) && same_bits(second, addcmul)) return k;
  }
  return std::nullopt;
}

// ATen's sqrt against MKL's vmsSqrt and the correctly rounded root, over v-like values of many magnitudes.
// Returns {matched, mkl}.
std::pair<bool, bool> measure_sqrt() {
  constexpr int64_t n = 4099;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(20240608);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor x =
      at::rand({n}, gen, f32) * at::pow(10.0, at::randint(-14, 3, {n}, gen, f32));  // (n) in [0, 100)
  const at::Tensor aten = x.sqrt();
  at::Tensor ours = at::empty({n}, f32);
  if (AdamWSqrtFn mkl = adamw_mkl_sqrt()) {
    for (int64_t i = 0; i < n; i += kAdamWCpuChunk) {
      mkl(x.const_data_ptr<float>() + i, ours.mutable_data_ptr<float>() + i, std::min(kAdamWCpuChunk, n - i));
    }
    if (same_bits(ours, aten)) return {true, true};
  }
  adamw_sqrt_correctly_rounded(x.const_data_ptr<float>(), ours.mutable_data_ptr<float>(), n);
  return {same_bits(ours, aten), false};
}

AdamWCpuArithmetic measure_cpu_arithmetic() {
  at::NoGradGuard no_grad;
  AdamWCpuArithmetic a;
  const std::optional<AdamWContraction> contraction = measure_contraction();
  const auto [sqrt_matched, mkl] = measure_sqrt();
  a.contraction = contraction.value_or(AdamWContraction::kFused);
  a.mkl_sqrt = mkl;
  a.matches_aten = contraction.has_value() && sqrt_matched;
  a.description = absl::StrCat(
      "lerp/addcmul ", !contraction ? "unknown (neither contraction matches ATen)"
                       : *contraction == AdamWContraction::kFused ? "fused multiply-add"
                                                                   : "separately rounded",
      ", sqrt ", mkl ? "MKL vmsSqrt (VML_HA)" : sqrt_matched ? "correctly rounded" : "unknown (matches neither)");
  return a;
}

// The fused step on raw pointers: one AdamWTensorPointers per index with a gradient and elements.
std::vector<AdamWTensorPointers> pointers(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                                          at::TensorList exp_avg_sqs, c10::ArrayRef<double> lrs,
                                          const AdamWHyperparameters& hyper, const AdamWStepScalars& s) {
  std::vector<AdamWTensorPointers> out;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!grads[i].defined() || params[i].numel() == 0) continue;
    AdamWTensorPointers t;
    t.param = params[i].mutable_data_ptr<float>();
    t.grad = grads[i].const_data_ptr<float>();
    t.exp_avg = exp_avgs[i].mutable_data_ptr<float>();
    t.exp_avg_sq = exp_avg_sqs[i].mutable_data_ptr<float>();
    t.numel = params[i].numel();
    t.scalars = adamw_tensor_scalars(lrs[i], hyper.weight_decay, s);
    out.push_back(t);
  }
  return out;
}

}  // namespace

const AdamWCpuArithmetic& adamw_cpu_arithmetic() {
  static const AdamWCpuArithmetic arithmetic = measure_cpu_arithmetic();
  return arithmetic;
}

void check_adamw_args(const char* op, at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                      at::TensorList exp_avg_sqs, c10::ArrayRef<double> lrs, const AdamWHyperparameters& hyper,
                      int64_t step) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n && lrs.size() == n, op,
              ": params, grads, exp_avgs, exp_avg_sqs and lrs must have one length, got ", n, ", ", grads.size(), ", ",
              exp_avgs.size(), ", ", exp_avg_sqs.size(), " and ", lrs.size());
  TORCH_CHECK(step >= 1, op, ": step must count this step (>= 1), got ", step);
  TORCH_CHECK(hyper.beta1 >= 0 && hyper.beta1 < 1, op, ": beta1 must be in [0, 1), got ", hyper.beta1);
  TORCH_CHECK(hyper.beta2 >= 0 && hyper.beta2 < 1, op, ": beta2 must be in [0, 1), got ", hyper.beta2);
  TORCH_CHECK(std::isfinite(hyper.eps) && hyper.eps >= 0, op, ": eps must be finite and >= 0, got ", hyper.eps);
  TORCH_CHECK(std::isfinite(hyper.weight_decay) && hyper.weight_decay >= 0, op,
              ": weight_decay must be finite and >= 0, got ", hyper.weight_decay);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(p.defined() && at::isFloatingType(p.scalar_type()), op, ": params[", i,
                "] must be a defined floating-point tensor, got ",
                p.defined() ? c10::toString(p.scalar_type()) : "undefined");
    TORCH_CHECK(std::isfinite(lrs[i]), op, ": lrs[", i, "] must be finite, got ", lrs[i]);
    const std::pair<const char*, const at::Tensor*> others[] = {
        {"grads", &grads[i]}, {"exp_avgs", &exp_avgs[i]}, {"exp_avg_sqs", &exp_avg_sqs[i]}};
    for (const auto& [name, t] : others) {
      if (!t->defined()) {
        TORCH_CHECK(name == std::string("grads"), op, ": ", name, "[", i, "] must be defined");
        continue;
      }
      TORCH_CHECK(t->sizes() == p.sizes() && t->scalar_type() == p.scalar_type() && t->device() == p.device(), op,
                  ": ", name, "[", i, "] must match params[", i, "] (shape ", p.sizes(), ", ", p.scalar_type(), ", ",
                  p.device(), "), got shape ", t->sizes(), ", ", t->scalar_type(), ", ", t->device());
    }
  }
}

std::string adamw_fused_refusal(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                                at::TensorList exp_avg_sqs) {
  std::optional<at::Device> device;
  for (size_t i = 0; i < params.size(); ++i) {
    const std::pair<const char*, const at::Tensor*> all[] = {
        {"params", &params[i]}, {"grads", &grads[i]}, {"exp_avgs", &exp_avgs[i]}, {"exp_avg_sqs", &exp_avg_sqs[i]}};
    for (const auto& [name, t] : all) {
      if (!t->defined()) continue;
      const std::string which = absl::StrCat(name, "[", i, "]");
      if (t->scalar_type() != at::kFloat) {
        return absl::StrCat(which, " is ", c10::toString(t->scalar_type()), "; the fused kernels take Float only");
      }
      if (t->layout() != at::kStrided || !t->is_contiguous()) {
        return absl::StrCat(which, " (shape ", c10::str(t->sizes()), ", strides ", c10::str(t->strides()),
                            ") is not contiguous; the fused kernels take contiguous tensors only");
      }
      if (!device) device = t->device();
      if (t->device() != *device) {
        return absl::StrCat(which, " is on ", t->device().str(), " but earlier tensors on ", device->str(),
                            "; the fused kernels take tensors on one device");
      }
    }
  }
  if (device && !device->is_cpu()) {
#if defined(FREEHOLD_WITH_CUDA)
    if (!device->is_cuda()) return absl::StrCat("the tensors are on ", device->str(), ", which has no fused AdamW");
#else
    return absl::StrCat("the tensors are on ", device->str(), "; this build has the CPU fused AdamW only");
#endif
  }
  return "";
}

void adamw_step_fused(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                      at::TensorList exp_avg_sqs, c10::ArrayRef<double> lrs, const AdamWHyperparameters& hyper,
                      int64_t step) {
  check_adamw_args("adamw_step_fused", params, grads, exp_avgs, exp_avg_sqs, lrs, hyper, step);
  const std::string refusal = adamw_fused_refusal(params, grads, exp_avgs, exp_avg_sqs);
  TORCH_CHECK(refusal.empty(), "adamw_step_fused: ", refusal, ". HINT: adamw_step() takes any tensors (it falls back "
              "to adamw_step_reference)");
  const AdamWStepScalars s = adamw_step_scalars(hyper.beta1, hyper.beta2, hyper.eps, step);
  const std::vector<AdamWTensorPointers> tensors = pointers(params, grads, exp_avgs, exp_avg_sqs, lrs, hyper, s);
  if (tensors.empty()) return;
  // The kernels write through raw pointers; count the writes as ATen's in-place ops do, so that autograd still
  // refuses a backward through a graph that saved a parameter before this step.
  for (size_t i = 0; i < params.size(); ++i) {
    if (!grads[i].defined() || params[i].numel() == 0) continue;
    for (const at::Tensor* t : {&params[i], &exp_avgs[i], &exp_avg_sqs[i]}) t->unsafeGetTensorImpl()->bump_version();
  }
  const bool apply_decay = hyper.weight_decay != 0;
  const at::Device device = params[0].device();
  if (device.is_cpu()) {
    const AdamWCpuArithmetic& a = adamw_cpu_arithmetic();
    const AdamWSqrtFn sqrt_fn = a.mkl_sqrt ? adamw_mkl_sqrt() : &adamw_sqrt_correctly_rounded;
    adamw_step_cpu_kernel(tensors.data(), static_cast<int64_t>(tensors.size()), adamw_constants(s), apply_decay,
                          a.contraction, sqrt_fn);
    return;
  }
#if defined(FREEHOLD_WITH_CUDA)
  const c10::cuda::CUDAGuard device_guard(device);
  const int64_t count = static_cast<int64_t>(tensors.size());
  const size_t bytes = adamw_cuda_scratch_bytes(count);
  // The tables' device copy; the caching allocator keeps it for this stream's later work once it is freed here.
  const at::Tensor scratch = at::empty({static_cast<int64_t>(bytes)}, params[0].options().dtype(at::kByte));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  const cudaError_t status = adamw_step_cuda(tensors.data(), count, adamw_constants(s), apply_decay,
                                             scratch.mutable_data_ptr(), bytes, stream);
  TORCH_CHECK(status == cudaSuccess, "adamw_step_fused: launching the kernel on ", device, " failed: ",
              cudaGetErrorString(status), " (", count, " tensors). HINT: an earlier asynchronous CUDA error can "
              "surface here; rerun with CUDA_LAUNCH_BLOCKING=1");
#else
  TORCH_CHECK(false, "adamw_step_fused: no kernel for device ", device, " in this build");
#endif
}

void adamw_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                c10::ArrayRef<double> lrs, const AdamWHyperparameters& hyper, int64_t step) {
  check_adamw_args("adamw_step", params, grads, exp_avgs, exp_avg_sqs, lrs, hyper, step);
  const bool fusable = fused_kernels_enabled() && adamw_fused_refusal(params, grads, exp_avgs, exp_avg_sqs).empty();
  if (fusable && (params.empty() || !params[0].device().is_cpu() || adamw_cpu_arithmetic().matches_aten)) {
    return adamw_step_fused(params, grads, exp_avgs, exp_avg_sqs, lrs, hyper, step);
  }
  adamw_step_reference(params, grads, exp_avgs, exp_avg_sqs, lrs, hyper, step);
}

}  // namespace freehold::kernels
