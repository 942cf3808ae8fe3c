// The World: this process's place among the ranks of a run (rank, world size, local rank on its node) and the
// control plane every rank uses to agree on decisions (sums, minima, gathers, broadcasts of small values). Under
// mpirun or srun it is MPI; a process started alone (no launcher in the environment) is world size 1 and runs the
// very same calls, which then return their input. Every collective has a deadline (dist.timeout_s): a peer that
// died, hangs or was stopped ends this rank with PeerLostError (exit code 4) naming the missing rank, never a hang.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "dist/dist_options.h"

namespace freehold::dist {

class Communicator;

// A peer rank was lost or a collective passed its deadline (exit code 4, DESIGN.md §3).
class PeerLostError : public core::Error {
 public:
  explicit PeerLostError(const std::string& message) : core::Error(message, core::ExitCode::kPeerLost) {}
};

// Whether this process was started by a launcher (mpirun, srun with PMI/PMIx): the environment names a rank.
bool launched_by_mpi();

class World {
 public:
  // Under a launcher: initialises MPI (once per process) and learns rank, size and local rank from it. Alone:
  // world size 1 without MPI. `options.timeout_s` is the deadline of every collective.
  static std::unique_ptr<World> bootstrap(const DistOptions& options);
  // World size 1 without touching MPI (tests, and a Trainer built without a World).
  static std::unique_ptr<World> single_process(const DistOptions& options = {});

  // Finalises MPI after a barrier with a deadline; skips it when a peer was lost (MPI_Finalize would wait forever).
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  const DistOptions& options() const { return options_; }
  bool lost() const { return lost_; }

  // ── control plane (host values; `what` names the collective in errors) ──
  std::vector<int64_t> all_reduce_sum(std::vector<int64_t> values, std::string_view what);
  std::vector<double> all_reduce_sum(std::vector<double> values, std::string_view what);
  int64_t all_reduce_max(int64_t value, std::string_view what);
  int64_t all_reduce_min(int64_t value, std::string_view what);
  // True when `ok` holds on every rank (C7: every rank reports success before a commit).
  bool all_ok(bool ok, std::string_view what) { return all_reduce_min(ok ? 1 : 0, what) == 1; }
  // Every rank's `value`, indexed by rank.
  std::vector<std::string> all_gather(const std::string& value, std::string_view what);
  // `value` of rank `root` on every rank.
  std::string broadcast(const std::string& value, int root, std::string_view what);
  void barrier(std::string_view what);

  // The communicator for tensors on `device`: MPI for CPU tensors; NCCL for CUDA tensors when built with CUDA
  // and dist.backend is auto or nccl. Created on first use (NCCL's unique id is broadcast over MPI then).
  Communicator& communicator(const at::Device& device);

  // For communicators: the deadline-polled wait of the MPI backend and the loss bookkeeping.
  struct Mpi;
  Mpi* mpi() { return mpi_.get(); }
  [[noreturn]] void fail_lost(const std::string& what, const std::string& why);

 private:
  World(const DistOptions& options, std::unique_ptr<Mpi> mpi, int rank, int size, int local_rank);

  DistOptions options_;
  std::unique_ptr<Mpi> mpi_;  // null for a process started alone
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  bool lost_ = false;
  std::unique_ptr<Communicator> cpu_communicator_;
  std::unique_ptr<Communicator> gpu_communicator_;
};

}  // namespace freehold::dist
