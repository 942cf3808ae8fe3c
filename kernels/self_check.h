// The start-up self-check of the fused kernels (DESIGN.md §7): each fused kernel against its ATen reference on a
// small seeded problem on the device and dtype the run trains in. A kernel that disagrees (a miscompiled or
// unsupported GPU path) is reported with a warning and the caller uses the reference instead.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace freehold::kernels {

struct SelfCheckReport {
  std::vector<std::string> failures;  // one line per disagreeing kernel: its name, the worst difference, the limit
  bool passed() const { return failures.empty(); }
};

// Runs every check now (uncached), on `device` with inputs of `dtype`: linear_cross_entropy_fused (loss and
// d hidden), rms_norm's fused forward and rms_norm_backward (dx, dweight),
// rope's fused forward and rope_backward (dx),
// swiglu's fused forward and swiglu_backward (d gate, d up), adamw_step_fused (three steps, float32 whatever
// `dtype` is). `force_mismatch` names a kernel whose fused result is
// perturbed before the comparison; tests use it to prove the fallback path on machines where every kernel is right.
SelfCheckReport run_kernel_self_check(const at::Device& device, at::ScalarType dtype,
                                      const std::string& force_mismatch = "");

// Whether the fused kernels may be used on this device and dtype: run_kernel_self_check once per (device, dtype),
// logging one warning with every failure ("... using the reference kernels") when it fails. Thread-safe.
bool fused_kernels_pass_self_check(const at::Device& device, at::ScalarType dtype);

// Tests only: forget cached results, and make later checks perturb `kernel` ("" for none).
void reset_self_check_for_testing(const std::string& force_mismatch);

}  // namespace freehold::kernels
