// The CPU cross-entropy row kernel: the lane math of cross_entropy_math.h with the lanes as the inner loop, so
// that g++ vectorizes over 256 independent lanes while adding in the GPU block's order. bf16 rows are read and
// written as Bf16Bits (c10::BFloat16's bits without its NaN branch, which kept the loops scalar).
#include "kernels/cross_entropy_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "core/error.h"
#include "kernels/bf16_bits.h"
#include "kernels/cross_entropy_math.h"

namespace freehold::kernels {
namespace {

constexpr int kLanes = kCrossEntropyLanes;
constexpr int64_t kElementsPerTask = 1 << 16;

// One row; the same additions as cross_entropy_lane_* on the GPU, element j going to lane j % 256. always_inline:
// compiled into each target clone of rows_range below for its instruction set.
template <typename T>
[[gnu::always_inline]] inline float row(T* z, int64_t target, int64_t V, int64_t ignore_index, bool write_grad) {
  if (target == ignore_index) {
    if (write_grad) std::fill(z, z + V, T(0.0f));
    return 0.0f;
  }
  alignas(64) float partial[kLanes];
  std::fill(partial, partial + kLanes, bits_to_float(0xff800000u));
  int64_t base = 0;
  for (; base + kLanes <= V; base += kLanes) {
    for (int l = 0; l < kLanes; ++l) partial[l] = max_f(partial[l], static_cast<float>(z[base + l]));
  }
  for (int l = 0; base + l < V; ++l) partial[l] = max_f(partial[l], static_cast<float>(z[base + l]));
  const float M = cross_entropy_combine_max(partial);

  std::fill(partial, partial + kLanes, 0.0f);
  for (base = 0; base + kLanes <= V; base += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      partial[l] = add_rn(partial[l], exp_nonpositive(add_rn(static_cast<float>(z[base + l]), -M)));
    }
  }
  for (int l = 0; base + l < V; ++l) {
    partial[l] = add_rn(partial[l], exp_nonpositive(add_rn(static_cast<float>(z[base + l]), -M)));
  }
  const float log_s = log_at_least_one(cross_entropy_combine_sum(partial));
  const T z_target = z[target];
  if (write_grad) {
    // Branch-free over the row (vectorizes); the target's element is then redone with its −1.
    for (int64_t j = 0; j < V; ++j) z[j] = cross_entropy_grad(z[j], M, log_s, false);
    z[target] = cross_entropy_grad(z_target, M, log_s, true);
  }
  const float loss = cross_entropy_loss(M, log_s, static_cast<float>(z_target));
  return loss;
}

// Rows [begin, end), compiled three times and picked by the CPU at load time (an ifunc). Every clone does the same
// IEEE operations in the same order (no FMA: -ffp-contract=off), so the bits do not depend on the clone; the wider
// ones run the 256 lanes 8 or 16 at a time (on one Zen 5 core the row kernel was 6% of an fp32 LoRA step at SSE2).
template <typename T>
__attribute__((target_clones("avx512f", "avx2", "default"))) void rows_range(T* logits, const int64_t* targets,
                                                                               float* loss, int64_t V,
                                                                               int64_t ignore_index, bool write_grad,
                                                                               int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) loss[r] = row(logits + r * V, targets[r], V, ignore_index, write_grad);
}

template <typename T>
void rows_of(T* logits, const int64_t* targets, float* loss, int64_t rows, int64_t V, int64_t ignore_index,
             bool write_grad) {
  const int64_t grain = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(V, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    rows_range(logits, targets, loss, V, ignore_index, write_grad, begin, end);
  });
}

}  // namespace

void cross_entropy_rows_cpu(ElementType type, void* logits, const int64_t* targets, float* loss, int64_t rows,
                            int64_t V, int64_t ignore_index, bool write_grad) {
  FH_CHECK(rows >= 0 && V > 0, "rows ", rows, ", V ", V);
  switch (type) {
    case ElementType::kF32:
      return rows_of(static_cast<float*>(logits), targets, loss, rows, V, ignore_index, write_grad);
    case ElementType::kBF16:
      return rows_of(static_cast<Bf16Bits*>(logits), targets, loss, rows, V, ignore_index, write_grad);
    case ElementType::kF16:
      return rows_of(static_cast<c10::Half*>(logits), targets, loss, rows, V, ignore_index, write_grad);
  }
  FH_CHECK(false, "unknown ElementType ", static_cast<int>(type));
}

}  // namespace freehold::kernels
