// The CUDA AdamW kernel: multi-tensor apply. One launch covers every tensor of the step: block b owns one chunk of
// one tensor, found by a binary search of the chunk table, and each thread updates the chunk's elements with
// adamw_update (adamw_math.h). Raw pointers and a stream only; no torch header, so nvcc compiles this file alone.
#include "kernels/adamw.cuh"

#include <climits>
#include <cstring>
#include <vector>

#include "kernels/adamw_math.h"

namespace freehold::kernels {
namespace {

constexpr int kThreads = 256;
// Elements per block: 16 per thread, so a block's fixed cost (the search, the table reads) is amortized over 4096
// elements while a 4.9M-element adapter set still gives about 1200 blocks, several per SM.
constexpr int64_t kChunk = 4096;

// tensors (count), chunk_start (count + 1): tensor i owns global chunks [chunk_start[i], chunk_start[i + 1]).
template <bool kDecay>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(const AdamWTensorPointers* __restrict__ tensors, const int64_t* __restrict__ chunk_start,
                 int64_t count, AdamWConstants constants) {
  const int64_t chunk = blockIdx.x;
  // The last i with chunk_start[i] <= chunk; empty tensors own no chunk, so the search skips them.
  int64_t lo = 0, hi = count;  // chunk_start[lo] <= chunk < chunk_start[hi]
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (chunk_start[mid] <= chunk) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const AdamWTensorPointers t = tensors[lo];
  const int64_t begin = (chunk - chunk_start[lo]) * kChunk;
  const int64_t end = min(t.numel, begin + kChunk);
  for (int64_t e = begin + threadIdx.x; e < end; e += kThreads) {
    float p = t.param[e], m = t.exp_avg[e], v = t.exp_avg_sq[e];
    adamw_update<AdamWContraction::kFused, kDecay>(p, t.grad[e], m, v, constants, t.scalars);
    t.param[e] = p;
    t.exp_avg[e] = m;
    t.exp_avg_sq[e] = v;
  }
}

size_t table_bytes(int64_t count) { return static_cast<size_t>(count) * sizeof(AdamWTensorPointers); }

}  // namespace

size_t adamw_cuda_scratch_bytes(int64_t count) {
  return table_bytes(count) + static_cast<size_t>(count + 1) * sizeof(int64_t);
}

cudaError_t adamw_step_cuda(const AdamWTensorPointers* tensors, int64_t count, const AdamWConstants& constants,
                            bool apply_decay, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  if (count < 0 || (count > 0 && tensors == nullptr)) return cudaErrorInvalidValue;
  if (count == 0) return cudaSuccess;
  if (scratch == nullptr || scratch_bytes < adamw_cuda_scratch_bytes(count)) return cudaErrorInvalidValue;
  static_assert(sizeof(AdamWTensorPointers) % alignof(int64_t) == 0, "the chunk table follows the tensor table");
  // One host buffer for both tables, so that one copy moves them.
  std::vector<unsigned char> host(adamw_cuda_scratch_bytes(count));
  std::memcpy(host.data(), tensors, table_bytes(count));
  int64_t* chunk_start = reinterpret_cast<int64_t*>(host.data() + table_bytes(count));
  chunk_start[0] = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (tensors[i].numel < 0) return cudaErrorInvalidValue;
    chunk_start[i + 1] = chunk_start[i] + (tensors[i].numel + kChunk - 1) / kChunk;
  }
  const int64_t chunks = chunk_start[count];
  if (chunks == 0) return cudaSuccess;
  if (chunks > INT_MAX) return cudaErrorInvalidValue;  // gridDim.x's limit: 8.8e12 elements
  cudaError_t status = cudaMemcpyAsync(scratch, host.data(), host.size(), cudaMemcpyHostToDevice, stream);
  if (status != cudaSuccess) return status;
  const auto* device_tensors = static_cast<const AdamWTensorPointers*>(scratch);
  const auto* device_chunk_start =
      reinterpret_cast<const int64_t*>(static_cast<const unsigned char*>(scratch) + table_bytes(count));
  if (apply_decay) {
    adamw_kernel<true><<<static_cast<unsigned>(chunks), kThreads, 0, stream>>>(device_tensors, device_chunk_start,
                                                                               count, constants);
  } else {
    adamw_kernel<false><<<static_cast<unsigned>(chunks), kThreads, 0, stream>>>(device_tensors, device_chunk_start,
                                                                                count, constants);
  }
  return cudaGetLastError();
}

}  // namespace freehold::kernels
