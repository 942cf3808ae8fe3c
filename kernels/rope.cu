// The CUDA RoPE kernel: one thread per (row, pair), the pair math of rope_math.h. Raw pointers and a stream only; no
// torch header, so nvcc compiles this file alone.
#include "kernels/rope.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

namespace freehold::kernels {
namespace {

constexpr int kThreadsPerBlock = 256;
// A grid-stride loop covers any size; more blocks than this only queue behind the resident ones.
constexpr int64_t kMaxBlocks = 1 << 16;

// Thread (row, i) rotates elements i and i + D/2 of one row. Consecutive threads take consecutive i of a row, so a
// warp reads two contiguous runs of x (the halves) and of cos/sin. No element is touched by two threads, so
// y == x is safe.
template <RopeDirection kDirection, typename T>
__global__ void __launch_bounds__(kThreadsPerBlock)
    rope_kernel(const T* x, T* y, const T* __restrict__ cos, const T* __restrict__ sin, RopeLayout l) {
  const int64_t half = l.D / 2;
  const int64_t pairs = l.rows() * half;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < pairs; p += step) {
    const int64_t row = p / half, i = p % half;
    const RopeRowOffsets o = rope_row_offsets(l, row);
    const T* xr = x + o.x;
    const T* cr = cos + o.cs;
    const T* sr = sin + o.cs;
    const T x1 = xr[i], x2 = xr[i + half], s1 = sr[i], s2 = sr[i + half];
    y[o.y + i] = rope_first<kDirection>(x1, x2, cr[i], s1, s2);
    y[o.y + i + half] = rope_second<kDirection>(x1, x2, cr[i + half], s1, s2);
  }
}

template <typename T>
cudaError_t launch(RopeDirection direction, const void* x, void* y, const void* cos, const void* sin,
                   const RopeLayout& l, cudaStream_t stream) {
  const int64_t pairs = l.rows() * (l.D / 2);
  const int64_t blocks = std::min<int64_t>((pairs + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks);
  const T* xt = static_cast<const T*>(x);
  const T* ct = static_cast<const T*>(cos);
  const T* st = static_cast<const T*>(sin);
  T* yt = static_cast<T*>(y);
  if (direction == RopeDirection::kForward) {
    rope_kernel<RopeDirection::kForward, T>
        <<<static_cast<unsigned>(blocks), kThreadsPerBlock, 0, stream>>>(xt, yt, ct, st, l);
  } else {
    rope_kernel<RopeDirection::kTransposed, T>
        <<<static_cast<unsigned>(blocks), kThreadsPerBlock, 0, stream>>>(xt, yt, ct, st, l);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t rope_rotate_cuda(ElementType type, RopeDirection direction, const void* x, void* y, const void* cos,
                             const void* sin, const RopeLayout& layout, cudaStream_t stream) {
  if (layout.B < 0 || layout.H < 0 || layout.T < 0 || layout.D < 0 || layout.D % 2 != 0) return cudaErrorInvalidValue;
  if (layout.rows() == 0 || layout.D == 0) return cudaSuccess;
  switch (type) {
    case ElementType::kF32:
      return launch<float>(direction, x, y, cos, sin, layout, stream);
    case ElementType::kBF16:
      return launch<__nv_bfloat16>(direction, x, y, cos, sin, layout, stream);
    case ElementType::kF16:
      return launch<__half>(direction, x, y, cos, sin, layout, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace freehold::kernels
