// The CUDA RMSNorm forward kernel: one warp per row, fp32 accumulation, the row math of rms_norm_math.h.
// Raw pointers and a stream only; no torch header, so nvcc compiles this file alone.
#include "kernels/rms_norm.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>

#include "kernels/rms_norm_math.h"

namespace freehold::kernels {
namespace {

// 8 rows per block of 256 threads. A warp per row keeps the reduction in registers (no shared memory, no
// __syncthreads) and is enough to cover a row of C = 4096..8192 at 128..256 elements per lane.
constexpr int kWarpsPerBlock = 8;
constexpr int kThreadsPerBlock = kWarpsPerBlock * kRmsNormLanes;

// x (rows, C), weight (C) -> y (rows, C). Lane l of the warp for a row adds the squares of elements l, l + 32, ...
// (rms_norm_lane_sum_squares), the butterfly of shuffles combines the lanes exactly as rms_norm_combine_lanes
// does on the CPU, and each lane then writes its elements.
template <typename T>
__global__ void __launch_bounds__(kThreadsPerBlock)
    rms_norm_forward_kernel(const T* __restrict__ x, const T* __restrict__ weight, T* __restrict__ y, int64_t rows,
                            int64_t C, float eps) {
  const int lane = static_cast<int>(threadIdx.x) % kRmsNormLanes;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kRmsNormLanes;
  if (row >= rows) return;  // the whole warp leaves together, so the shuffles below always have all 32 lanes
  const T* x_row = x + row * C;
  T* y_row = y + row * C;

  float sum_squares = rms_norm_lane_sum_squares(x_row, C, lane);
  for (int offset = kRmsNormLanes / 2; offset > 0; offset /= 2) {
    sum_squares = add_rn(sum_squares, __shfl_xor_sync(0xffffffffu, sum_squares, offset));
  }
  const float inv_rms = rms_norm_inv_rms(sum_squares, C, eps);
  for (int64_t c = lane; c < C; c += kRmsNormLanes) y_row[c] = rms_norm_apply(x_row[c], weight[c], inv_rms);
}

template <typename T>
cudaError_t launch(const void* x, const void* weight, void* y, int64_t rows, int64_t C, float eps,
                   cudaStream_t stream) {
  const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > INT_MAX) return cudaErrorInvalidValue;  // gridDim.x's limit; 17 billion rows
  rms_norm_forward_kernel<T><<<static_cast<unsigned>(blocks), kThreadsPerBlock, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<T*>(y), rows, C, eps);
  return cudaGetLastError();
}

}  // namespace

cudaError_t rms_norm_forward_cuda(ElementType type, const void* x, const void* weight, void* y, int64_t rows,
                                  int64_t C, float eps, cudaStream_t stream) {
  if (rows < 0 || C < 0) return cudaErrorInvalidValue;
  if (rows == 0 || C == 0) return cudaSuccess;
  switch (type) {
    case ElementType::kF32:
      return launch<float>(x, weight, y, rows, C, eps, stream);
    case ElementType::kBF16:
      return launch<__nv_bfloat16>(x, weight, y, rows, C, eps, stream);
    case ElementType::kF16:
      return launch<__half>(x, weight, y, rows, C, eps, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace freehold::kernels
