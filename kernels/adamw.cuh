// The CUDA AdamW kernel's host entry point: raw device pointers and a stream, no torch types, so that adamw.cu
// compiles with nvcc alone. The binding (adamw.cpp) checks the tensors and calls this.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/adamw_math.h"

namespace freehold::kernels {

// Bytes of device scratch adamw_step_cuda needs for `count` tensors: their table (count AdamWTensorPointers) and
// the first chunk of each (count + 1 int64).
size_t adamw_cuda_scratch_bytes(int64_t count);

// One AdamW step over `count` tensors (adamw_math.h, kFused, correctly rounded sqrt): `tensors` is a host array of
// device pointers; it is copied into `scratch` (device memory of adamw_cuda_scratch_bytes(count), 8-byte aligned,
// alive until the stream has run the kernel) and one kernel for every chunk of every tensor is enqueued on
// `stream`. Returns the first failing call's status, which the caller must check. `tensors` may be freed when this
// returns (a copy from pageable memory is staged before it returns).
cudaError_t adamw_step_cuda(const AdamWTensorPointers* tensors, int64_t count, const AdamWConstants& constants,
                            bool apply_decay, void* scratch, size_t scratch_bytes, cudaStream_t stream);

}  // namespace freehold::kernels
