// The CUDA SwiGLU kernels: one thread per element (grid-strided), the element math of swiglu_math.h. Raw pointers
// and a stream only; no torch header, so nvcc compiles this file alone.
#include "kernels/swiglu.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace freehold::kernels {
namespace {

constexpr int kThreadsPerBlock = 256;
// Grid limits: columns in x (up to kMaxColumnBlocks blocks, then each thread strides), rows in y (gridDim.y's limit
// of 65535, then each block strides). No integer division per element; a contiguous input comes as one row.
constexpr int64_t kMaxColumnBlocks = 1 << 16;
constexpr int64_t kMaxRowBlocks = 65535;

// Scalar loads: the element math (an exp polynomial, a division) and the rows' own strides (a narrowed gate/up
// has row stride 2I) make vectorized 16-byte loads a change to measure on a GPU first (STYLE.md habit 10).
template <typename T>
__global__ void __launch_bounds__(kThreadsPerBlock)
    swiglu_forward_kernel(const T* __restrict__ g, const T* __restrict__ u, T* __restrict__ y, SwigluLayout l) {
  const int64_t column_step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.y; r < l.rows; r += gridDim.y) {
    const T* g_row = g + r * l.g_row_stride;
    const T* u_row = u + r * l.u_row_stride;
    T* y_row = y + r * l.I;
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < l.I; c += column_step) {
      y_row[c] = swiglu_forward_element(g_row[c], u_row[c]);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreadsPerBlock)
    swiglu_backward_kernel(const T* __restrict__ g, const T* __restrict__ u, const T* __restrict__ dy,
                           T* __restrict__ dg, T* __restrict__ du, SwigluLayout l) {
  const int64_t column_step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.y; r < l.rows; r += gridDim.y) {
    const T* g_row = g + r * l.g_row_stride;
    const T* u_row = u + r * l.u_row_stride;
    const T* dy_row = dy + r * l.dy_row_stride;
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < l.I; c += column_step) {
      const T gc = g_row[c];
      const float e = swiglu_exp_neg_abs(static_cast<float>(gc));
      dg[r * l.I + c] = swiglu_dg_element(gc, u_row[c], dy_row[c], e);
      du[r * l.I + c] = swiglu_du_element(gc, dy_row[c], e);
    }
  }
}

dim3 grid_for(const SwigluLayout& l) {
  const int64_t column_blocks = (l.I + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return dim3(static_cast<unsigned>(column_blocks < kMaxColumnBlocks ? column_blocks : kMaxColumnBlocks),
              static_cast<unsigned>(l.rows < kMaxRowBlocks ? l.rows : kMaxRowBlocks));
}

bool valid(const SwigluLayout& l) {
  return l.rows >= 0 && l.I >= 0 && l.g_row_stride >= 0 && l.u_row_stride >= 0 && l.dy_row_stride >= 0;
}

template <typename T>
cudaError_t launch_forward(const void* g, const void* u, void* y, const SwigluLayout& l, cudaStream_t stream) {
  swiglu_forward_kernel<T><<<grid_for(l), kThreadsPerBlock, 0, stream>>>(
      static_cast<const T*>(g), static_cast<const T*>(u), static_cast<T*>(y), l);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_backward(const void* g, const void* u, const void* dy, void* dg, void* du, const SwigluLayout& l,
                            cudaStream_t stream) {
  swiglu_backward_kernel<T><<<grid_for(l), kThreadsPerBlock, 0, stream>>>(
      static_cast<const T*>(g), static_cast<const T*>(u), static_cast<const T*>(dy), static_cast<T*>(dg),
      static_cast<T*>(du), l);
  return cudaGetLastError();
}

}  // namespace

cudaError_t swiglu_forward_cuda(ElementType type, const void* g, const void* u, void* y, const SwigluLayout& layout,
                                cudaStream_t stream) {
  if (!valid(layout)) return cudaErrorInvalidValue;
  if (layout.rows == 0 || layout.I == 0) return cudaSuccess;
  switch (type) {
    case ElementType::kF32:
      return launch_forward<float>(g, u, y, layout, stream);
    case ElementType::kBF16:
      return launch_forward<__nv_bfloat16>(g, u, y, layout, stream);
    case ElementType::kF16:
      return launch_forward<__half>(g, u, y, layout, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t swiglu_backward_cuda(ElementType type, const void* g, const void* u, const void* dy, void* dg, void* du,
                                 const SwigluLayout& layout, cudaStream_t stream) {
  if (!valid(layout)) return cudaErrorInvalidValue;
  if (layout.rows == 0 || layout.I == 0) return cudaSuccess;
  switch (type) {
    case ElementType::kF32:
      return launch_backward<float>(g, u, dy, dg, du, layout, stream);
    case ElementType::kBF16:
      return launch_backward<__nv_bfloat16>(g, u, dy, dg, du, layout, stream);
    case ElementType::kF16:
      return launch_backward<__half>(g, u, dy, dg, du, layout, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace freehold::kernels
