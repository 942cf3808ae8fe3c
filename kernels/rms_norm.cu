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

// dx (rows, C) and inv_rms (rows): the forward's layout, with the dot product as a second butterfly.
template <typename T>
__global__ void __launch_bounds__(kThreadsPerBlock)
    rms_norm_backward_dx_kernel(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ dy,
                                T* __restrict__ dx, float* __restrict__ inv_rms_out, int64_t rows, int64_t C,
                                float eps) {
  const int lane = static_cast<int>(threadIdx.x) % kRmsNormLanes;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kRmsNormLanes;
  if (row >= rows) return;
  const T* x_row = x + row * C;
  const T* dy_row = dy + row * C;
  float sum_squares = rms_norm_lane_sum_squares(x_row, C, lane);
  for (int offset = kRmsNormLanes / 2; offset > 0; offset /= 2) {
    sum_squares = add_rn(sum_squares, __shfl_xor_sync(0xffffffffu, sum_squares, offset));
  }
  const float inv_rms = rms_norm_inv_rms(sum_squares, C, eps);
  float dot = rms_norm_lane_dot(x_row, dy_row, weight, C, lane);
  for (int offset = kRmsNormLanes / 2; offset > 0; offset /= 2) {
    dot = add_rn(dot, __shfl_xor_sync(0xffffffffu, dot, offset));
  }
  const float coefficient = rms_norm_dx_coefficient(dot, inv_rms, C);
  for (int64_t c = lane; c < C; c += kRmsNormLanes) {
    dx[row * C + c] = rms_norm_dx(x_row[c], dy_row[c], weight[c], inv_rms, coefficient);
  }
  if (lane == 0) inv_rms_out[row] = inv_rms;
}

// partial (blocks, C): thread per column, the block's rows in order. Grid (column tiles, row blocks).
template <typename T>
__global__ void rms_norm_backward_dw_partial_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                                    const float* __restrict__ inv_rms, float* __restrict__ partial,
                                                    int64_t rows, int64_t C) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t b = blockIdx.y;
  if (c >= C) return;
  float sum = 0.0f;
  const int64_t end = min(rows, (b + 1) * kRmsNormRowsPerBlock);
  for (int64_t r = b * kRmsNormRowsPerBlock; r < end; ++r) {
    sum = add_rn(sum, rms_norm_dw_term(x[r * C + c], dy[r * C + c], inv_rms[r]));
  }
  partial[b * C + c] = sum;
}

__global__ void rms_norm_backward_dw_kernel(const float* __restrict__ partial, float* __restrict__ dw, int64_t blocks,
                                            int64_t C) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float sum = 0.0f;
  for (int64_t b = 0; b < blocks; ++b) sum = add_rn(sum, partial[b * C + c]);
  dw[c] = sum;
}

template <typename T>
cudaError_t launch_backward(const void* x, const void* weight, const void* dy, void* dx, float* inv_rms,
                            float* partial, float* dw, int64_t rows, int64_t C, float eps, cudaStream_t stream) {
  const int64_t row_groups = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const int64_t blocks = (rows + kRmsNormRowsPerBlock - 1) / kRmsNormRowsPerBlock;
  constexpr int kColumnThreads = 256;
  const int64_t column_tiles = (C + kColumnThreads - 1) / kColumnThreads;
  if (row_groups > INT_MAX || blocks > 65535 || column_tiles > INT_MAX) return cudaErrorInvalidValue;
  rms_norm_backward_dx_kernel<T><<<static_cast<unsigned>(row_groups), kThreadsPerBlock, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(dy), static_cast<T*>(dx),
      inv_rms, rows, C, eps);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  const dim3 grid(static_cast<unsigned>(column_tiles), static_cast<unsigned>(blocks));
  rms_norm_backward_dw_partial_kernel<T><<<grid, kColumnThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(dy), inv_rms, partial, rows, C);
  status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  rms_norm_backward_dw_kernel<<<static_cast<unsigned>(column_tiles), kColumnThreads, 0, stream>>>(partial, dw, blocks,
                                                                                                 C);
  return cudaGetLastError();
}

}  // namespace

cudaError_t rms_norm_backward_cuda(ElementType type, const void* x, const void* weight, const void* dy, void* dx,
                                   float* inv_rms, float* partial, float* dw, int64_t rows, int64_t C, float eps,
                                   cudaStream_t stream) {
  if (rows < 0 || C < 0) return cudaErrorInvalidValue;
  if (C == 0) return cudaSuccess;
  if (rows == 0) return cudaMemsetAsync(dw, 0, static_cast<size_t>(C) * sizeof(float), stream);
  switch (type) {
    case ElementType::kF32:
      return launch_backward<float>(x, weight, dy, dx, inv_rms, partial, dw, rows, C, eps, stream);
    case ElementType::kBF16:
      return launch_backward<__nv_bfloat16>(x, weight, dy, dx, inv_rms, partial, dw, rows, C, eps, stream);
    case ElementType::kF16:
      return launch_backward<__half>(x, weight, dy, dx, inv_rms, partial, dw, rows, C, eps, stream);
  }
  return cudaErrorInvalidValue;
}

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
