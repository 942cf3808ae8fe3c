// AdamW's reference: torch.optim.AdamW's single-tensor step (torch 2.11) in plain ATen, one tensor after another,
// as trainer/adamw.cpp computed it before the fused kernels. The fused kernels are tested against it bit for bit.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>

#include "kernels/adamw.h"

namespace freehold::kernels {

void adamw_step_reference(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                          at::TensorList exp_avg_sqs, c10::ArrayRef<double> lrs, const AdamWHyperparameters& hyper,
                          int64_t step) {
  check_adamw_args("adamw_step_reference", params, grads, exp_avgs, exp_avg_sqs, lrs, hyper, step);
  at::NoGradGuard no_grad;
  // The doubles ATen gets, from the one function the fused kernels round to float (adamw_math.h).
  const AdamWStepScalars s = adamw_step_scalars(hyper.beta1, hyper.beta2, hyper.eps, step);
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& g = grads[i];
    if (!g.defined()) continue;  // torch skips p.grad None
    const at::Tensor& p = params[i];
    if (hyper.weight_decay != 0) p.mul_(adamw_decay_factor(lrs[i], hyper.weight_decay));
    exp_avgs[i].lerp_(g, s.lerp_weight);
    exp_avg_sqs[i].mul_(s.beta2).addcmul_(g, g, s.one_minus_beta2);
    const at::Tensor denom = (exp_avg_sqs[i].sqrt() / s.bias_correction2_sqrt).add_(s.eps);
    p.addcdiv_(exp_avgs[i], denom, adamw_neg_step_size(lrs[i], s));
  }
}

}  // namespace freehold::kernels
