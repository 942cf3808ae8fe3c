// The 16-bit CPU GEMM path: measured once per dtype, or fixed by FREEHOLD_HALF_GEMM; see half_gemm.h.
#include "kernels/half_gemm.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/randn.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/log.h"
#include "kernels/cpu_gemm.h"
#include "kernels/interleaved_timing.h"
#include "kernels/rms_norm.h"  // fused_kernels_enabled

namespace freehold::kernels {
namespace {

// Below this many rows the weight's widening (out·in conversions) outweighs the GEMM's out·in·rows work.
constexpr int64_t kMinFloatRows = 32;
// The float path must beat the native one by this factor in the measurement to be chosen.
constexpr double kFloatMargin = 1.2;

std::mutex g_mutex;
std::map<at::ScalarType, HalfGemmPath> g_paths;

HalfGemmPath measure(at::ScalarType dtype, int64_t C) {
  at::NoGradGuard no_grad;
  C = std::clamp<int64_t>(C, 256, 2048);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor x = at::randn({256, C}, gen, f32).to(dtype), w = at::randn({C, C}, gen, f32).to(dtype);
  const auto native = [&] { (void)at::linear(x, w); };
  const auto widened = [&] { (void)at::linear(x.to(at::kFloat), w.to(at::kFloat)).to(dtype); };
  const auto [t_native, t_float] = best_interleaved_seconds(native, widened);
  const HalfGemmPath path = t_native > kFloatMargin * t_float ? HalfGemmPath::kFloat : HalfGemmPath::kNative;
  core::log_info("16-bit CPU GEMMs (", std::string(c10::toString(dtype)), "): ", std::string(half_gemm_path_name(path)),
                 " (a (256, ", C, ") x (", C, ", ", C, ") GEMM: native ", t_native * 1e3, " ms, via float32 ",
                 t_float * 1e3, " ms; FREEHOLD_HALF_GEMM=native|float overrides)");
  return path;
}

}  // namespace

std::string_view half_gemm_path_name(HalfGemmPath path) { return path == HalfGemmPath::kFloat ? "float" : "native"; }

std::optional<HalfGemmPath> half_gemm_path_from_name(std::string_view name) {
  if (name == "native") return HalfGemmPath::kNative;
  if (name == "float") return HalfGemmPath::kFloat;
  return std::nullopt;
}

HalfGemmPath half_gemm_path(at::ScalarType dtype, int64_t C) {
  if (dtype != at::kBFloat16 && dtype != at::kHalf) return HalfGemmPath::kNative;
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (const auto it = g_paths.find(dtype); it != g_paths.end()) return it->second;
  HalfGemmPath path;
  if (const char* env = std::getenv("FREEHOLD_HALF_GEMM"); env != nullptr && *env != '\0') {
    const std::string value(env);
    FH_CHECK(half_gemm_path_from_name(value).has_value(), "FREEHOLD_HALF_GEMM=", value,
             ": accepted values are native (16-bit GEMMs) and float (widen to float32, GEMM, round); unset it to "
             "let freehold measure which is faster");
    path = *half_gemm_path_from_name(value);
  } else {
    path = measure(dtype, C);
  }
  g_paths[dtype] = path;
  return path;
}

void set_half_gemm_path(at::ScalarType dtype, HalfGemmPath path) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_paths[dtype] = path;
}

void reset_half_gemm_paths_for_testing() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_paths.clear();
}

bool use_float_gemm(const at::Tensor& x, const at::Tensor& weight, int64_t rows) {
  const at::ScalarType dtype = x.scalar_type();
  return (dtype == at::kBFloat16 || dtype == at::kHalf) && weight.scalar_type() == dtype && x.device().is_cpu() &&
         weight.device().is_cpu() && rows >= kMinFloatRows && fused_kernels_enabled() &&
         half_gemm_path(dtype, weight.size(-1)) == HalfGemmPath::kFloat;
}

namespace {

// y = x·weightᵀ (+ bias) for fp32 x (..., in) and weight (out, in) on the CPU, by cpu_gemm.h's chosen library.
at::Tensor linear_fp32(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  at::Tensor y = gemm_linear(x, weight);  // (..., out)
  if (bias.defined()) y.add_(bias);
  return y;
}

// dx = dy·weight for fp32 dy (..., out) and weight (out, in) on the CPU → (..., in), likewise.
at::Tensor input_grad_fp32(const at::Tensor& dy, const at::Tensor& weight) {
  const int64_t out = weight.size(0), in = weight.size(1);
  std::vector<int64_t> sizes(dy.sizes().begin(), dy.sizes().end());
  sizes.back() = in;
  return gemm(dy.reshape({-1, out}), weight, in).view(sizes);
}

bool cpu_fp32(const at::Tensor& x, const at::Tensor& weight) {
  return x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat && x.device().is_cpu() &&
         weight.device().is_cpu() && x.dim() >= 1 && weight.dim() == 2 && fused_kernels_enabled();
}

}  // namespace

at::Tensor frozen_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         const at::Tensor& x_float) {
  const int64_t rows = weight.size(1) == 0 ? 0 : x.numel() / weight.size(1);
  if (cpu_fp32(x, weight) && rows > 0) return linear_fp32(x, weight, bias);
  if (!use_float_gemm(x, weight, rows)) return at::linear(x, weight, bias);
  const at::Tensor xf = x_float.defined() ? x_float : x.to(at::kFloat);
  const at::Tensor bf = bias.defined() ? bias.to(at::kFloat) : bias;
  return linear_fp32(xf, weight.to(at::kFloat), bf).to(x.scalar_type());
}

at::Tensor frozen_linear_input_grad(const at::Tensor& dy, const at::Tensor& weight) {
  const int64_t out = weight.size(0);
  const int64_t rows = out == 0 ? 0 : dy.numel() / out;
  if (cpu_fp32(dy, weight) && rows > 0) return input_grad_fp32(dy, weight);
  if (!use_float_gemm(dy, weight, rows)) return at::matmul(dy, weight);
  return input_grad_fp32(dy.to(at::kFloat), weight.to(at::kFloat)).to(dy.scalar_type());
}

namespace {

// The bias travels outside the argument list that autograd inspects (it needs a device for every tensor argument,
// and the bias may be undefined); it is frozen, so it gets no gradient.
struct FrozenBias {
  at::Tensor bias;  // (out) or undefined
};

class FrozenLinearFunction : public torch::autograd::Function<FrozenLinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            FrozenBias frozen) {
    ctx->save_for_backward({weight});
    return frozen_linear(x, weight, frozen.bias);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor weight = ctx->get_saved_variables()[0];
    return {frozen_linear_input_grad(grad_outputs[0], weight), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor frozen_linear_differentiable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const bool frozen = !weight.requires_grad() && (!bias.defined() || !bias.requires_grad());
  if (!fused_kernels_enabled() || !frozen || x.dim() < 1 || weight.dim() != 2 || x.size(-1) != weight.size(1)) {
    return at::linear(x, weight, bias);  // and its own errors for mismatched shapes
  }
  if (at::GradMode::is_enabled() && x.requires_grad()) return FrozenLinearFunction::apply(x, weight, FrozenBias{bias});
  return frozen_linear(x, weight, bias);
}

}  // namespace freehold::kernels
