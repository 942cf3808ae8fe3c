// The CUDA cross-entropy row kernel: one block of 256 threads per row, the lane math of cross_entropy_math.h, the
// lanes combined by the same tree as on the CPU (through shared memory). Raw pointers and a stream only.
#include "kernels/cross_entropy.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>

#include "kernels/cross_entropy_math.h"

namespace freehold::kernels {
namespace {

constexpr int kThreads = kCrossEntropyLanes;

// Every thread calls it; returns the tree's result to all of them. `combine` is max_f or add_rn.
template <bool kMax>
__device__ float block_combine(float value, float* shared) {
  const int lane = static_cast<int>(threadIdx.x);
  shared[lane] = value;
  __syncthreads();
  for (int offset = kThreads / 2; offset > 0; offset /= 2) {
    if (lane < offset) {
      shared[lane] = kMax ? max_f(shared[lane], shared[lane + offset]) : add_rn(shared[lane], shared[lane + offset]);
    }
    __syncthreads();
  }
  const float result = shared[0];
  __syncthreads();  // shared[] is reused by the next call
  return result;
}

// logits (rows, V), targets (rows) -> loss (rows); the row is overwritten with its gradient when write_grad.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_rows_kernel(T* __restrict__ logits, const int64_t* __restrict__ targets, float* __restrict__ loss,
                              int64_t V, int64_t ignore_index, bool write_grad) {
  __shared__ float shared[kThreads];
  const int lane = static_cast<int>(threadIdx.x);
  const int64_t row = blockIdx.x;
  T* z = logits + row * V;
  const int64_t target = targets[row];
  if (target == ignore_index) {  // the whole block leaves together: no __syncthreads is skipped by some threads
    if (write_grad) {
      for (int64_t j = lane; j < V; j += kThreads) z[j] = T(0.0f);
    }
    if (lane == 0) loss[row] = 0.0f;
    return;
  }
  const float M = block_combine<true>(cross_entropy_lane_max(z, V, lane), shared);
  const float S = block_combine<false>(cross_entropy_lane_sum_exp(z, V, M, lane), shared);
  const float log_s = log_at_least_one(S);
  const T z_target = z[target];
  __syncthreads();  // every thread has read z[target] before it is overwritten
  if (lane == 0) loss[row] = cross_entropy_loss(M, log_s, static_cast<float>(z_target));
  if (write_grad) {
    for (int64_t j = lane; j < V; j += kThreads) z[j] = cross_entropy_grad(z[j], M, log_s, j == target);
  }
}

template <typename T>
cudaError_t launch(void* logits, const int64_t* targets, float* loss, int64_t rows, int64_t V, int64_t ignore_index,
                   bool write_grad, cudaStream_t stream) {
  if (rows > INT_MAX) return cudaErrorInvalidValue;  // gridDim.x's limit
  cross_entropy_rows_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      static_cast<T*>(logits), targets, loss, V, ignore_index, write_grad);
  return cudaGetLastError();
}

}  // namespace

cudaError_t cross_entropy_rows_cuda(ElementType type, void* logits, const int64_t* targets, float* loss, int64_t rows,
                                    int64_t V, int64_t ignore_index, bool write_grad, cudaStream_t stream) {
  if (rows < 0 || V <= 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  switch (type) {
    case ElementType::kF32:
      return launch<float>(logits, targets, loss, rows, V, ignore_index, write_grad, stream);
    case ElementType::kBF16:
      return launch<__nv_bfloat16>(logits, targets, loss, rows, V, ignore_index, write_grad, stream);
    case ElementType::kF16:
      return launch<__half>(logits, targets, loss, rows, V, ignore_index, write_grad, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace freehold::kernels
