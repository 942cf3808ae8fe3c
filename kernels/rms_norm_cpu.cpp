// The CPU RMSNorm forward kernel: rms_norm_row (rms_norm_math.h) over rows, in parallel.
#include "kernels/rms_norm_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "core/error.h"
#include "kernels/bf16_bits.h"
#include "kernels/rms_norm_math.h"

namespace freehold::kernels {
namespace {

// Rows per task are chosen so that a task touches at least this many elements; smaller tasks cost more in the
// pool than they save.
constexpr int64_t kElementsPerTask = 1 << 15;

// Rows [begin, end) of the forward and of the backward's dx, each compiled three times and picked by the CPU at load
// time (an ifunc); every clone does the same IEEE operations in the same order (no FMA: -ffp-contract=off), so the
// bits do not depend on the clone. bf16 is read and written as Bf16Bits (c10::BFloat16's bits without the NaN branch
// that keeps its loops scalar).
template <typename T>
__attribute__((target_clones("avx512f", "avx2", "default"))) void forward_range(const T* x, const T* weight, T* y,
                                                                                  int64_t C, float eps,
                                                                                  int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) rms_norm_row(x + row * C, weight, y + row * C, C, eps);
}

template <typename T>
__attribute__((target_clones("avx512f", "avx2", "default"))) void backward_range(const T* x, const T* weight,
                                                                                   const T* dy, T* dx, float* inv_rms,
                                                                                   int64_t C, float eps,
                                                                                   int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    inv_rms[r] = rms_norm_backward_row(x + r * C, weight, dy + r * C, dx + r * C, C, eps);
  }
}

template <typename T>
void forward_rows(const T* x, const T* weight, T* y, int64_t rows, int64_t C, float eps) {
  const int64_t grain = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(C, 1));
  at::parallel_for(0, rows, grain,
                   [&](int64_t begin, int64_t end) { forward_range(x, weight, y, C, eps, begin, end); });
}

template <typename T>
void backward_rows(const T* x, const T* weight, const T* dy, T* dx, float* inv_rms, float* partial, float* dw,
                   int64_t rows, int64_t C, float eps) {
  const int64_t grain = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(C, 1));
  at::parallel_for(0, rows, grain,
                   [&](int64_t begin, int64_t end) { backward_range(x, weight, dy, dx, inv_rms, C, eps, begin, end); });
  // dw: each block of rows summed in row order, then the blocks in block order (as the GPU's two kernels do).
  const int64_t blocks = (rows + kRmsNormRowsPerBlock - 1) / kRmsNormRowsPerBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* p = partial + b * C;
      std::fill(p, p + C, 0.0f);
      for (int64_t r = b * kRmsNormRowsPerBlock; r < std::min(rows, (b + 1) * kRmsNormRowsPerBlock); ++r) {
        for (int64_t c = 0; c < C; ++c) p[c] = add_rn(p[c], rms_norm_dw_term(x[r * C + c], dy[r * C + c], inv_rms[r]));
      }
    }
  });
  std::fill(dw, dw + C, 0.0f);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t c = 0; c < C; ++c) dw[c] = add_rn(dw[c], partial[b * C + c]);
  }
}

}  // namespace

void rms_norm_backward_cpu(ElementType type, const void* x, const void* weight, const void* dy, void* dx,
                           float* inv_rms, float* partial, float* dw, int64_t rows, int64_t C, float eps) {
  FH_CHECK(rows >= 0 && C >= 0, "rows ", rows, ", C ", C);
  if (C == 0) return;
  if (rows == 0) {
    std::fill(dw, dw + C, 0.0f);
    return;
  }
  switch (type) {
    case ElementType::kF32:
      return backward_rows(static_cast<const float*>(x), static_cast<const float*>(weight),
                           static_cast<const float*>(dy), static_cast<float*>(dx), inv_rms, partial, dw, rows, C, eps);
    case ElementType::kBF16:
      return backward_rows(static_cast<const Bf16Bits*>(x), static_cast<const Bf16Bits*>(weight),
                           static_cast<const Bf16Bits*>(dy), static_cast<Bf16Bits*>(dx), inv_rms, partial,
                           dw, rows, C, eps);
    case ElementType::kF16:
      return backward_rows(static_cast<const c10::Half*>(x), static_cast<const c10::Half*>(weight),
                           static_cast<const c10::Half*>(dy), static_cast<c10::Half*>(dx), inv_rms, partial, dw,
                           rows, C, eps);
  }
  FH_CHECK(false, "unknown ElementType ", static_cast<int>(type));
}

void rms_norm_forward_cpu(ElementType type, const void* x, const void* weight, void* y, int64_t rows, int64_t C,
                          float eps) {
  FH_CHECK(rows >= 0 && C >= 0, "rows ", rows, ", C ", C);
  if (rows == 0 || C == 0) return;
  switch (type) {
    case ElementType::kF32:
      return forward_rows(static_cast<const float*>(x), static_cast<const float*>(weight), static_cast<float*>(y),
                          rows, C, eps);
    case ElementType::kBF16:
      return forward_rows(static_cast<const Bf16Bits*>(x), static_cast<const Bf16Bits*>(weight),
                          static_cast<Bf16Bits*>(y), rows, C, eps);
    case ElementType::kF16:
      return forward_rows(static_cast<const c10::Half*>(x), static_cast<const c10::Half*>(weight),
                          static_cast<c10::Half*>(y), rows, C, eps);
  }
  FH_CHECK(false, "unknown ElementType ", static_cast<int>(type));
}

}  // namespace freehold::kernels
