// Helpers shared by the kernel tests: seeded inputs, closeness with a message that says where, and counting
// elements whose bits differ.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace freehold::kernels::testing {

// Normal(0, 1) samples drawn in fp32 on the CPU from `seed`, then rounded to `dtype`.
inline at::Tensor seeded_randn(std::vector<int64_t> shape, at::ScalarType dtype, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(dtype);
}

// How many elements of two tensors of one dtype and shape differ in their bits (-0 and +0 count as different).
inline int64_t count_bit_differences(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.scalar_type(), b.scalar_type());
  EXPECT_EQ(a.sizes(), b.sizes());
  const at::ScalarType bits = a.element_size() == 2 ? at::kShort : a.element_size() == 4 ? at::kInt : at::kLong;
  return (a.contiguous().view(bits) != b.contiguous().view(bits)).sum().item<int64_t>();
}

// Elements outside |actual - expected| <= atol + rtol * |expected|, compared in fp32; 0 when all are close.
// `where` receives the worst element's details for the failure message.
inline int64_t count_not_close(const at::Tensor& actual, const at::Tensor& expected, double rtol, double atol,
                               std::string* where) {
  const at::Tensor a = actual.to(at::kFloat).cpu().reshape({-1});
  const at::Tensor e = expected.to(at::kFloat).cpu().reshape({-1});
  const at::Tensor excess = (a - e).abs() - (atol + rtol * e.abs());
  const int64_t bad = (excess > 0).sum().item<int64_t>();
  if (bad > 0 && where != nullptr) {
    const int64_t i = excess.argmax().item<int64_t>();
    *where = "worst at flat index " + std::to_string(i) + ": actual " + std::to_string(a[i].item<float>()) +
             ", expected " + std::to_string(e[i].item<float>());
  }
  return bad;
}

}  // namespace freehold::kernels::testing
