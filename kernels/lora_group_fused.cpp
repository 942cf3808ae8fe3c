// LoRA group's reference and its one-node autograd function; see lora_group_fused.h.
#include "kernels/lora_group_fused.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "kernels/cpu_gemm.h"
#include "kernels/half_gemm.h"
#include "kernels/lora_linear_fused.h"

namespace freehold::kernels {
namespace {

void check_args(const char* op, const at::Tensor& x, const std::vector<LoraGroupMember>& members) {
  TORCH_CHECK(!members.empty(), op, ": needs at least one member, got none");
  TORCH_CHECK(x.defined() && x.dim() >= 1, op, ": x must be a defined tensor (..., in)");
  const int64_t in = x.size(-1);
  const at::ScalarType adapter_dtype = members[0].lora_A.defined() ? members[0].lora_A.scalar_type() : at::kFloat;
  for (size_t i = 0; i < members.size(); ++i) {
    const LoraGroupMember& m = members[i];
    TORCH_CHECK(m.weight.defined() && m.lora_A.defined() && m.lora_B.defined(), op, ": member ", i,
                ": weight, lora_A and lora_B must be defined");
    TORCH_CHECK(m.weight.dim() == 2 && m.weight.size(1) == in, op, ": member ", i, ": weight must be (out, ", in,
                ") to read x ", x.sizes(), ", got ", m.weight.sizes());
    TORCH_CHECK(m.weight.scalar_type() == x.scalar_type(), op, ": member ", i, ": weight must have x's dtype ",
                x.scalar_type(), ", got ", m.weight.scalar_type());
    const int64_t out = m.weight.size(0);
    TORCH_CHECK(m.lora_A.dim() == 2 && m.lora_A.size(0) >= 1 && m.lora_A.size(1) == in, op, ": member ", i,
                ": lora_A must be (r, ", in, ") with r >= 1, got ", m.lora_A.sizes());
    TORCH_CHECK(m.lora_B.dim() == 2 && m.lora_B.size(0) == out && m.lora_B.size(1) == m.lora_A.size(0), op,
                ": member ", i, ": lora_B must be (", out, ", ", m.lora_A.size(0), "), got ", m.lora_B.sizes());
    TORCH_CHECK(!m.bias.defined() || (m.bias.dim() == 1 && m.bias.size(0) == out), op, ": member ", i,
                ": bias must be (", out, ") or undefined, got ", m.bias.sizes());
    // One adapter dtype for the group: the A GEMM is one GEMM.
    TORCH_CHECK(m.lora_A.scalar_type() == adapter_dtype && m.lora_B.scalar_type() == adapter_dtype, op, ": member ",
                i, ": lora_A and lora_B must have the group's adapter dtype ", adapter_dtype, ", got ",
                m.lora_A.scalar_type(), " and ", m.lora_B.scalar_type());
    TORCH_CHECK(std::isfinite(m.scale), op, ": member ", i, ": scale must be finite, got ", m.scale);
  }
}

// What autograd must not inspect as tensor arguments (it needs a device for each, and a bias may be undefined) and
// what gets no gradient: the frozen biases and the scales.
struct Frozen {
  std::vector<at::Tensor> biases;  // (out_i) or undefined
  std::vector<double> scales;
};

// Tensor arguments, as autograd counts them for needs_input_grad and for the gradients backward returns:
// x, then the n weights, the n lora_A and the n lora_B.
class LoraGroupFunction : public torch::autograd::Function<LoraGroupFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                at::TensorList weights, Frozen frozen, at::TensorList lora_As,
                                                at::TensorList lora_Bs) {
    const size_t n = weights.size();
    const at::ScalarType adapter_dtype = lora_As[0].scalar_type();
    const at::Tensor A_cat = at::cat(lora_As, 0);                                     // (R, in)
    const at::Tensor xa = x.scalar_type() == adapter_dtype ? x : x.to(adapter_dtype);  // (..., in), adapter dtype
    const at::Tensor u = gemm_linear(xa, A_cat);                                       // (..., R)
    torch::autograd::variable_list outputs;
    outputs.reserve(n);
    int64_t offset = 0;
    for (size_t i = 0; i < n; ++i) {
      const int64_t r = lora_As[i].size(0);
      // (..., out_i), base dtype; possibly a float32 GEMM on 16-bit weights (kernels/half_gemm.h), reusing xa
      at::Tensor y = frozen_linear(x, weights[i], frozen.biases[i], adapter_dtype == at::kFloat ? xa : at::Tensor());
      const at::ScalarType base_dtype = y.scalar_type();
      y = (y + gemm_linear(u.narrow(-1, offset, r), lora_Bs[i]) * frozen.scales[i]).to(base_dtype);
      outputs.push_back(y);
      offset += r;
    }
    torch::autograd::variable_list saved = {x, A_cat, u};
    saved.insert(saved.end(), weights.begin(), weights.end());
    saved.insert(saved.end(), lora_Bs.begin(), lora_Bs.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["scales"] = c10::List<double>(frozen.scales);
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const std::vector<at::Tensor> s = ctx->get_saved_variables();
    const size_t n = grad_outputs.size();
    const at::Tensor &x = s[0], &A_cat = s[1], &u = s[2];
    const c10::List<double> scales = ctx->saved_data["scales"].toDoubleList();
    const at::ScalarType adapter_dtype = A_cat.scalar_type();
    const int64_t R = A_cat.size(0), in = A_cat.size(1);
    const at::Tensor u2 = u.reshape({-1, R});  // (N, R)
    const int64_t N = u2.size(0);
    auto weight = [&](size_t i) -> const at::Tensor& { return s[3 + i]; };
    auto lora_B = [&](size_t i) -> const at::Tensor& { return s[3 + n + i]; };
    auto needs_A = [&](size_t i) { return ctx->needs_input_grad(1 + n + i); };
    auto needs_B = [&](size_t i) { return ctx->needs_input_grad(1 + 2 * n + i); };

    // The low-rank paths: d B_i from d(lora_i) and u_i; d u_i = scale_i · dy_i · B_i, side by side in d u (N, R).
    std::vector<at::Tensor> grad_B(n), du_parts(n);
    bool any_A = false;
    int64_t offset = 0;
    for (size_t i = 0; i < n; ++i) {
      const int64_t r = lora_B(i).size(1), out = lora_B(i).size(0);
      const at::Tensor d_lora = (grad_outputs[i].to(adapter_dtype) * scales.get(i)).reshape({N, out});  // (N, out_i)
      if (needs_B(i)) grad_B[i] = gemm(d_lora.t(), u2.narrow(1, offset, r));                      // (out_i, r_i)
      du_parts[i] = gemm(d_lora, lora_B(i));                                                       // (N, r_i)
      any_A = any_A || needs_A(i);
      offset += r;
    }
    const at::Tensor du = n == 1 ? du_parts[0] : at::cat(du_parts, 1);  // (N, R)

    std::vector<at::Tensor> grad_A(n);
    if (any_A) {
      const at::Tensor xa = x.scalar_type() == adapter_dtype ? x : x.to(adapter_dtype);
      const at::Tensor dA_cat = gemm(du.t(), xa.reshape({N, in}));  // (R, in): every d A_i in one GEMM
      offset = 0;
      for (size_t i = 0; i < n; ++i) {
        const int64_t r = lora_B(i).size(1);
        if (needs_A(i)) grad_A[i] = dA_cat.narrow(0, offset, r);  // rows of a contiguous matrix: contiguous
        offset += r;
      }
    }

    at::Tensor grad_x;
    if (ctx->needs_input_grad(0)) {
      // The base parts in x's dtype, as autograd would sum them; then the low-rank part of all members at once.
      at::Tensor dx = frozen_linear_input_grad(grad_outputs[0].reshape({N, -1}), weight(0));  // (N, in), x's dtype
      for (size_t i = 1; i < n; ++i) dx.add_(frozen_linear_input_grad(grad_outputs[i].reshape({N, -1}), weight(i)));
      dx.add_(gemm(du, A_cat).to(x.scalar_type()));
      grad_x = dx.view(x.sizes());
    }

    torch::autograd::variable_list grads;  // x, n weights, Frozen, n lora_A, n lora_B
    grads.reserve(3 * n + 2);
    grads.push_back(grad_x);
    for (size_t i = 0; i < n; ++i) grads.emplace_back();
    grads.emplace_back();
    for (size_t i = 0; i < n; ++i) grads.push_back(grad_A[i]);
    for (size_t i = 0; i < n; ++i) grads.push_back(grad_B[i]);
    return grads;
  }
};

}  // namespace

std::vector<at::Tensor> lora_group_reference(const at::Tensor& x, const std::vector<LoraGroupMember>& members) {
  check_args("lora_group_reference", x, members);
  std::vector<at::Tensor> outputs;
  outputs.reserve(members.size());
  for (const LoraGroupMember& m : members) {
    outputs.push_back(lora_linear_reference(x, m.weight, m.bias, m.lora_A, m.lora_B, m.scale, /*dropout=*/0.0,
                                            /*training=*/false));
  }
  return outputs;
}

std::vector<at::Tensor> lora_group_fused(const at::Tensor& x, const std::vector<LoraGroupMember>& members) {
  check_args("lora_group_fused", x, members);
  std::vector<at::Tensor> weights, lora_As, lora_Bs;
  Frozen frozen;
  for (const LoraGroupMember& m : members) {
    weights.push_back(m.weight);
    lora_As.push_back(m.lora_A);
    lora_Bs.push_back(m.lora_B);
    frozen.biases.push_back(m.bias);
    frozen.scales.push_back(m.scale);
  }
  return LoraGroupFunction::apply(x, at::TensorList(weights), std::move(frozen), at::TensorList(lora_As),
                                  at::TensorList(lora_Bs));
}

}  // namespace freehold::kernels
