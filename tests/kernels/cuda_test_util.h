// What the CUDA kernel tests (tests/kernels/*_cuda_test.cpp, built with FREEHOLD_CUDA=ON) share: the reason this
// machine cannot run them, and the skip that reports it. On a machine without a GPU they skip with that reason; on
// one with a GPU a runtime that ATen cannot see (libtorch_cuda dropped at link time) fails instead.
#pragma once

#include <ATen/Context.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <string>

namespace freehold::kernels::testing {

// Empty when this machine has a usable GPU, else why not.
inline std::string why_no_gpu() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // clear it, so that it cannot surface in a later check
    return std::string("no usable GPU: ") + cudaGetErrorString(status);
  }
  if (count == 0) return "no GPU on this machine";
  EXPECT_TRUE(at::hasCUDA()) << "the CUDA runtime sees " << count
                             << " GPU(s) but ATen does not; was libtorch_cuda.so dropped at link time?";
  return at::hasCUDA() ? "" : "ATen sees no GPU";
}

}  // namespace freehold::kernels::testing

#define SKIP_WITHOUT_GPU()                                                          \
  do {                                                                              \
    const std::string why = ::freehold::kernels::testing::why_no_gpu();             \
    if (!why.empty()) GTEST_SKIP() << why;                                          \
  } while (false)
