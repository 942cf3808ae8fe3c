// AdamW over all adapter tensors in one pass (issue 7), in the four parts every freehold kernel has: the ATen
// reference (the spec: trainer/adamw.h's torch.optim.AdamW step, tensor by tensor), a CPU fused kernel and a CUDA
// multi-tensor kernel sharing their per-element math (adamw_math.h), and this binding, which checks tensors and
// picks one. On the CPU the fused step is bit-identical to the reference; adamw_math.h says what that takes.
//
// Every function takes the step's tensors as parallel lists, index i one adapter tensor of any shape:
//   params[i]       updated in place
//   grads[i]        its gradient, params[i]'s shape; an undefined tensor skips index i (torch's p.grad None)
//   exp_avgs[i]     m, params[i]'s shape, updated in place
//   exp_avg_sqs[i]  v, params[i]'s shape, updated in place
//   lrs[i]          its learning rate this step (LoRA+ groups and the schedule already applied)
// and `step`, the optimizer's step count including this step (>= 1), for the bias corrections.
//
// Errors in the arguments throw c10::Error (TORCH_CHECK) naming the function, the index and the offending value.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/TensorBody.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>

#include "kernels/adamw_math.h"

namespace freehold::kernels {

struct AdamWHyperparameters {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // decoupled: p ← p · (1 − lr·wd) before the Adam update
};

// The spec, in plain ATen, one tensor after another (any floating dtype, any device, any layout):
//   p.mul_(1 − lr·wd) if wd != 0; m.lerp_(g, 1 − β1); v.mul_(β2).addcmul_(g, g, 1 − β2);
//   p.addcdiv_(m, (v.sqrt() / sqrt(1 − β2^t)).add_(eps), −lr / (1 − β1^t))
void adamw_step_reference(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                          at::TensorList exp_avg_sqs, c10::ArrayRef<double> lrs, const AdamWHyperparameters& hyper,
                          int64_t step);

// Why the fused kernels cannot take these tensors, or "" when they can: every defined tensor Float, contiguous and
// strided, all on one CPU or (CUDA builds) CUDA device. The arguments must pass check_adamw_args first.
std::string adamw_fused_refusal(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                                at::TensorList exp_avg_sqs);

// The fused step on the tensors' device: one parallel pass over all elements of all tensors on the CPU, one
// kernel launch for all tensors on CUDA (its current stream). Throws, naming the tensor, when
// adamw_fused_refusal is not "". CPU: bit-identical to adamw_step_reference when adamw_cpu_arithmetic()
// .matches_aten; CUDA: adamw_math.h's update with kFused and a correctly rounded sqrt (the CPU kernel's bits where
// MKL's sqrt rounds correctly), within a few ulp of the ATen composition on the GPU.
void adamw_step_fused(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                      at::TensorList exp_avg_sqs, c10::ArrayRef<double> lrs, const AdamWHyperparameters& hyper,
                      int64_t step);

// What the optimizer calls: adamw_step_fused when the fused kernels are enabled (set_fused_kernels_enabled,
// rms_norm.h), adamw_fused_refusal is "" and, on the CPU, adamw_cpu_arithmetic().matches_aten; else
// adamw_step_reference. Either way the result is the reference's (on the CPU, to the bit).
void adamw_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                c10::ArrayRef<double> lrs, const AdamWHyperparameters& hyper, int64_t step);

// How this process's ATen rounds the reference on the CPU, measured once on probe inputs (thread-safe): whether its
// lerp and addcmul contract to FMAs, and whether its sqrt is MKL's vmsSqrt (found in the process) or correctly
// rounded. matches_aten is false when no combination the CPU kernel implements reproduced every probe bit; the
// CPU kernel then uses kFused and a correctly rounded sqrt, and adamw_step() uses the reference.
struct AdamWCpuArithmetic {
  AdamWContraction contraction = AdamWContraction::kFused;
  bool mkl_sqrt = false;
  bool matches_aten = false;
  std::string description;  // e.g. "lerp/addcmul fused multiply-add, sqrt MKL vmsSqrt (VML_HA)"
};
const AdamWCpuArithmetic& adamw_cpu_arithmetic();

// Throws unless the lists have one length, every params[i] is a defined floating tensor, grads[i] (when defined),
// exp_avgs[i] and exp_avg_sqs[i] are defined, of params[i]'s shape, dtype and device, every lrs[i] is finite,
// step >= 1, and the hyperparameters are what torch.optim.AdamW accepts (0 <= β < 1, eps >= 0, wd >= 0, finite).
// `op` names the caller in the message.
void check_adamw_args(const char* op, at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                      at::TensorList exp_avg_sqs, c10::ArrayRef<double> lrs, const AdamWHyperparameters& hyper,
                      int64_t step);

}  // namespace freehold::kernels
