// RMSNorm's binding: checks tensors, maps dtypes to the raw-pointer kernels, and picks a path (rms_norm.h).
#include "kernels/rms_norm.h"

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <cmath>
#include <optional>

#include "kernels/rms_norm_cpu.h"
#include "kernels/element_type.h"
#include "kernels/rms_norm_math.h"

#if defined(FREEHOLD_WITH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/rms_norm.cuh"
#endif

namespace freehold::kernels {
namespace {

bool autograd_needs(const at::Tensor& x, const at::Tensor& weight) {
  return at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad());
}

// What a fused kernel needs beyond check_rms_norm_args; returns the element type both tensors share.
ElementType check_fused_args(const char* op, const at::Tensor& x, const at::Tensor& weight, double eps,
                             c10::DeviceType device_type) {
  check_rms_norm_args(op, x, weight, eps);
  TORCH_CHECK(x.device().type() == device_type, op, ": x must be on ", device_type, ", got x on ", x.device());
  TORCH_CHECK(x.layout() == at::kStrided && weight.layout() == at::kStrided, op,
              ": x and weight must be dense (strided) tensors, got layouts ", x.layout(), " and ", weight.layout());
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), op, ": x and weight must have the same dtype, got x ",
              x.scalar_type(), " and weight ", weight.scalar_type(), "; rms_norm() handles mixed dtypes");
  const std::optional<ElementType> type = element_type(x.scalar_type());
  TORCH_CHECK(type.has_value(), op, ": supports Float, BFloat16 and Half, got ", x.scalar_type(),
              "; rms_norm() handles other floating dtypes");
  TORCH_CHECK(!autograd_needs(x, weight), op, " is forward-only, but x (requires_grad=",
              x.requires_grad() ? "true" : "false", ") or weight (requires_grad=",
              weight.requires_grad() ? "true" : "false",
              ") needs a gradient; call rms_norm(), which then uses rms_norm_reference()");
  return *type;
}

struct RowsView {
  at::Tensor x;       // (rows, C) contiguous
  at::Tensor weight;  // (C) contiguous
  at::Tensor y;       // (..., C) like the input x, contiguous
  int64_t rows = 0;
  int64_t C = 0;
};

RowsView prepare(const at::Tensor& x, const at::Tensor& weight) {
  RowsView view;
  view.C = x.size(-1);
  view.rows = view.C == 0 ? 0 : x.numel() / view.C;
  // The kernels read rows of C contiguous elements; a strided input is copied once rather than refused.
  view.x = x.contiguous();
  view.weight = weight.contiguous();
  view.y = at::empty(x.sizes(), x.options());
  return view;
}

std::atomic<bool> g_fused_enabled{true};

// Forward by the fused kernel of x's device, backward by the fused backward; saves x and weight only (the
// reference's graph keeps x in float32, its square, the normalized row in float32 and in T).
class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            double eps) {
    ctx->save_for_backward({x, weight});
    ctx->saved_data["eps"] = eps;
#if defined(FREEHOLD_WITH_CUDA)
    if (x.device().is_cuda()) return rms_norm_cuda(x, weight, eps);
#endif
    return rms_norm_cpu(x, weight, eps);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const std::vector<at::Tensor> saved = ctx->get_saved_variables();
    auto [dx, dw] = rms_norm_backward(saved[0], saved[1], grad_outputs[0], ctx->saved_data["eps"].toDouble());
    return {ctx->needs_input_grad(0) ? dx : at::Tensor(), ctx->needs_input_grad(1) ? dw : at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

void set_fused_kernels_enabled(bool enabled) { g_fused_enabled.store(enabled); }
bool fused_kernels_enabled() { return g_fused_enabled.load(); }

std::pair<at::Tensor, at::Tensor> rms_norm_backward(const at::Tensor& x_in, const at::Tensor& weight_in,
                                                    const at::Tensor& dy_in, double eps) {
  check_rms_norm_args("rms_norm_backward", x_in, weight_in, eps);
  TORCH_CHECK(dy_in.sizes() == x_in.sizes() && dy_in.scalar_type() == x_in.scalar_type() &&
                  dy_in.device() == x_in.device(),
              "rms_norm_backward: dy must match x (shape ", x_in.sizes(), ", ", x_in.scalar_type(), ", ", x_in.device(),
              "), got shape ", dy_in.sizes(), ", ", dy_in.scalar_type(), ", ", dy_in.device());
  TORCH_CHECK(x_in.scalar_type() == weight_in.scalar_type(), "rms_norm_backward: x and weight must share a dtype, got ",
              x_in.scalar_type(), " and ", weight_in.scalar_type());
  const std::optional<ElementType> type = element_type(x_in.scalar_type());
  TORCH_CHECK(type.has_value(), "rms_norm_backward: supports Float, BFloat16 and Half, got ", x_in.scalar_type());
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), dy = dy_in.contiguous();
  const int64_t C = x.size(-1), rows = C == 0 ? 0 : x.numel() / C;
  const int64_t blocks = (rows + kRmsNormRowsPerBlock - 1) / kRmsNormRowsPerBlock;
  at::Tensor dx = at::empty(x.sizes(), x.options());
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor inv_rms = at::empty({rows}, f32), partial = at::empty({std::max<int64_t>(blocks, 1), C}, f32);
  at::Tensor dw = at::empty({C}, f32);
  if (x.device().is_cpu()) {
    rms_norm_backward_cpu(*type, x.const_data_ptr(), weight.const_data_ptr(), dy.const_data_ptr(),
                          dx.mutable_data_ptr(), inv_rms.mutable_data_ptr<float>(), partial.mutable_data_ptr<float>(),
                          dw.mutable_data_ptr<float>(), rows, C, static_cast<float>(eps));
  } else {
#if defined(FREEHOLD_WITH_CUDA)
    TORCH_CHECK(x.device().is_cuda(), "rms_norm_backward: no kernel for device ", x.device());
    const c10::cuda::CUDAGuard device_guard(x.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
    const cudaError_t status = rms_norm_backward_cuda(
        *type, x.const_data_ptr(), weight.const_data_ptr(), dy.const_data_ptr(), dx.mutable_data_ptr(),
        inv_rms.mutable_data_ptr<float>(), partial.mutable_data_ptr<float>(), dw.mutable_data_ptr<float>(), rows, C,
        static_cast<float>(eps), stream);
    TORCH_CHECK(status == cudaSuccess, "rms_norm_backward: launching the kernels on ", x.device(), " failed: ",
                cudaGetErrorString(status), " (x shape ", x.sizes(), ", dtype ", x.scalar_type(),
                "). HINT: rerun with CUDA_LAUNCH_BLOCKING=1");
#else
    TORCH_CHECK(false, "rms_norm_backward: no kernel for device ", x.device(), " in this build");
#endif
  }
  return {dx, dw.to(weight.scalar_type())};
}

void check_rms_norm_args(const char* op, const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.defined() && weight.defined(), op, ": x and weight must be defined tensors");
  TORCH_CHECK(x.dim() >= 1, op, ": x must have shape (..., C), got a ", x.dim(), "-d tensor");
  TORCH_CHECK(weight.dim() == 1, op, ": weight must have shape (C), got shape ", weight.sizes());
  TORCH_CHECK(weight.size(0) == x.size(-1), op, ": weight has ", weight.size(0),
              " elements but the last dimension of x is ", x.size(-1), " (x has shape ", x.sizes(), ")");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x must be floating point, got ", x.scalar_type());
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()), op, ": weight must be floating point, got ",
              weight.scalar_type());
  TORCH_CHECK(x.device() == weight.device(), op, ": x is on ", x.device(), " but weight is on ", weight.device());
  TORCH_CHECK(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
}

at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const ElementType type = check_fused_args("rms_norm_cpu", x, weight, eps, c10::DeviceType::CPU);
  const RowsView v = prepare(x, weight);
  rms_norm_forward_cpu(type, v.x.const_data_ptr(), v.weight.const_data_ptr(), v.y.mutable_data_ptr(), v.rows, v.C,
                       static_cast<float>(eps));
  return v.y;
}

#if defined(FREEHOLD_WITH_CUDA)
at::Tensor rms_norm_cuda(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const ElementType type = check_fused_args("rms_norm_cuda", x, weight, eps, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard device_guard(x.device());
  const RowsView v = prepare(x, weight);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const cudaError_t status = rms_norm_forward_cuda(type, v.x.const_data_ptr(), v.weight.const_data_ptr(),
                                                   v.y.mutable_data_ptr(), v.rows, v.C, static_cast<float>(eps),
                                                   stream);
  TORCH_CHECK(status == cudaSuccess, "rms_norm_cuda: launching the kernel on ", x.device(), " failed: ",
              cudaGetErrorString(status), " (x shape ", x.sizes(), ", dtype ", x.scalar_type(),
              "). HINT: an earlier asynchronous CUDA error can surface here; rerun with CUDA_LAUNCH_BLOCKING=1");
  return v.y;
}
#endif

bool cuda_kernels_built() {
#if defined(FREEHOLD_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rms_norm_args("rms_norm", x, weight, eps);
  const bool same = x.scalar_type() == weight.scalar_type() && element_type(x.scalar_type()).has_value() &&
                    x.layout() == at::kStrided && weight.layout() == at::kStrided && fused_kernels_enabled();
  const bool fusable = same && !autograd_needs(x, weight);
  bool device_ok = x.device().is_cpu();
#if defined(FREEHOLD_WITH_CUDA)
  device_ok = device_ok || x.device().is_cuda();
#endif
  if (same && device_ok && autograd_needs(x, weight)) return RmsNormFunction::apply(x, weight, eps);
  if (fusable && x.device().is_cpu()) return rms_norm_cpu(x, weight, eps);
#if defined(FREEHOLD_WITH_CUDA)
  if (fusable && x.device().is_cuda()) return rms_norm_cuda(x, weight, eps);
#endif
  return rms_norm_reference(x, weight, eps);
}

}  // namespace freehold::kernels
