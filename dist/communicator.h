// Communicator: collectives over tensors of one device kind, one implementation per backend (MPI for CPU tensors,
// NCCL for CUDA tensors, identity for world size 1). The trainer reduces its gradient buckets through this; the
// small decisions go through the World's control plane instead. Each call has the World's deadline.
#pragma once

#include <ATen/core/Tensor.h>

#include <string_view>
#include <vector>

namespace freehold::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string_view backend() const = 0;
  // Sums each tensor over the ranks, in place. Tensors are contiguous, float32/float64/int64, on this backend's
  // device; all reductions are started before the first is waited for, and all are done when this returns.
  virtual void all_reduce_sum_(const std::vector<at::Tensor>& tensors, std::string_view what) = 0;
  // The same, one tensor at a time without waiting: starts summing `tensor` over the ranks in place and returns;
  // wait_started() returns once every reduction started since the last wait_started() is done. Every rank must
  // start the same tensors in the same order.
  virtual void start_all_reduce_sum_(const at::Tensor& tensor, std::string_view what) = 0;
  virtual void wait_started(std::string_view what) = 0;
  // Lets started reductions advance without waiting for them (MPI advances non-blocking collectives only inside MPI
  // calls; NCCL needs nothing).
  virtual void progress() {}
  // Whether start_all_reduce_sum_ and progress may be called from another thread than the one that made the
  // communicator (autograd's device threads run a GPU backward pass).
  virtual bool starts_from_any_thread() const { return false; }
  // Copies rank `root`'s tensor into every rank's, in place.
  virtual void broadcast_(const at::Tensor& tensor, int root, std::string_view what) = 0;
};

// World size 1: nothing to exchange.
class SingleProcessCommunicator final : public Communicator {
 public:
  std::string_view backend() const override { return "single"; }
  void all_reduce_sum_(const std::vector<at::Tensor>&, std::string_view) override {}
  void start_all_reduce_sum_(const at::Tensor&, std::string_view) override {}
  void wait_started(std::string_view) override {}
  void broadcast_(const at::Tensor&, int, std::string_view) override {}
};

}  // namespace freehold::dist
