// LoRA linear's reference and its one-node autograd function; see lora_linear_fused.h.
#include "kernels/lora_linear_fused.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "kernels/half_gemm.h"

namespace freehold::kernels {
namespace {

void check_args(const char* op, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                const at::Tensor& lora_A, const at::Tensor& lora_B, double dropout) {
  TORCH_CHECK(x.defined() && weight.defined() && lora_A.defined() && lora_B.defined(), op,
              ": x, weight, lora_A and lora_B must be defined");
  TORCH_CHECK(x.dim() >= 1 && weight.dim() == 2 && x.size(-1) == weight.size(1), op, ": x (..., in) and weight (out, in) ",
              "do not match: x ", x.sizes(), ", weight ", weight.sizes());
  TORCH_CHECK(lora_A.dim() == 2 && lora_A.size(1) == weight.size(1), op, ": lora_A must be (r, ", weight.size(1),
              "), got ", lora_A.sizes());
  TORCH_CHECK(lora_B.dim() == 2 && lora_B.size(0) == weight.size(0) && lora_B.size(1) == lora_A.size(0), op,
              ": lora_B must be (", weight.size(0), ", ", lora_A.size(0), "), got ", lora_B.sizes());
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)), op, ": bias must be (",
              weight.size(0), "), got ", bias.sizes());
  TORCH_CHECK(lora_A.scalar_type() == lora_B.scalar_type(), op, ": lora_A and lora_B must share a dtype, got ",
              lora_A.scalar_type(), " and ", lora_B.scalar_type());
  TORCH_CHECK(std::isfinite(dropout) && dropout >= 0 && dropout < 1, op, ": dropout must be in [0, 1), got ", dropout);
}

// Tensors that may be undefined travel outside the argument list that autograd inspects (it needs a device for
// every tensor argument), and neither gets a gradient: the bias is frozen, the mask is data.
struct Frozen {
  at::Tensor bias;  // (out) or undefined
  at::Tensor mask;  // (..., in) bool, defined when dropout applies; keep = mask / (1 − p), as at::dropout's noise
};

class LoraLinearFunction : public torch::autograd::Function<LoraLinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            Frozen frozen, const at::Tensor& lora_A, const at::Tensor& lora_B, double scale,
                            double dropout) {
    const at::Tensor& bias = frozen.bias;
    const at::Tensor& mask = frozen.mask;
    const at::Tensor xa = x.to(lora_A.scalar_type());  // (..., in), adapter dtype
    // The base GEMM may run in float32 on 16-bit weights (kernels/half_gemm.h); it reuses the widened x then.
    at::Tensor result = frozen_linear(x, weight, bias, xa.scalar_type() == at::kFloat ? xa : at::Tensor());
    const at::ScalarType result_dtype = result.scalar_type();  // (..., out), base dtype
    at::Tensor xd = mask.defined() ? xa * mask.to(xa.scalar_type()).div_(1.0 - dropout) : xa;
    at::Tensor u = at::linear(xd, lora_A);  // (..., r)
    result = (result + at::linear(u, lora_B) * scale).to(result_dtype);
    ctx->save_for_backward({x, weight, lora_A, lora_B, u, mask});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["dropout"] = dropout;
    return result;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const std::vector<at::Tensor> s = ctx->get_saved_variables();
    const at::Tensor &x = s[0], &weight = s[1], &lora_A = s[2], &lora_B = s[3], &u = s[4], &mask = s[5];
    const double scale = ctx->saved_data["scale"].toDouble(), dropout = ctx->saved_data["dropout"].toDouble();
    // needs_input_grad counts tensor arguments only: x 0, weight 1, lora_A 2, lora_B 3.
    const at::Tensor dy = grad_outputs[0];                                 // (..., out), base dtype
    const at::Tensor d_lora = dy.to(lora_A.scalar_type()) * scale;        // (..., out), adapter dtype
    const int64_t r = lora_A.size(0), in = lora_A.size(1), out = lora_B.size(0);
    const at::Tensor d_lora2 = d_lora.reshape({-1, out});                  // (N, out)
    const at::Tensor u2 = u.reshape({-1, r});                              // (N, r)
    at::Tensor grad_x, grad_A, grad_B;
    if (ctx->needs_input_grad(3)) grad_B = d_lora2.t().mm(u2);             // (out, r)
    const at::Tensor du = d_lora2.mm(lora_B);                              // (N, r)
    at::Tensor keep;  // (..., in) adapter dtype, dropout's scaled mask
    if (mask.defined()) keep = mask.to(lora_A.scalar_type()).div_(1.0 - dropout);
    if (ctx->needs_input_grad(2)) {
      at::Tensor xd = x.to(lora_A.scalar_type());
      if (keep.defined()) xd = xd * keep;
      grad_A = du.t().mm(xd.reshape({-1, in}));                           // (r, in)
    }
    if (ctx->needs_input_grad(0)) {
      at::Tensor dxd = du.mm(lora_A).view(x.sizes());                      // (..., in), adapter dtype
      if (keep.defined()) dxd = dxd * keep;
      grad_x = frozen_linear_input_grad(dy, weight) + dxd.to(x.scalar_type());
    }
    return {grad_x, at::Tensor(), at::Tensor(), grad_A, grad_B, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor lora_linear_reference(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                 const at::Tensor& lora_A, const at::Tensor& lora_B, double scale, double dropout,
                                 bool training) {
  check_args("lora_linear_reference", x, weight, bias, lora_A, lora_B, dropout);
  at::Tensor result = at::linear(x, weight, bias);
  const at::ScalarType result_dtype = result.scalar_type();
  const at::Tensor xa = x.scalar_type() == lora_A.scalar_type() ? x : x.to(lora_A.scalar_type());
  const at::Tensor xd = training && dropout > 0.0 ? at::dropout(xa, dropout, /*train=*/true) : xa;
  result = result + at::linear(at::linear(xd, lora_A), lora_B) * scale;
  return result.to(result_dtype);
}

at::Tensor lora_linear_fused(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             const at::Tensor& lora_A, const at::Tensor& lora_B, double scale, double dropout,
                             bool training) {
  check_args("lora_linear_fused", x, weight, bias, lora_A, lora_B, dropout);
  at::Tensor mask;
  if (training && dropout > 0.0) {
    // at::dropout's draw: bernoulli_(1 − p) over a tensor of x's shape in the adapter dtype, from the default
    // generator; kept as bool (1 byte instead of 4).
    mask = at::empty_like(x, x.options().dtype(lora_A.scalar_type())).bernoulli_(1.0 - dropout).to(at::kBool);
  }
  return LoraLinearFunction::apply(x, weight, Frozen{bias, mask}, lora_A, lora_B, scale, dropout);
}

}  // namespace freehold::kernels
