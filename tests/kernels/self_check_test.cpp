// The fused kernels' start-up self-check on the CPU: it passes where the kernels are right, and a forced mismatch
// makes it fail with a line naming the kernel, after which fused_kernels_pass_self_check says "use the reference"
// (the path a GPU with a broken kernel takes).
#include "kernels/self_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace freehold::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(KernelSelfCheckTest, PassesOnTheCpuInFp32AndBf16) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const SelfCheckReport report = run_kernel_self_check(at::Device(at::kCPU), dtype);
    EXPECT_TRUE(report.passed()) << dtype << ": " << ::testing::PrintToString(report.failures);
  }
}

TEST(KernelSelfCheckTest, ForcedMismatchFailsAndNamesTheKernel) {
  const SelfCheckReport lce = run_kernel_self_check(at::Device(at::kCPU), at::kFloat, "linear_cross_entropy");
  EXPECT_THAT(lce.failures, ElementsAre(HasSubstr("linear_cross_entropy loss: max |fused - reference|")));
  const SelfCheckReport rms = run_kernel_self_check(at::Device(at::kCPU), at::kFloat, "rms_norm");
  EXPECT_THAT(rms.failures, ElementsAre(HasSubstr("rms_norm: max |fused - reference|")));
  const SelfCheckReport back = run_kernel_self_check(at::Device(at::kCPU), at::kBFloat16, "rms_norm_backward");
  EXPECT_THAT(back.failures, ElementsAre(HasSubstr("rms_norm dx: max |fused - reference|")));
  const SelfCheckReport attention = run_kernel_self_check(at::Device(at::kCPU), at::kFloat, "causal_attention");
  EXPECT_THAT(attention.failures, ElementsAre(HasSubstr("causal_attention: max |fused - reference|")));
}

TEST(KernelSelfCheckTest, CachedDecisionFallsBackAfterAForcedMismatch) {
  reset_self_check_for_testing("");
  EXPECT_TRUE(fused_kernels_pass_self_check(at::Device(at::kCPU), at::kFloat));
  reset_self_check_for_testing("linear_cross_entropy");
  EXPECT_FALSE(fused_kernels_pass_self_check(at::Device(at::kCPU), at::kFloat));
  EXPECT_FALSE(fused_kernels_pass_self_check(at::Device(at::kCPU), at::kFloat));  // cached
  reset_self_check_for_testing("");
  EXPECT_TRUE(fused_kernels_pass_self_check(at::Device(at::kCPU), at::kFloat));
}

}  // namespace
}  // namespace freehold::kernels
