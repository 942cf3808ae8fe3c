// The World and its MPI control plane; see world.h and mpi_state.h.
#include "dist/world.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/log.h"
#include "dist/communicator.h"
#include "dist/mpi_communicator.h"
#include "dist/mpi_state.h"
#ifdef FREEHOLD_WITH_CUDA
#include "dist/nccl_communicator.h"
#endif

namespace freehold::dist {
namespace {

constexpr int kRollCallTag = 7;

std::string mpi_error_text(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) return absl::StrCat("MPI error ", rc);
  return std::string(text, static_cast<size_t>(length));
}

// Seconds the survivors give each other to answer a roll call: long enough to cover the skew between ranks that
// time out in the same collective, short enough that deadline + grace stays under deadline + 30 s.
double roll_call_grace_s(int64_t timeout_s) { return std::clamp(static_cast<double>(timeout_s), 2.0, 20.0); }

}  // namespace

void check_mpi(int rc, std::string_view call) {
  if (rc != MPI_SUCCESS) throw core::Error(absl::StrCat(std::string(call), " failed: ", mpi_error_text(rc)));
}

bool launched_by_mpi() {
  // Open MPI's mpirun, PMIx (Open MPI 5, srun --mpi=pmix) and PMI-1/2 (srun --mpi=pmi2, MPICH's launchers).
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

// ─── the wait loop and the roll call ─────────────────────────────────────────────────────────────────────────────

void World::Mpi::wait(World& world, std::vector<MPI_Request>& requests, std::string_view what) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + std::chrono::seconds(world.options().timeout_s);
  for (int64_t polls = 0;; ++polls) {
    int done = 0;
    const int rc = MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) world.fail_lost(std::string(what), mpi_error_text(rc));
    if (done) return;
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      world.fail_lost(std::string(what), absl::StrCat("not completed within dist.timeout_s (", world.options().timeout_s,
                                                      " s)"));
    }
    // Spin briefly (a collective between busy ranks completes in microseconds), then back off so that waiting
    // ranks leave the cores to the ranks still computing (oversubscribed CPU runs).
    if (polls < 200) continue;
    if (now - start < std::chrono::milliseconds(5)) {
      sched_yield();
    } else if (now - start < std::chrono::seconds(1)) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

std::vector<int> World::Mpi::roll_call_missing(int rank, int size, double grace_s) {
  // Buffers outlive the call on purpose: after a loss this process only exits, and a late message must not land
  // in freed memory.
  static int token = 1;
  auto* answers = new std::vector<int>(static_cast<size_t>(size), 0);
  std::vector<MPI_Request> receives(static_cast<size_t>(size), MPI_REQUEST_NULL);
  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank) continue;
    MPI_Request send = MPI_REQUEST_NULL;
    MPI_Isend(&token, 1, MPI_INT, peer, kRollCallTag, roll_call, &send);
    MPI_Request_free(&send);
    MPI_Irecv(&(*answers)[static_cast<size_t>(peer)], 1, MPI_INT, peer, kRollCallTag, roll_call,
              &receives[static_cast<size_t>(peer)]);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_s);
  while (std::chrono::steady_clock::now() < deadline) {
    bool all = true;
    for (MPI_Request& r : receives) {
      if (r == MPI_REQUEST_NULL) continue;
      int done = 0;
      if (MPI_Test(&r, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) done = 0;
      if (!done) all = false;
    }
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<int> missing;
  for (int peer = 0; peer < size; ++peer) {
    if (peer != rank && receives[static_cast<size_t>(peer)] != MPI_REQUEST_NULL) missing.push_back(peer);
  }
  return missing;
}

void World::fail_lost(const std::string& what, const std::string& why) {
  const bool first = !lost_;
  lost_ = true;
  std::string who;
  if (first && mpi_) {
    const double grace = roll_call_grace_s(options_.timeout_s);
    const std::vector<int> missing = mpi_->roll_call_missing(rank_, size_, grace);
    if (missing.empty()) {
      who = absl::StrCat("every rank answered a roll call afterwards: the ranks are out of step (a collective skipped "
                         "on one rank) or the network is slower than dist.timeout_s allows");
    } else {
      who = absl::StrCat("lost rank ", absl::StrJoin(missing, ", rank "), " (no answer to a roll call within ", grace,
                         " s: it died, hangs or was stopped)");
    }
  } else {
    who = "a peer was lost earlier";
  }
  throw PeerLostError(absl::StrCat(what, ": ", why, "; ", who, ". This rank exits with code 4; the newest committed "
                                   "checkpoint is intact: start the job again to resume from it"));
}

// ─── bootstrap ───────────────────────────────────────────────────────────────────────────────────────────────────

World::World(const DistOptions& options, std::unique_ptr<Mpi> mpi, int rank, int size, int local_rank)
    : options_(options), mpi_(std::move(mpi)), rank_(rank), size_(size), local_rank_(local_rank) {}

std::unique_ptr<World> World::single_process(const DistOptions& options) {
  return std::unique_ptr<World>(new World(options, nullptr, 0, 1, 0));
}

std::unique_ptr<World> World::bootstrap(const DistOptions& options) {
  if (options.timeout_s < 1) {
    throw core::UsageError(absl::StrCat("dist.timeout_s is ", options.timeout_s, "; a whole number of seconds >= 1 is "
                                        "accepted"));
  }
  if (!launched_by_mpi()) {
    // An srun step of several tasks without PMI would be that many independent world-size-1 runs writing one
    // output directory: refuse it.
    const char* step_tasks = std::getenv("SLURM_STEP_NUM_TASKS");
    if (step_tasks != nullptr && std::atoi(step_tasks) > 1) {
      throw core::UsageError(absl::StrCat("srun started ", step_tasks, " tasks, but none has a rank from PMI or PMIx "
                                          "(no PMIX_RANK / PMI_RANK in the environment): run `srun --mpi=pmix` (or "
                                          "pmi2) so that the tasks form one job; `srun --mpi=list` shows the choices"));
    }
    return single_process(options);
  }
  auto mpi = std::make_unique<Mpi>();
  int initialized = 0;
  check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
  if (!initialized) {
    int provided = 0;
    // Only the main thread calls MPI (the loader's read-ahead thread never does).
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    mpi->finalize = true;
  }
  // Errors come back as return codes, so that a lost peer becomes exit code 4 and not an abort of the whole job.
  check_mpi(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  int rank = 0, size = 1;
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");
  // Duplicates made non-blocking, so that a rank missing at start-up is a deadline too (D8).
  std::unique_ptr<World> world(new World(options, std::move(mpi), rank, size, 0));
  {
    std::vector<MPI_Request> requests(2, MPI_REQUEST_NULL);
    check_mpi(MPI_Comm_idup(MPI_COMM_WORLD, &world->mpi_->comm, &requests[0]), "MPI_Comm_idup");
    check_mpi(MPI_Comm_idup(MPI_COMM_WORLD, &world->mpi_->roll_call, &requests[1]), "MPI_Comm_idup");
    world->mpi_->wait(*world, requests, "start-up (MPI communicators)");
  }
  // Local rank: the ranks before this one on the same host (hostnames gathered; no launcher-specific variable).
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  const std::vector<std::string> hosts = world->all_gather(host, "start-up (host names)");
  world->local_rank_ = static_cast<int>(std::count(hosts.begin(), hosts.begin() + rank, std::string(host)));
  return world;
}

World::~World() {
  gpu_communicator_.reset();
  cpu_communicator_.reset();
  if (!mpi_) return;
  // After a loss, or while an error unwinds on this rank only, MPI_Finalize could wait for a peer forever: leave it
  // to the launcher, which ends the job when this process exits.
  if (lost_ || std::uncaught_exceptions() > 0) return;
  try {
    barrier("finalize");
  } catch (const std::exception& e) {
    core::log_warning(e.what());
    return;
  }
  MPI_Comm_free(&mpi_->comm);
  MPI_Comm_free(&mpi_->roll_call);
  if (mpi_->finalize) MPI_Finalize();
}

// ─── control plane ───────────────────────────────────────────────────────────────────────────────────────────────

namespace {

template <typename T>
void all_reduce_in_place(World& world, T* data, int count, MPI_Datatype type, MPI_Op op, std::string_view what) {
  World::Mpi* mpi = world.mpi();
  if (mpi == nullptr || count == 0) return;
  if (world.lost()) world.fail_lost(std::string(what), "not attempted");
  std::vector<MPI_Request> requests(1, MPI_REQUEST_NULL);
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data, count, type, op, mpi->comm, &requests[0]), "MPI_Iallreduce");
  mpi->wait(world, requests, what);
}

}  // namespace

std::vector<int64_t> World::all_reduce_sum(std::vector<int64_t> values, std::string_view what) {
  all_reduce_in_place(*this, values.data(), static_cast<int>(values.size()), MPI_INT64_T, MPI_SUM, what);
  return values;
}

std::vector<double> World::all_reduce_sum(std::vector<double> values, std::string_view what) {
  all_reduce_in_place(*this, values.data(), static_cast<int>(values.size()), MPI_DOUBLE, MPI_SUM, what);
  return values;
}

int64_t World::all_reduce_max(int64_t value, std::string_view what) {
  all_reduce_in_place(*this, &value, 1, MPI_INT64_T, MPI_MAX, what);
  return value;
}

int64_t World::all_reduce_min(int64_t value, std::string_view what) {
  all_reduce_in_place(*this, &value, 1, MPI_INT64_T, MPI_MIN, what);
  return value;
}

std::vector<std::string> World::all_gather(const std::string& value, std::string_view what) {
  if (!mpi_) return {value};
  if (lost_) fail_lost(std::string(what), "not attempted");
  std::vector<int> sizes(static_cast<size_t>(size_), 0);
  int mine = static_cast<int>(value.size());
  std::vector<MPI_Request> requests(1, MPI_REQUEST_NULL);
  check_mpi(MPI_Iallgather(&mine, 1, MPI_INT, sizes.data(), 1, MPI_INT, mpi_->comm, &requests[0]), "MPI_Iallgather");
  mpi_->wait(*this, requests, what);
  std::vector<int> offsets(static_cast<size_t>(size_), 0);
  int64_t total = 0;
  for (int r = 0; r < size_; ++r) {
    offsets[static_cast<size_t>(r)] = static_cast<int>(total);
    total += sizes[static_cast<size_t>(r)];
  }
  FH_CHECK(total < (int64_t{1} << 31), "all_gather of ", total, " bytes");
  std::string all(static_cast<size_t>(total), '\0');
  check_mpi(MPI_Iallgatherv(value.data(), mine, MPI_CHAR, all.data(), sizes.data(), offsets.data(), MPI_CHAR,
                            mpi_->comm, &requests[0]),
            "MPI_Iallgatherv");
  mpi_->wait(*this, requests, what);
  std::vector<std::string> out;
  for (int r = 0; r < size_; ++r) {
    out.push_back(all.substr(static_cast<size_t>(offsets[static_cast<size_t>(r)]),
                             static_cast<size_t>(sizes[static_cast<size_t>(r)])));
  }
  return out;
}

std::string World::broadcast(const std::string& value, int root, std::string_view what) {
  if (!mpi_) return value;
  if (lost_) fail_lost(std::string(what), "not attempted");
  int64_t length = static_cast<int64_t>(value.size());
  std::vector<MPI_Request> requests(1, MPI_REQUEST_NULL);
  check_mpi(MPI_Ibcast(&length, 1, MPI_INT64_T, root, mpi_->comm, &requests[0]), "MPI_Ibcast");
  mpi_->wait(*this, requests, what);
  FH_CHECK(length >= 0 && length < (int64_t{1} << 31), "broadcast of ", length, " bytes");
  std::string out = rank_ == root ? value : std::string(static_cast<size_t>(length), '\0');
  check_mpi(MPI_Ibcast(out.data(), static_cast<int>(length), MPI_CHAR, root, mpi_->comm, &requests[0]), "MPI_Ibcast");
  mpi_->wait(*this, requests, what);
  return out;
}

void World::barrier(std::string_view what) {
  if (!mpi_) return;
  if (lost_) fail_lost(std::string(what), "not attempted");
  std::vector<MPI_Request> requests(1, MPI_REQUEST_NULL);
  check_mpi(MPI_Ibarrier(mpi_->comm, &requests[0]), "MPI_Ibarrier");
  mpi_->wait(*this, requests, what);
}

// ─── tensor communicators ────────────────────────────────────────────────────────────────────────────────────────

Communicator& World::communicator(const at::Device& device) {
  if (device.is_cpu() || size_ == 1 || options_.backend == Backend::kMpi) {
    // MPI for CPU tensors, and for GPU tensors when asked for (staged through host memory).
    if (!cpu_communicator_) {
      if (mpi_) {
        cpu_communicator_ = std::make_unique<MpiCommunicator>(*this);
      } else {
        cpu_communicator_ = std::make_unique<SingleProcessCommunicator>();
      }
    }
    return *cpu_communicator_;
  }
#ifdef FREEHOLD_WITH_CUDA
  if (!gpu_communicator_) gpu_communicator_ = make_nccl_communicator(*this, device);
  return *gpu_communicator_;
#else
  throw core::UsageError(absl::StrCat("dist.backend: ", std::string(backend_name(options_.backend)), " for tensors on ",
                                      device.str(), ", but this freehold is built without CUDA (FREEHOLD_CUDA=OFF)"));
#endif
}

}  // namespace freehold::dist
