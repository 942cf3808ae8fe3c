// NcclCommunicator; see nccl_communicator.h.
#include "dist/nccl_communicator.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "dist/world.h"

namespace freehold::dist {
namespace {

void check_cuda(cudaError_t rc, std::string_view call) {
  if (rc != cudaSuccess) {
    throw core::Error(absl::StrCat(std::string(call), " failed: ", cudaGetErrorString(rc)));
  }
}

ncclDataType_t nccl_type(const at::Tensor& t, std::string_view what) {
  switch (t.scalar_type()) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    case at::kByte: return ncclUint8;
    default:
      throw core::InternalError(absl::StrCat(std::string(what), ": NCCL cannot reduce ", c10::toString(t.scalar_type())));
  }
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(World& world, const at::Device& device)
      : world_(world),
        device_(device.index() >= 0 ? device.index() : static_cast<c10::DeviceIndex>(world.local_rank())),
        stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device_)) {
    c10::cuda::CUDAGuard guard(device_);
    check_cuda(cudaEventCreateWithFlags(&compute_done_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    check_cuda(cudaEventCreateWithFlags(&reduce_done_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    // Rank 0 makes the unique id; the others get it over MPI, with the deadline (D8: rank 0 late or dead).
    ncclUniqueId id;
    std::memset(&id, 0, sizeof(id));
    if (world.rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    const std::string bytes = world.broadcast(std::string(reinterpret_cast<const char*>(&id), sizeof(id)), 0,
                                              "NCCL unique id");
    std::memcpy(&id, bytes.data(), sizeof(id));
    // Non-blocking communicator: init and collectives return at once and are polled, so a deadline can abort them.
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const ncclResult_t rc = ncclCommInitRankConfig(&comm_, world.size(), id, world.rank(), &config);
    if (rc != ncclSuccess && rc != ncclInProgress) check_nccl(rc, "ncclCommInitRankConfig");
    wait_comm_ready("NCCL communicator init");
    core::log_info("NCCL ", NCCL_MAJOR, ".", NCCL_MINOR, " communicator on GPU ", static_cast<int>(device_));
  }

  ~NcclCommunicator() override {
    if (comm_ == nullptr) return;
    // After a loss a destroy could wait for the missing peer; abort never does.
    if (world_.lost() || aborted_) {
      if (!aborted_) ncclCommAbort(comm_);
    } else {
      ncclCommDestroy(comm_);
    }
    cudaEventDestroy(compute_done_);
    cudaEventDestroy(reduce_done_);
  }

  std::string_view backend() const override { return "nccl"; }

  void all_reduce_sum_(const std::vector<at::Tensor>& tensors, std::string_view what) override {
    if (world_.lost()) world_.fail_lost(std::string(what), "not attempted");
    c10::cuda::CUDAGuard guard(device_);
    begin_on_stream();
    check_nccl(ncclGroupStart(), "ncclGroupStart");
    for (const at::Tensor& t : tensors) enqueue_all_reduce(t, what);
    const ncclResult_t rc = ncclGroupEnd();
    if (rc != ncclSuccess && rc != ncclInProgress) check_nccl(rc, "ncclGroupEnd");
    end_on_stream(what);
  }

  // Queued on the reduction stream behind the compute stream's work so far (the gradients of this bucket), from
  // autograd's device thread during the backward pass: the compute stream goes on with the backward meanwhile.
  void start_all_reduce_sum_(const at::Tensor& tensor, std::string_view what) override {
    if (world_.lost()) world_.fail_lost(std::string(what), "not attempted");
    c10::cuda::CUDAGuard guard(device_);
    begin_on_stream();
    enqueue_all_reduce(tensor, what);
    started_ = true;
  }

  void wait_started(std::string_view what) override {
    if (!started_) return;
    c10::cuda::CUDAGuard guard(device_);
    started_ = false;
    end_on_stream(what);
  }

  bool starts_from_any_thread() const override { return true; }

  void broadcast_(const at::Tensor& tensor, int root, std::string_view what) override {
    if (world_.lost()) world_.fail_lost(std::string(what), "not attempted");
    c10::cuda::CUDAGuard guard(device_);
    FH_CHECK(tensor.is_cuda() && tensor.is_contiguous(), std::string(what), ": NCCL broadcasts contiguous CUDA tensors");
    begin_on_stream();
    const ncclResult_t rc = ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                                          nccl_type(tensor, what), root, comm_, stream_.stream());
    if (rc != ncclSuccess && rc != ncclInProgress) check_nccl(rc, "ncclBroadcast");
    end_on_stream(what);
  }

 private:
  void check_nccl(ncclResult_t rc, std::string_view call) {
    if (rc == ncclSuccess) return;
    const std::string message = absl::StrCat(std::string(call), " failed: ", ncclGetErrorString(rc));
    if (rc == ncclRemoteError || rc == ncclSystemError) abort_and_fail(std::string(call), message);
    throw core::Error(message);
  }

  [[noreturn]] void abort_and_fail(const std::string& what, const std::string& why) {
    if (comm_ != nullptr && !aborted_) {
      ncclCommAbort(comm_);
      aborted_ = true;
    }
    world_.fail_lost(what, why);
  }

  void enqueue_all_reduce(const at::Tensor& t, std::string_view what) {
    FH_CHECK(t.is_cuda() && t.is_contiguous(), std::string(what), ": NCCL reduces contiguous CUDA tensors");
    const ncclResult_t rc = ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                          nccl_type(t, what), ncclSum, comm_, stream_.stream());
    if (rc != ncclSuccess && rc != ncclInProgress) check_nccl(rc, "ncclAllReduce");
  }

  // The reduction stream waits for the work queued so far on the compute stream (the gradients).
  void begin_on_stream() {
    check_cuda(cudaEventRecord(compute_done_, c10::cuda::getCurrentCUDAStream(device_).stream()), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(stream_.stream(), compute_done_, 0), "cudaStreamWaitEvent");
  }

  // Polls the reduction to completion (or the deadline / an async error), then orders the compute stream after it.
  void end_on_stream(std::string_view what) {
    check_cuda(cudaEventRecord(reduce_done_, stream_.stream()), "cudaEventRecord");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(world_.options().timeout_s);
    for (int64_t polls = 0;; ++polls) {
      const cudaError_t query = cudaEventQuery(reduce_done_);
      if (query == cudaSuccess) break;
      if (query != cudaErrorNotReady) check_cuda(query, "cudaEventQuery");
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        abort_and_fail(std::string(what), absl::StrCat("NCCL: ", ncclGetErrorString(async)));
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        abort_and_fail(std::string(what), absl::StrCat("not completed within dist.timeout_s (",
                                                       world_.options().timeout_s, " s); NCCL communicator aborted"));
      }
      if (polls > 100) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    check_cuda(cudaStreamWaitEvent(c10::cuda::getCurrentCUDAStream(device_).stream(), reduce_done_, 0),
               "cudaStreamWaitEvent");
  }

  void wait_comm_ready(std::string_view what) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(world_.options().timeout_s);
    while (true) {
      ncclResult_t state = ncclInProgress;
      ncclCommGetAsyncError(comm_, &state);
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) abort_and_fail(std::string(what), absl::StrCat("NCCL: ", ncclGetErrorString(state)));
      if (std::chrono::steady_clock::now() >= deadline) {
        abort_and_fail(std::string(what), absl::StrCat("not ready within dist.timeout_s (", world_.options().timeout_s,
                                                       " s)"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  World& world_;
  c10::DeviceIndex device_;
  c10::cuda::CUDAStream stream_;
  ncclComm_t comm_ = nullptr;
  bool aborted_ = false;
  bool started_ = false;  // reductions started and not yet waited for
  cudaEvent_t compute_done_ = nullptr;
  cudaEvent_t reduce_done_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(World& world, const at::Device& device) {
  return std::make_unique<NcclCommunicator>(world, device);
}

}  // namespace freehold::dist
