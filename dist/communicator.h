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
  // Copies rank `root`'s tensor into every rank's, in place.
  virtual void broadcast_(const at::Tensor& tensor, int root, std::string_view what) = 0;
};

// World size 1: nothing to exchange.
class SingleProcessCommunicator final : public Communicator {
 public:
  std::string_view backend() const override { return "single"; }
  void all_reduce_sum_(const std::vector<at::Tensor>&, std::string_view) override {}
  void broadcast_(const at::Tensor&, int, std::string_view) override {}
};

}  // namespace freehold::dist
