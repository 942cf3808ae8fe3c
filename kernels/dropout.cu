// The CUDA dropout kernels: one thread per block of two elements (dropout_math.h), in a grid-stride loop. Raw
// pointers and a stream only; no torch header, so nvcc compiles this file alone.
#include "kernels/dropout.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "kernels/dropout_math.h"

namespace freehold::kernels {
namespace {

constexpr int kThreadsPerBlock = 256;
constexpr int64_t kMaxBlocks = 1 << 16;

__device__ inline float keep_factor(uint64_t word, uint64_t threshold, float scale) {
  return word < threshold ? scale : 0.0f;
}

template <typename T>
__global__ void __launch_bounds__(kThreadsPerBlock)
    apply_kernel(uint64_t seed, uint64_t threshold, float scale, const T* x, T* y, int64_t n) {
  const int64_t pairs = (n + 1) / 2;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < pairs; k += step) {
    const uint64_t block = dropout_block(seed, static_cast<uint64_t>(k));
    y[2 * k] = T(mul_rn(static_cast<float>(x[2 * k]), keep_factor(block & 0xFFFFFFFFULL, threshold, scale)));
    if (2 * k + 1 < n) {
      y[2 * k + 1] = T(mul_rn(static_cast<float>(x[2 * k + 1]), keep_factor(block >> 32, threshold, scale)));
    }
  }
}

__global__ void __launch_bounds__(kThreadsPerBlock)
    mask_kernel(uint64_t seed, uint64_t threshold, uint8_t* keep, int64_t n) {
  const int64_t pairs = (n + 1) / 2;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < pairs; k += step) {
    const uint64_t block = dropout_block(seed, static_cast<uint64_t>(k));
    keep[2 * k] = static_cast<uint8_t>((block & 0xFFFFFFFFULL) < threshold);
    if (2 * k + 1 < n) keep[2 * k + 1] = static_cast<uint8_t>((block >> 32) < threshold);
  }
}

unsigned grid_for(int64_t n) {
  const int64_t pairs = (n + 1) / 2;
  return static_cast<unsigned>(std::min<int64_t>((pairs + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks));
}

bool valid(int64_t n, uint64_t threshold) { return n >= 0 && threshold >= 1 && threshold <= (1ULL << 32); }

}  // namespace

cudaError_t dropout_mask_cuda(uint64_t seed, uint64_t threshold, uint8_t* keep, int64_t n, cudaStream_t stream) {
  if (!valid(n, threshold)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  mask_kernel<<<grid_for(n), kThreadsPerBlock, 0, stream>>>(seed, threshold, keep, n);
  return cudaGetLastError();
}

cudaError_t dropout_apply_cuda(ElementType type, uint64_t seed, uint64_t threshold, float scale, const void* x,
                               void* y, int64_t n, cudaStream_t stream) {
  if (!valid(n, threshold)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  switch (type) {
    case ElementType::kF32:
      apply_kernel<float><<<grid_for(n), kThreadsPerBlock, 0, stream>>>(
          seed, threshold, scale, static_cast<const float*>(x), static_cast<float*>(y), n);
      return cudaGetLastError();
    case ElementType::kBF16:
      apply_kernel<__nv_bfloat16><<<grid_for(n), kThreadsPerBlock, 0, stream>>>(
          seed, threshold, scale, static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y), n);
      return cudaGetLastError();
    case ElementType::kF16:
      apply_kernel<__half><<<grid_for(n), kThreadsPerBlock, 0, stream>>>(
          seed, threshold, scale, static_cast<const __half*>(x), static_cast<__half*>(y), n);
      return cudaGetLastError();
  }
  return cudaErrorInvalidValue;
}

}  // namespace freehold::kernels
