// The CPU AdamW kernel: adamw_math.h's update over chunks of every tensor, in parallel, with the square root
// supplied per chunk (adamw_cpu.h).
#include "kernels/adamw_cpu.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace freehold::kernels {
namespace {

// Chunks per parallel task: 16 × 2048 elements, about ATen's own grain (32768) for element-wise ops.
constexpr int64_t kChunksPerTask = 16;

// One chunk [begin, end) of one tensor: moments (and decay) in one sweep, the roots, then p in a second sweep.
// Both inlined into update_chunks_fused, so that its target (below) applies to their arithmetic too.
template <AdamWContraction K, bool kDecay>
__attribute__((always_inline)) inline void update_chunk(const AdamWTensorPointers& t, int64_t begin, int64_t end,
                                                        const AdamWConstants& c, AdamWSqrtFn sqrt_fn) {
  float* __restrict p = t.param + begin;
  const float* __restrict g = t.grad + begin;
  float* __restrict m = t.exp_avg + begin;
  float* __restrict v = t.exp_avg_sq + begin;
  const int64_t n = end - begin;
  const AdamWTensorScalars s = t.scalars;
  float roots[kAdamWCpuChunk];
  for (int64_t i = 0; i < n; ++i) {
    if (kDecay) p[i] = mul_rn(p[i], s.decay);
    float mi = m[i], vi = v[i];
    adamw_moments<K>(g[i], mi, vi, c);
    m[i] = mi;
    v[i] = vi;
  }
  sqrt_fn(v, roots, n);
  for (int64_t i = 0; i < n; ++i) p[i] = adamw_apply(p[i], m[i], roots[i], c, s.neg_step_size);
}

// The loop over a task's chunks: `chunk_start[i]` is tensor i's first global chunk (count + 1 entries).
template <AdamWContraction K, bool kDecay>
__attribute__((always_inline)) inline void update_chunks(const AdamWTensorPointers* tensors,
                                                         const std::vector<int64_t>& chunk_start, int64_t first,
                                                         int64_t last, const AdamWConstants& c, AdamWSqrtFn sqrt_fn) {
  // The tensor holding chunk `first`: the last i with chunk_start[i] <= first (empty tensors own no chunk).
  int64_t i = std::upper_bound(chunk_start.begin(), chunk_start.end(), first) - chunk_start.begin() - 1;
  for (int64_t chunk = first; chunk < last; ++chunk) {
    while (chunk >= chunk_start[i + 1]) ++i;
    const int64_t begin = (chunk - chunk_start[i]) * kAdamWCpuChunk;
    update_chunk<K, kDecay>(tensors[i], begin, std::min(tensors[i].numel, begin + kAdamWCpuChunk), c, sqrt_fn);
  }
}

// The fused-multiply-add variant runs only where ATen's own kernels used FMAs (AVX2 or AVX512, which imply the
// FMA unit), so on x86-64 it is compiled for that unit: std::fma becomes one instruction and the loops vectorize,
// where the baseline x86-64 target would call libm's fmaf per element.
#if defined(__x86_64__)
#define FREEHOLD_ADAMW_FMA_TARGET __attribute__((target("avx2,fma")))
#else
#define FREEHOLD_ADAMW_FMA_TARGET
#endif

template <bool kDecay>
FREEHOLD_ADAMW_FMA_TARGET void update_chunks_fused(const AdamWTensorPointers* tensors,
                                                   const std::vector<int64_t>& chunk_start, int64_t first,
                                                   int64_t last, const AdamWConstants& c, AdamWSqrtFn sqrt_fn) {
  update_chunks<AdamWContraction::kFused, kDecay>(tensors, chunk_start, first, last, c, sqrt_fn);
}

// vmsSqrt(n, a, r, mode) of MKL's LP64 interface (MKL_INT n = int, MKL_INT64 mode), as ATen calls it.
using VmsSqrt = void (*)(int n, const float* a, float* r, long long mode);
constexpr long long kVmlHa = 0x2, kVmlFtzdazOff = 0x140000, kVmlErrmodeIgnore = 0x100;  // mkl_vml_defines.h
VmsSqrt g_vms_sqrt = nullptr;

void mkl_sqrt(const float* in, float* out, int64_t n) {
  g_vms_sqrt(static_cast<int>(n), in, out, kVmlHa | kVmlFtzdazOff | kVmlErrmodeIgnore);
}

}  // namespace

void adamw_sqrt_correctly_rounded(const float* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = std::sqrt(in[i]);
}

AdamWSqrtFn adamw_mkl_sqrt() {
  static const AdamWSqrtFn fn = []() -> AdamWSqrtFn {
    g_vms_sqrt = reinterpret_cast<VmsSqrt>(dlsym(RTLD_DEFAULT, "vmsSqrt"));
    return g_vms_sqrt != nullptr ? &mkl_sqrt : nullptr;
  }();
  return fn;
}

void adamw_step_cpu_kernel(const AdamWTensorPointers* tensors, int64_t count, const AdamWConstants& constants,
                           bool apply_decay, AdamWContraction contraction, AdamWSqrtFn sqrt_fn) {
  FH_CHECK(count >= 0 && (count == 0 || tensors != nullptr) && sqrt_fn != nullptr, "count ", count);
  std::vector<int64_t> chunk_start(static_cast<size_t>(count) + 1, 0);
  for (int64_t i = 0; i < count; ++i) {
    FH_CHECK(tensors[i].numel >= 0, "tensor ", i, " numel ", tensors[i].numel);
    chunk_start[i + 1] = chunk_start[i] + (tensors[i].numel + kAdamWCpuChunk - 1) / kAdamWCpuChunk;
  }
  const int64_t chunks = chunk_start[count];
  if (chunks == 0) return;
  at::parallel_for(0, chunks, kChunksPerTask, [&](int64_t first, int64_t last) {
    if (contraction == AdamWContraction::kFused) {
      if (apply_decay) return update_chunks_fused<true>(tensors, chunk_start, first, last, constants, sqrt_fn);
      return update_chunks_fused<false>(tensors, chunk_start, first, last, constants, sqrt_fn);
    }
    if (apply_decay) {
      return update_chunks<AdamWContraction::kSeparate, true>(tensors, chunk_start, first, last, constants, sqrt_fn);
    }
    update_chunks<AdamWContraction::kSeparate, false>(tensors, chunk_start, first, last, constants, sqrt_fn);
  });
}

}  // namespace freehold::kernels
