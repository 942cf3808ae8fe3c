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
  for (const at::Tensor& t : tensors) start_all_reduce_sum_(t, what);
  wait_started(what);
}

void MpiCommunicator::start_all_reduce_sum_(const at::Tensor& tensor, std::string_view what) {
  World::Mpi* mpi = world_.mpi();
  if (world_.lost()) world_.fail_lost(std::string(what), "not attempted");
  FH_CHECK(tensor.numel() <= INT_MAX, std::string(what), ": a tensor of ", tensor.numel(),
           " elements (split it into buckets)");
  started_.push_back(tensor);
  started_host_.push_back(host_view(tensor));
  requests_.push_back(MPI_REQUEST_NULL);
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, started_host_.back().data_ptr(), static_cast<int>(tensor.numel()),
                           mpi_type(tensor, what), MPI_SUM, mpi->comm, &requests_.back()),
            "MPI_Iallreduce");
}

void MpiCommunicator::progress() {
  if (requests_.empty()) return;
  int done = 0;
  // Errors surface in wait_started, with the deadline and the roll call.
  MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done, MPI_STATUSES_IGNORE);
}

void MpiCommunicator::wait_started(std::string_view what) {
  if (requests_.empty()) return;
  world_.mpi()->wait(world_, requests_, what);
  for (size_t i = 0; i < started_.size(); ++i) {
    if (!started_host_[i].is_same(started_[i])) started_[i].copy_(started_host_[i]);
  }
  started_.clear();
  started_host_.clear();
  requests_.clear();
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
