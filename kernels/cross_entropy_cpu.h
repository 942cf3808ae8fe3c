// The CPU cross-entropy row kernel's entry point: raw pointers, like the CUDA one (cross_entropy.cuh). The binding
// (linear_cross_entropy.cpp) computes a chunk of logits, checks the targets and calls this.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace freehold::kernels {

// For each row r of logits (rows, V) of `type`, contiguous: loss[r] = lse(row) − row[targets[r]] in fp32 (0 when
// targets[r] == ignore_index), and, when write_grad, the row is overwritten with d loss[r] / d row (all zeros for an
// ignored row); see cross_entropy_math.h. Every target is ignore_index or in [0, V) (the binding checks).
// Rows run in parallel on ATen's intra-op pool; each row gives the same bits as the CUDA kernel.
void cross_entropy_rows_cpu(ElementType type, void* logits, const int64_t* targets, float* loss, int64_t rows,
                            int64_t V, int64_t ignore_index, bool write_grad);

}  // namespace freehold::kernels
