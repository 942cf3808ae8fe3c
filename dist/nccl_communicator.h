// The NCCL backend for CUDA tensors (built only with FREEHOLD_CUDA=ON): one communicator per process on GPU
// local_rank, its unique id broadcast from rank 0 over the World's MPI control plane; reductions run on a dedicated
// stream that waits for the compute stream; completion is polled together with ncclCommGetAsyncError against
// the World's deadline, and a timeout or an asynchronous error aborts the communicator (ncclCommAbort) so that
// the process can exit with code 4 instead of hanging in a kernel that will never finish.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

#include "dist/communicator.h"

namespace freehold::dist {

class World;

std::unique_ptr<Communicator> make_nccl_communicator(World& world, const at::Device& device);

}  // namespace freehold::dist
