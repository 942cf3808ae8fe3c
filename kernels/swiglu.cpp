// SwiGLU's binding: checks tensors, describes their rows to the raw-pointer kernels, maps dtypes, picks a path and
// holds the autograd node (swiglu.h).
#include "kernels/swiglu.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/sigmoid.h>
#include <c10/core/ScalarType.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>
#include <tuple>
#include <vector>

#include "kernels/element_type.h"
#include "kernels/rms_norm.h"  // fused_kernels_enabled
#include "kernels/swiglu_cpu.h"
#include "kernels/swiglu_math.h"

#if defined(FREEHOLD_WITH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/swiglu.cuh"
#endif

namespace freehold::kernels {
namespace {

// Whether the fused kernels can compute swiglu_reference's result for these tensors (gradients aside).
bool fusable(const at::Tensor& gate, const at::Tensor& up) {
  return gate.scalar_type() == up.scalar_type() && element_type(gate.scalar_type()).has_value() &&
         gate.layout() == at::kStrided && up.layout() == at::kStrided && device_has_kernel(gate.device());
}

// What a fused kernel needs beyond check_swiglu_args; returns the element type gate and up share.
ElementType check_fused_args(const char* op, const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(gate.layout() == at::kStrided && up.layout() == at::kStrided, op,
              ": gate and up must be dense (strided) tensors, got layouts ", gate.layout(), " and ", up.layout());
  TORCH_CHECK(gate.scalar_type() == up.scalar_type(), op, ": gate and up must have one dtype, got gate ",
              gate.scalar_type(), " and up ", up.scalar_type(), "; swiglu() handles mixed dtypes");
  const std::optional<ElementType> type = element_type(gate.scalar_type());
  TORCH_CHECK(type.has_value(), op, ": supports Float, BFloat16 and Half, got ", gate.scalar_type(),
              "; swiglu() handles other floating dtypes");
  TORCH_CHECK(device_has_kernel(gate.device()), op, ": no fused kernel for device ", gate.device(), " in this build");
  return *type;
}

// The forward-only entry points (swiglu_cpu, swiglu_cuda) refuse what autograd would need to differentiate.
void check_no_grad(const char* op, const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(!needs_grad(gate) && !needs_grad(up), op, " is forward-only, but gate (requires_grad=",
              gate.requires_grad() ? "true" : "false", ") or up (requires_grad=", up.requires_grad() ? "true" : "false",
              ") needs a gradient; call swiglu(), which then uses its autograd node or swiglu_reference()");
}

// t (..., I) as (rows, I) with unit column stride: a view where t's leading dimensions collapse into one row
// dimension (contiguous (B, T, I), or a narrow of a (B, T, 2I) tensor, row stride 2I), otherwise a contiguous copy.
at::Tensor as_rows(const at::Tensor& t, int64_t I) {
  at::Tensor rows = t.reshape({-1, I});  // a view whenever one exists
  if (I > 1 && rows.stride(1) != 1) rows = rows.contiguous();
  return rows;
}

int64_t row_stride(const at::Tensor& rows) { return rows.size(0) > 1 ? rows.stride(0) : rows.size(1); }

// The kernels' layout of (rows, I) inputs; dy may be undefined (forward). Inputs that are all contiguous become one
// row, so that the CUDA grid covers the elements whatever I is.
SwigluLayout layout_of(const at::Tensor& g, const at::Tensor& u, const at::Tensor& dy) {
  SwigluLayout l;
  l.rows = g.size(0), l.I = g.size(1);
  l.g_row_stride = row_stride(g), l.u_row_stride = row_stride(u), l.dy_row_stride = dy.defined() ? row_stride(dy) : l.I;
  if (l.g_row_stride == l.I && l.u_row_stride == l.I && l.dy_row_stride == l.I) {
    l.I *= l.rows;
    l.rows = 1;
    l.g_row_stride = l.u_row_stride = l.dy_row_stride = l.I;
  }
  return l;
}

int64_t last_dim(const at::Tensor& t) { return t.dim() == 0 ? 1 : t.size(-1); }

#if defined(FREEHOLD_WITH_CUDA)
void check_cuda_status(const char* op, cudaError_t status, const at::Tensor& gate) {
  TORCH_CHECK(status == cudaSuccess, op, ": launching the kernel on ", gate.device(), " failed: ",
              cudaGetErrorString(status), " (gate shape ", gate.sizes(), ", strides ", gate.strides(), ", dtype ",
              gate.scalar_type(), "). HINT: an earlier asynchronous CUDA error can surface here; rerun with "
              "CUDA_LAUNCH_BLOCKING=1");
}
#endif

// y = silu(gate) · up by the fused kernel of gate's device, gradients aside: a new contiguous tensor.
at::Tensor fused_forward(const char* op, const at::Tensor& gate, const at::Tensor& up) {
  const ElementType type = check_fused_args(op, gate, up);
  at::Tensor y = at::empty(gate.sizes(), gate.options());
  if (gate.numel() == 0) return y;
  const int64_t I = last_dim(gate);
  const at::Tensor g = as_rows(gate, I), u = as_rows(up, I);
  const SwigluLayout layout = layout_of(g, u, at::Tensor());
  if (gate.device().is_cpu()) {
    swiglu_forward_cpu(type, g.const_data_ptr(), u.const_data_ptr(), y.mutable_data_ptr(), layout);
    return y;
  }
#if defined(FREEHOLD_WITH_CUDA)
  const c10::cuda::CUDAGuard device_guard(gate.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(gate.device().index()).stream();
  check_cuda_status(op, swiglu_forward_cuda(type, g.const_data_ptr(), u.const_data_ptr(), y.mutable_data_ptr(), layout,
                                            stream),
                    gate);
#endif
  return y;
}

// The fused forward as one autograd node, saving gate and up only: silu(gate) is recomputed in the backward (one
// exp per element) instead of being kept, which the reference's graph does (SiluBackward keeps gate, MulBackward
// keeps silu(gate) and up).
class SwigluFunction : public torch::autograd::Function<SwigluFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    ctx->save_for_backward({gate, up});
    return fused_forward("swiglu", gate, up);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const std::vector<at::Tensor> saved = ctx->get_saved_variables();
    const at::Tensor &gate = saved[0], &up = saved[1], &dy = grad_outputs[0];
    at::Tensor d_gate, d_up;
    if (at::GradMode::is_enabled()) {
      // create_graph (a double backward): the fused kernels are not differentiable, so this is the gradient
      // autograd gives the reference under create_graph, in the same ATen ops (mul's backward, then silu's
      // infinitely_differentiable_silu_backward; at::silu_backward has no derivative), and the second derivatives
      // are the reference's too.
      const at::Tensor sigmoid = gate.sigmoid();
      d_gate = (dy * up) * sigmoid * (1.0 + gate * (1.0 - sigmoid));
      d_up = dy * at::silu(gate);
    } else {
      std::tie(d_gate, d_up) = swiglu_backward(gate, up, dy);
    }
    return {ctx->needs_input_grad(0) ? d_gate : at::Tensor(), ctx->needs_input_grad(1) ? d_up : at::Tensor()};
  }
};

}  // namespace

void check_swiglu_args(const char* op, const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(gate.defined() && up.defined(), op, ": gate and up must be defined tensors");
  TORCH_CHECK(gate.sizes() == up.sizes(), op, ": gate and up must have one shape (..., I), got gate ", gate.sizes(),
              " and up ", up.sizes());
  TORCH_CHECK(at::isFloatingType(gate.scalar_type()) && at::isFloatingType(up.scalar_type()), op,
              ": gate and up must be floating point, got ", gate.scalar_type(), " and ", up.scalar_type());
  TORCH_CHECK(gate.device() == up.device(), op, ": gate is on ", gate.device(), " but up is on ", up.device());
}

at::Tensor swiglu_cpu(const at::Tensor& gate, const at::Tensor& up) {
  check_swiglu_args("swiglu_cpu", gate, up);
  TORCH_CHECK(gate.device().is_cpu(), "swiglu_cpu: gate must be on cpu, got gate on ", gate.device());
  check_no_grad("swiglu_cpu", gate, up);
  return fused_forward("swiglu_cpu", gate, up);
}

#if defined(FREEHOLD_WITH_CUDA)
at::Tensor swiglu_cuda(const at::Tensor& gate, const at::Tensor& up) {
  check_swiglu_args("swiglu_cuda", gate, up);
  TORCH_CHECK(gate.device().is_cuda(), "swiglu_cuda: gate must be on cuda, got gate on ", gate.device());
  check_no_grad("swiglu_cuda", gate, up);
  return fused_forward("swiglu_cuda", gate, up);
}
#endif

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
  check_swiglu_args("swiglu", gate, up);
  if (!fused_kernels_enabled() || !fusable(gate, up)) return swiglu_reference(gate, up);
  if (needs_grad(gate) || needs_grad(up)) return SwigluFunction::apply(gate, up);
  return fused_forward("swiglu", gate, up);
}

std::pair<at::Tensor, at::Tensor> swiglu_backward(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& dy) {
  check_swiglu_args("swiglu_backward", gate, up);
  TORCH_CHECK(dy.defined(), "swiglu_backward: dy must be a defined tensor");
  TORCH_CHECK(dy.sizes() == gate.sizes() && dy.scalar_type() == gate.scalar_type() && dy.device() == gate.device(),
              "swiglu_backward: dy must match gate (shape ", gate.sizes(), ", ", gate.scalar_type(), ", ",
              gate.device(), "), got shape ", dy.sizes(), ", ", dy.scalar_type(), ", ", dy.device());
  const ElementType type = check_fused_args("swiglu_backward", gate, up);
  TORCH_CHECK(dy.layout() == at::kStrided, "swiglu_backward: dy must be a dense (strided) tensor, got layout ",
              dy.layout());
  at::Tensor d_gate = at::empty(gate.sizes(), gate.options()), d_up = at::empty(gate.sizes(), gate.options());
  if (gate.numel() == 0) return {d_gate, d_up};
  const int64_t I = last_dim(gate);
  const at::Tensor g = as_rows(gate, I), u = as_rows(up, I), d = as_rows(dy, I);
  const SwigluLayout layout = layout_of(g, u, d);
  if (gate.device().is_cpu()) {
    swiglu_backward_cpu(type, g.const_data_ptr(), u.const_data_ptr(), d.const_data_ptr(), d_gate.mutable_data_ptr(),
                        d_up.mutable_data_ptr(), layout);
    return {d_gate, d_up};
  }
#if defined(FREEHOLD_WITH_CUDA)
  const c10::cuda::CUDAGuard device_guard(gate.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(gate.device().index()).stream();
  check_cuda_status("swiglu_backward",
                    swiglu_backward_cuda(type, g.const_data_ptr(), u.const_data_ptr(), d.const_data_ptr(),
                                         d_gate.mutable_data_ptr(), d_up.mutable_data_ptr(), layout, stream),
                    gate);
#endif
  return {d_gate, d_up};
}

}  // namespace freehold::kernels
