// RoPE's binding: checks tensors, describes their strides to the raw-pointer kernels, maps dtypes, picks a path and
// holds the autograd node (rope.h).
#include "kernels/rope.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/ScalarType.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>

#include "kernels/element_type.h"
#include "kernels/rms_norm.h"  // fused_kernels_enabled
#include "kernels/rope_cpu.h"
#include "kernels/rope_math.h"

#if defined(FREEHOLD_WITH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/rope.cuh"
#endif

namespace freehold::kernels {
namespace {

// Whether the fused kernels can compute rope_reference's result for these tensors (gradients aside).
bool fusable(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return x.scalar_type() == cos.scalar_type() && x.scalar_type() == sin.scalar_type() &&
         element_type(x.scalar_type()).has_value() && x.layout() == at::kStrided && cos.layout() == at::kStrided &&
         sin.layout() == at::kStrided && device_has_kernel(x.device());
}

// What a fused kernel needs beyond check_rope_args; returns the element type the three tensors share.
ElementType check_fused_args(const char* op, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.layout() == at::kStrided && cos.layout() == at::kStrided && sin.layout() == at::kStrided, op,
              ": x, cos and sin must be dense (strided) tensors, got layouts ", x.layout(), ", ", cos.layout(),
              " and ", sin.layout());
  TORCH_CHECK(x.scalar_type() == cos.scalar_type() && x.scalar_type() == sin.scalar_type(), op,
              ": x, cos and sin must have one dtype, got x ", x.scalar_type(), ", cos ", cos.scalar_type(), ", sin ",
              sin.scalar_type(), "; rope() handles mixed dtypes");
  const std::optional<ElementType> type = element_type(x.scalar_type());
  TORCH_CHECK(type.has_value(), op, ": supports Float, BFloat16 and Half, got ", x.scalar_type(),
              "; rope() handles other floating dtypes");
  return *type;
}

// The forward-only entry points (rope_cpu, rope_cuda) refuse what autograd would need to differentiate.
void check_no_grad(const char* op, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(!needs_grad(x) && !needs_grad(cos) && !needs_grad(sin), op, " is forward-only, but x (requires_grad=",
              x.requires_grad() ? "true" : "false", "), cos (requires_grad=", cos.requires_grad() ? "true" : "false",
              ") or sin (requires_grad=", sin.requires_grad() ? "true" : "false",
              ") needs a gradient; call rope(), which then uses its autograd node or rope_reference()");
}

// cos and sin as the kernels read them: expanded to (B, T, D), D contiguous, one set of strides for both. A (1, T, D)
// cos keeps stride 0 over B; anything else is copied once (cos/sin are 1/H of x's size).
std::pair<at::Tensor, at::Tensor> kernel_cos_sin(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  at::Tensor c = cos.expand({x.size(0), x.size(2), x.size(3)});
  at::Tensor s = sin.expand({x.size(0), x.size(2), x.size(3)});
  if (c.stride(2) != 1 || s.stride(2) != 1 || c.strides() != s.strides()) {
    c = c.contiguous();
    s = s.contiguous();
  }
  return {c, s};
}

RopeLayout layout_of(const at::Tensor& x, const at::Tensor& y, const at::Tensor& cos) {
  RopeLayout l;
  l.B = x.size(0), l.H = x.size(1), l.T = x.size(2), l.D = x.size(3);
  l.x_stride_b = x.stride(0), l.x_stride_h = x.stride(1), l.x_stride_t = x.stride(2);
  l.y_stride_b = y.stride(0), l.y_stride_h = y.stride(1), l.y_stride_t = y.stride(2);
  l.cs_stride_b = cos.stride(0), l.cs_stride_t = cos.stride(1);
  return l;
}

// y = x rotated in `direction`, by the kernel of x's device. x and y have D contiguous; y may be x.
void launch(const char* op, ElementType type, RopeDirection direction, const at::Tensor& x, const at::Tensor& y,
            const at::Tensor& cos, const at::Tensor& sin) {
  const RopeLayout layout = layout_of(x, y, cos);
  if (x.device().is_cpu()) {
    rope_rotate_cpu(type, direction, x.const_data_ptr(), y.mutable_data_ptr(), cos.const_data_ptr(),
                    sin.const_data_ptr(), layout);
    return;
  }
#if defined(FREEHOLD_WITH_CUDA)
  TORCH_CHECK(x.device().is_cuda(), op, ": no kernel for device ", x.device());
  const c10::cuda::CUDAGuard device_guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const cudaError_t status = rope_rotate_cuda(type, direction, x.const_data_ptr(), y.mutable_data_ptr(),
                                              cos.const_data_ptr(), sin.const_data_ptr(), layout, stream);
  TORCH_CHECK(status == cudaSuccess, op, ": launching the kernel on ", x.device(), " failed: ",
              cudaGetErrorString(status), " (x shape ", x.sizes(), ", strides ", x.strides(), ", dtype ",
              x.scalar_type(), "). HINT: an earlier asynchronous CUDA error can surface here; rerun with "
              "CUDA_LAUNCH_BLOCKING=1");
#else
  TORCH_CHECK(false, op, ": no kernel for device ", x.device(), " in this build");
#endif
}

// A new tensor: x rotated in `direction` by the fused kernel of x's device, laid out as x where x is dense.
at::Tensor rotate(const char* op, const at::Tensor& x_in, const at::Tensor& cos_in, const at::Tensor& sin_in,
                  RopeDirection direction) {
  const ElementType type = check_fused_args(op, x_in, cos_in, sin_in);
  TORCH_CHECK(device_has_kernel(x_in.device()), op, ": no fused kernel for device ", x_in.device(),
              " in this build");
  // Strides in B, H and T are read as they are (measured: copying q.transpose(1, 2) to contiguous first costs about
  // as much as the rotation itself); only a D that is not contiguous is copied.
  const at::Tensor x = x_in.size(3) > 1 && x_in.stride(3) != 1 ? x_in.contiguous() : x_in;
  const auto [cos, sin] = kernel_cos_sin(x, cos_in, sin_in);
  // empty_like keeps a dense x's strides (as ATen's elementwise ops lay their result out); a non-dense x gets a
  // contiguous result, never empty_like's suggested channels-last, whose D stride is not 1.
  const at::Tensor y = x.is_non_overlapping_and_dense() ? at::empty_like(x) : at::empty(x.sizes(), x.options());
  launch(op, type, direction, x, y, cos, sin);
  return y;
}

RopeDirection opposite(RopeDirection d) {
  return d == RopeDirection::kForward ? RopeDirection::kTransposed : RopeDirection::kForward;
}

at::Tensor rotate_differentiable(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                 RopeDirection direction);

// The fused rotation as one autograd node. It saves cos and sin only: the rotation is linear in x, so the backward
// needs no x (the reference's graph holds cos and sin too, plus rotate_half(x) and three more (B, H, T, D)
// temporaries while it runs). The backward is the transposed rotation, itself differentiable (double backward).
class RopeFunction : public torch::autograd::Function<RopeFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin, RopeDirection direction) {
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["direction"] = static_cast<int64_t>(direction);
    return rotate("rope", x, cos, sin, direction);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const std::vector<at::Tensor> saved = ctx->get_saved_variables();
    const auto direction = static_cast<RopeDirection>(ctx->saved_data["direction"].toInt());
    return {rotate_differentiable(grad_outputs[0], saved[0], saved[1], opposite(direction)), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

at::Tensor rotate_differentiable(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                 RopeDirection direction) {
  if (needs_grad(x)) return RopeFunction::apply(x, cos, sin, direction);
  return rotate("rope", x, cos, sin, direction);
}

}  // namespace

void check_rope_args(const char* op, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.defined() && cos.defined() && sin.defined(), op, ": x, cos and sin must be defined tensors");
  TORCH_CHECK(x.dim() == 4, op, ": x must have shape (B, H, T, D), got shape ", x.sizes());
  TORCH_CHECK(x.size(3) % 2 == 0, op, ": the head dimension D (last of x) must be even, got x of shape ", x.sizes());
  TORCH_CHECK(cos.sizes() == sin.sizes(), op, ": cos and sin must have one shape, got cos ", cos.sizes(), " and sin ",
              sin.sizes());
  TORCH_CHECK(cos.dim() == 3 && (cos.size(0) == x.size(0) || cos.size(0) == 1) && cos.size(1) == x.size(2) &&
                  cos.size(2) == x.size(3),
              op, ": cos and sin must have shape (B, T, D) or (1, T, D) = (", x.size(0), " or 1, ", x.size(2), ", ",
              x.size(3), ") for x of shape (B, H, T, D) = ", x.sizes(), ", got ", cos.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()) && at::isFloatingType(cos.scalar_type()) &&
                  at::isFloatingType(sin.scalar_type()),
              op, ": x, cos and sin must be floating point, got ", x.scalar_type(), ", ", cos.scalar_type(), " and ",
              sin.scalar_type());
  TORCH_CHECK(x.device() == cos.device() && x.device() == sin.device(), op, ": x is on ", x.device(), ", cos on ",
              cos.device(), " and sin on ", sin.device(), "; they must share one device");
}

at::Tensor rope_cpu(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  check_rope_args("rope_cpu", x, cos, sin);
  TORCH_CHECK(x.device().is_cpu(), "rope_cpu: x must be on cpu, got x on ", x.device());
  check_no_grad("rope_cpu", x, cos, sin);
  return rotate("rope_cpu", x, cos, sin, RopeDirection::kForward);
}

#if defined(FREEHOLD_WITH_CUDA)
at::Tensor rope_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  check_rope_args("rope_cuda", x, cos, sin);
  TORCH_CHECK(x.device().is_cuda(), "rope_cuda: x must be on cuda, got x on ", x.device());
  check_no_grad("rope_cuda", x, cos, sin);
  return rotate("rope_cuda", x, cos, sin, RopeDirection::kForward);
}
#endif

at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  check_rope_args("rope", x, cos, sin);
  // A gradient for cos or sin (never needed by the model: RotaryEmbedding's frequencies are not trained) is left to
  // the reference, so the node has only x's gradient to give.
  if (!fused_kernels_enabled() || !fusable(x, cos, sin) || needs_grad(cos) || needs_grad(sin)) {
    return rope_reference(x, cos, sin);
  }
  return rotate_differentiable(x, cos, sin, RopeDirection::kForward);
}

const at::Tensor& rope_(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  check_rope_args("rope_", x, cos, sin);
  TORCH_CHECK(!needs_grad(x), "rope_ rotates x in place, which autograd cannot differentiate, but x requires_grad "
              "under grad mode; call rope() (out of place) for training, or run under at::NoGradGuard");
  TORCH_CHECK(at::has_internal_overlap(x) != at::MemOverlap::Yes,
              "rope_: x's elements overlap in memory (an expanded tensor? strides ", x.strides(), " for shape ",
              x.sizes(), "), so it cannot be rotated in place; call rope()");
  if (!fused_kernels_enabled() || !fusable(x, cos, sin) || needs_grad(cos) || needs_grad(sin)) {
    x.copy_(rope_reference(x, cos, sin));
    return x;
  }
  if (x.size(3) > 1 && x.stride(3) != 1) {
    x.copy_(rotate("rope_", x, cos, sin, RopeDirection::kForward));
    return x;
  }
  const ElementType type = check_fused_args("rope_", x, cos, sin);
  const auto [c, s] = kernel_cos_sin(x, cos, sin);
  launch("rope_", type, RopeDirection::kForward, x, x, c, s);
  // As every ATen in-place op: a saved copy of x that autograd would later read is now stale, and this says so.
  x.unsafeGetTensorImpl()->bump_version();
  return x;
}

at::Tensor rope_backward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin) {
  check_rope_args("rope_backward", dy, cos, sin);
  TORCH_CHECK(!needs_grad(cos) && !needs_grad(sin), "rope_backward gives the gradient of x only, but cos "
              "(requires_grad=", cos.requires_grad() ? "true" : "false", ") or sin (requires_grad=",
              sin.requires_grad() ? "true" : "false", ") needs one; differentiate rope_reference() instead");
  return rotate_differentiable(dy, cos, sin, RopeDirection::kTransposed);
}

}  // namespace freehold::kernels
