// LoRA linear's reference and its one-node autograd function; see lora_linear_fused.h.
#include "kernels/lora_linear_fused.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <optional>

#include "kernels/cpu_gemm.h"
#include "kernels/dropout.h"
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
  check_dropout_probability(op, dropout);
}

// What travels outside the argument list that autograd inspects (it needs a device for every tensor argument) and
// gets no gradient: the frozen bias, and the dropout mask's seed (the mask is recomputed, never kept).
struct Frozen {
  at::Tensor bias;  // (out) or undefined
  std::optional<uint64_t> dropout_seed;  // set when dropout applies (kernels/dropout.h)
};

// IValues hold int64: the seed's bits, reinterpreted.
int64_t seed_bits(uint64_t seed) { return static_cast<int64_t>(seed); }
uint64_t seed_of(int64_t bits) { return static_cast<uint64_t>(bits); }

class LoraLinearFunction : public torch::autograd::Function<LoraLinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            Frozen frozen, const at::Tensor& lora_A, const at::Tensor& lora_B, double scale,
                            double dropout) {
    const at::Tensor& bias = frozen.bias;
    const at::Tensor xa = x.to(lora_A.scalar_type());  // (..., in), adapter dtype
    // The base GEMM may run in float32 on 16-bit weights (kernels/half_gemm.h); it reuses the widened x then.
    at::Tensor result = frozen_linear(x, weight, bias, xa.scalar_type() == at::kFloat ? xa : at::Tensor());
    const at::ScalarType result_dtype = result.scalar_type();  // (..., out), base dtype
    const at::Tensor xd = frozen.dropout_seed ? dropout_apply(xa, *frozen.dropout_seed, dropout) : xa;
    at::Tensor u = gemm_linear(xd, lora_A);  // (..., r)
    result = (result + gemm_linear(u, lora_B) * scale).to(result_dtype);
    ctx->save_for_backward({x, weight, lora_A, lora_B, u});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["dropout"] = frozen.dropout_seed ? dropout : 0.0;
    if (frozen.dropout_seed) ctx->saved_data["dropout_seed"] = seed_bits(*frozen.dropout_seed);
    return result;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const std::vector<at::Tensor> s = ctx->get_saved_variables();
    const at::Tensor &x = s[0], &weight = s[1], &lora_A = s[2], &lora_B = s[3], &u = s[4];
    const double scale = ctx->saved_data["scale"].toDouble(), dropout = ctx->saved_data["dropout"].toDouble();
    const uint64_t seed = dropout > 0.0 ? seed_of(ctx->saved_data["dropout_seed"].toInt()) : 0;
    // needs_input_grad counts tensor arguments only: x 0, weight 1, lora_A 2, lora_B 3.
    const at::Tensor dy = grad_outputs[0];                                 // (..., out), base dtype
    const at::Tensor d_lora = dy.to(lora_A.scalar_type()) * scale;        // (..., out), adapter dtype
    const int64_t r = lora_A.size(0), in = lora_A.size(1), out = lora_B.size(0);
    const at::Tensor d_lora2 = d_lora.reshape({-1, out});                  // (N, out)
    const at::Tensor u2 = u.reshape({-1, r});                              // (N, r)
    at::Tensor grad_x, grad_A, grad_B;
    if (ctx->needs_input_grad(3)) grad_B = gemm(d_lora2.t(), u2);          // (out, r)
    const at::Tensor du = gemm(d_lora2, lora_B);                           // (N, r)
    // Dropout's mask is recomputed from its seed: d xd = d(x ⊙ keep / (1 − p)) is the same map of the gradient.
    if (ctx->needs_input_grad(2)) {
      const at::Tensor xd = dropout_apply(x.to(lora_A.scalar_type()), seed, dropout);
      grad_A = gemm(du.t(), xd.reshape({-1, in}));                        // (r, in)
    }
    if (ctx->needs_input_grad(0)) {
      const at::Tensor dxd = dropout_apply(gemm(du, lora_A), seed, dropout).view(x.sizes());  // (..., in), adapter dtype
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
  const at::Tensor xd =
      training && dropout > 0.0 ? dropout_reference(xa, draw_dropout_seed(xa.device()), dropout) : xa;
  result = result + at::linear(at::linear(xd, lora_A), lora_B) * scale;
  return result.to(result_dtype);
}

at::Tensor lora_linear_fused(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             const at::Tensor& lora_A, const at::Tensor& lora_B, double scale, double dropout,
                             bool training) {
  check_args("lora_linear_fused", x, weight, bias, lora_A, lora_B, dropout);
  std::optional<uint64_t> seed;
  if (training && dropout > 0.0) seed = draw_dropout_seed(x.device());  // the one draw the reference makes too
  return LoraLinearFunction::apply(x, weight, Frozen{bias, seed}, lora_A, lora_B, scale, dropout);
}

}  // namespace freehold::kernels
