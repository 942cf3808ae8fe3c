// MpiCommunicator; see mpi_communicator.h.
#include "dist/mpi_communicator.h"

#include <ATen/ops/empty_like.h>

#include <climits>

#include "absl/strings/str_cat.h"
#include "dist/mpi_state.h"
#include "dist/world.h"

namespace freehold::dist {
namespace {

MPI_Datatype mpi_type(const at::Tensor& t, std::string_view what) {
  switch (t.scalar_type()) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kByte: return MPI_UINT8_T;
    default:
      throw core::InternalError(absl::StrCat(std::string(what), ": MPI reduces float32, float64, int64, int32 and "
                                             "uint8 tensors, not ", c10::toString(t.scalar_type())));
  }
}

// The host tensor MPI works on: the tensor itself when it is a contiguous CPU tensor, else a host copy.
at::Tensor host_view(const at::Tensor& t) {
  if (t.device().is_cpu() && t.is_contiguous()) return t;
  return t.to(at::kCPU).contiguous();
}

}  // namespace

void MpiCommunicator::all_reduce_sum_(const std::vector<at::Tensor>& tensors, std::string_view what) {
  World::Mpi* mpi = world_.mpi();
  if (world_.lost()) world_.fail_lost(std::string(what), "not attempted");
  std::vector<at::Tensor> host;
  std::vector<MPI_Request> requests;
  for (const at::Tensor& t : tensors) {
    FH_CHECK(t.numel() <= INT_MAX, std::string(what), ": a tensor of ", t.numel(), " elements (split it into buckets)");
    host.push_back(host_view(t));
    requests.push_back(MPI_REQUEST_NULL);
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, host.back().data_ptr(), static_cast<int>(t.numel()), mpi_type(t, what),
                             MPI_SUM, mpi->comm, &requests.back()),
              "MPI_Iallreduce");
  }
  mpi->wait(world_, requests, what);
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!host[i].is_same(tensors[i])) tensors[i].copy_(host[i]);
  }
}

void MpiCommunicator::broadcast_(const at::Tensor& tensor, int root, std::string_view what) {
  World::Mpi* mpi = world_.mpi();
  if (world_.lost()) world_.fail_lost(std::string(what), "not attempted");
  FH_CHECK(tensor.numel() <= INT_MAX, std::string(what), ": a tensor of ", tensor.numel(), " elements");
  at::Tensor host = host_view(tensor);
  std::vector<MPI_Request> requests(1, MPI_REQUEST_NULL);
  check_mpi(MPI_Ibcast(host.data_ptr(), static_cast<int>(host.numel()), mpi_type(host, what), root, mpi->comm,
                       &requests[0]),
            "MPI_Ibcast");
  mpi->wait(world_, requests, what);
  if (!host.is_same(tensor)) tensor.copy_(host);
}

}  // namespace freehold::dist
