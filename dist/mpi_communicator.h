// The MPI backend for tensors: CPU tensors directly; tensors on another device (dist.backend: mpi on GPUs) are
// staged through host memory. Non-blocking collectives waited for with the World's deadline.
#pragma once

#include <mpi.h>

#include <vector>

#include "dist/communicator.h"

namespace freehold::dist {

class World;

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(World& world) : world_(world) {}
  std::string_view backend() const override { return "mpi"; }
  void all_reduce_sum_(const std::vector<at::Tensor>& tensors, std::string_view what) override;
  void start_all_reduce_sum_(const at::Tensor& tensor, std::string_view what) override;
  void wait_started(std::string_view what) override;
  void progress() override;
  void broadcast_(const at::Tensor& tensor, int root, std::string_view what) override;

 private:
  World& world_;
  // The reductions started and not yet waited for: each tensor, the host tensor MPI reduces, its request.
  std::vector<at::Tensor> started_, started_host_;
  std::vector<MPI_Request> requests_;
};

}  // namespace freehold::dist
