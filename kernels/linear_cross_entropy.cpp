// Linear + cross-entropy's binding: argument checks, the chunked pass over the tokens, and the autograd function
// that hands the pass's gradients to loss.backward() (linear_cross_entropy.h).
#include "kernels/linear_cross_entropy.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <optional>

#include "kernels/cpu_gemm.h"
#include "kernels/cross_entropy_cpu.h"
#include "kernels/element_type.h"

#if defined(FREEHOLD_WITH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cross_entropy.cuh"
#endif

namespace freehold::kernels {
namespace {

// Per-row losses of logits (rows, V) and, when write_grad, d loss / d logits in place.
void run_rows(ElementType type, at::Tensor& logits, const at::Tensor& targets, at::Tensor& loss, int64_t ignore_index,
              bool write_grad) {
  const int64_t rows = logits.size(0), V = logits.size(1);
  if (logits.device().is_cpu()) {
    cross_entropy_rows_cpu(type, logits.mutable_data_ptr(), targets.const_data_ptr<int64_t>(),
                           loss.mutable_data_ptr<float>(), rows, V, ignore_index, write_grad);
    return;
  }
#if defined(FREEHOLD_WITH_CUDA)
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(logits.device().index()).stream();
  const cudaError_t status =
      cross_entropy_rows_cuda(type, logits.mutable_data_ptr(), targets.const_data_ptr<int64_t>(),
                              loss.mutable_data_ptr<float>(), rows, V, ignore_index, write_grad, stream);
  TORCH_CHECK(status == cudaSuccess, "linear_cross_entropy: launching the row kernel on ", logits.device(),
              " failed: ", cudaGetErrorString(status), " (chunk of ", rows, " rows, V ", V, ", dtype ",
              logits.scalar_type(),
              "). HINT: an earlier asynchronous CUDA error can surface here; rerun with CUDA_LAUNCH_BLOCKING=1");
  return;
#endif
  TORCH_CHECK(false, "linear_cross_entropy: no row kernel for device ", logits.device());
}

struct FusedResult {
  at::Tensor loss;         // 0-d float32: Σ of the row losses
  at::Tensor grad_hidden;  // (N, C) hidden's dtype, for a unit upstream gradient; undefined unless asked for
  at::Tensor grad_weight;  // (V, C) float32, for a unit upstream gradient; undefined unless asked for
};

FusedResult fused_pass(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets_in,
                       const LinearCrossEntropyOptions& options, bool want_grad_hidden, bool want_grad_weight) {
  const ElementType type = *element_type(hidden.scalar_type());
  const int64_t N = hidden.size(0), C = hidden.size(1), V = weight.size(0);
  const at::Tensor targets = targets_in.contiguous();
  const bool write_grad = want_grad_hidden || want_grad_weight;
  FusedResult out;
  at::Tensor row_loss = at::empty({N}, hidden.options().dtype(at::kFloat));  // (N)
  if (want_grad_hidden) out.grad_hidden = at::empty({N, C}, hidden.options());
  if (want_grad_weight) out.grad_weight = at::zeros({V, C}, weight.options().dtype(at::kFloat));
  const int64_t chunk = std::clamp<int64_t>(options.chunk_bytes / (V * hidden.element_size()), 1, std::max<int64_t>(N, 1));
  // One logits buffer for every chunk: a fresh (chunk, V) allocation per chunk is returned to the OS and faulted
  // in again each time (it is far above malloc's mmap threshold), which costs more than the row kernel.
  at::Tensor buffer = at::empty({std::min(chunk, N), V}, hidden.options());  // (chunk, V)
  const at::Tensor weight_t = weight.t();                                     // (C, V) view
  for (int64_t begin = 0; begin < N; begin += chunk) {
    const int64_t rows = std::min(chunk, N - begin);
    const at::Tensor h = hidden.narrow(0, begin, rows);  // (rows, C)
    at::Tensor logits = buffer.narrow(0, 0, rows);       // (rows, V), contiguous, hidden's dtype
    gemm_out(logits, h, weight_t, C);
    at::Tensor loss_rows = row_loss.narrow(0, begin, rows);
    run_rows(type, logits, targets.narrow(0, begin, rows), loss_rows, options.ignore_index, write_grad);
    // `logits` now holds d loss / d logits.
    if (want_grad_hidden) {
      at::Tensor grad_rows = out.grad_hidden.narrow(0, begin, rows);  // (rows, C), written in place
      gemm_out(grad_rows, logits, weight, C);
    }
    if (want_grad_weight) out.grad_weight.addmm_(logits.t().to(at::kFloat), h.to(at::kFloat));
  }
  out.loss = row_loss.sum();
  return out;
}

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& targets, int64_t ignore_index, int64_t chunk_bytes) {
    const bool grad_hidden = hidden.requires_grad(), grad_weight = weight.requires_grad();
    FusedResult r = fused_pass(hidden, weight, targets, {ignore_index, chunk_bytes}, grad_hidden, grad_weight);
    ctx->save_for_backward({r.grad_hidden, r.grad_weight});
    ctx->saved_data["hidden_dtype"] = static_cast<int64_t>(hidden.scalar_type());
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    return r.loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const std::vector<at::Tensor> saved = ctx->get_saved_variables();
    const at::Tensor g = grad_outputs[0].to(at::kFloat);  // 0-d
    at::Tensor grad_hidden, grad_weight;
    // Scaled in fp32 and rounded once to the parameter's dtype.
    if (saved[0].defined()) {
      grad_hidden = (saved[0].to(at::kFloat) * g).to(static_cast<at::ScalarType>(ctx->saved_data["hidden_dtype"].toInt()));
    }
    if (saved[1].defined()) {
      grad_weight = (saved[1] * g).to(static_cast<at::ScalarType>(ctx->saved_data["weight_dtype"].toInt()));
    }
    return {grad_hidden, grad_weight, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

void check_linear_cross_entropy_args(const char* op, const at::Tensor& hidden, const at::Tensor& weight,
                                     const at::Tensor& targets, int64_t ignore_index) {
  TORCH_CHECK(hidden.defined() && weight.defined() && targets.defined(), op,
              ": hidden, weight and targets must be defined tensors");
  TORCH_CHECK(hidden.dim() == 2, op, ": hidden must have shape (N, C), got shape ", hidden.sizes());
  TORCH_CHECK(weight.dim() == 2, op, ": weight must have shape (V, C), got shape ", weight.sizes());
  TORCH_CHECK(weight.size(1) == hidden.size(1), op, ": weight has shape ", weight.sizes(), " but hidden has C = ",
              hidden.size(1), "; weight must be (V, ", hidden.size(1), ")");
  TORCH_CHECK(weight.size(0) >= 1, op, ": weight must have at least one row (V >= 1), got shape ", weight.sizes());
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0), op, ": targets must have shape (N) = (",
              hidden.size(0), "), got shape ", targets.sizes());
  TORCH_CHECK(targets.scalar_type() == at::kLong, op, ": targets must be int64, got ", targets.scalar_type());
  TORCH_CHECK(at::isFloatingType(hidden.scalar_type()) && at::isFloatingType(weight.scalar_type()), op,
              ": hidden and weight must be floating point, got ", hidden.scalar_type(), " and ", weight.scalar_type());
  TORCH_CHECK(hidden.device() == weight.device() && hidden.device() == targets.device(), op,
              ": hidden, weight and targets must be on one device, got ", hidden.device(), ", ", weight.device(),
              " and ", targets.device());
  const int64_t V = weight.size(0);
  const at::Tensor bad = targets.ne(ignore_index).logical_and(targets.lt(0).logical_or(targets.ge(V)));
  if (bad.any().item<bool>()) {
    const int64_t row = bad.to(at::kByte).argmax().item<int64_t>();
    TORCH_CHECK(false, op, ": targets[", row, "] = ", targets[row].item<int64_t>(), " is outside [0, ", V,
                ") (the vocabulary size) and is not the ignore index ", ignore_index);
  }
}

bool linear_cross_entropy_fusable(const at::Tensor& hidden, const at::Tensor& weight) {
  return hidden.scalar_type() == weight.scalar_type() && element_type(hidden.scalar_type()).has_value() &&
         hidden.layout() == at::kStrided && weight.layout() == at::kStrided && device_has_kernel(hidden.device());
}

at::Tensor linear_cross_entropy_fused(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                      const LinearCrossEntropyOptions& options) {
  const char* op = "linear_cross_entropy_fused";
  check_linear_cross_entropy_args(op, hidden, weight, targets, options.ignore_index);
  TORCH_CHECK(options.chunk_bytes >= 1, op, ": chunk_bytes must be >= 1, got ", options.chunk_bytes);
  TORCH_CHECK(hidden.scalar_type() == weight.scalar_type(), op, ": hidden and weight must have the same dtype, got ",
              hidden.scalar_type(), " and ", weight.scalar_type(), "; linear_cross_entropy() handles mixed dtypes");
  TORCH_CHECK(element_type(hidden.scalar_type()).has_value(), op, ": supports Float, BFloat16 and Half, got ",
              hidden.scalar_type(), "; linear_cross_entropy() handles other floating dtypes");
  TORCH_CHECK(device_has_kernel(hidden.device()), op, ": no row kernel for device ", hidden.device(),
              " in this build", " (CUDA kernels are built with -DFREEHOLD_CUDA=ON)");
#if defined(FREEHOLD_WITH_CUDA)
  std::optional<c10::cuda::CUDAGuard> guard;
  if (hidden.device().is_cuda()) guard.emplace(hidden.device());
#endif
  if (!at::GradMode::is_enabled() || !(hidden.requires_grad() || weight.requires_grad())) {
    return fused_pass(hidden, weight, targets, options, false, false).loss;
  }
  return LinearCrossEntropyFunction::apply(hidden, weight, targets, options.ignore_index, options.chunk_bytes);
}

at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                bool fused, const LinearCrossEntropyOptions& options) {
  if (fused && linear_cross_entropy_fusable(hidden, weight)) {
    return linear_cross_entropy_fused(hidden, weight, targets, options);
  }
  return linear_cross_entropy_reference(hidden, weight, targets, options.ignore_index);
}

}  // namespace freehold::kernels
