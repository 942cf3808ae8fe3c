// Gradient buckets: the adapter gradients flattened into a few contiguous buffers (at most `bucket_bytes` each, one
// dtype and device per bucket), so that a step sums them over the ranks with a handful of all-reduces instead of
// one per tensor. The sum is what the trainer wants: its loss is already divided by the global target-token count,
// so summed gradients are the gradients of the global mean loss.
//
// Buckets follow the parameters in reverse order, the order the backward pass produces their gradients (the last
// layer's first). Between arm() and finish_(), a bucket's reduction starts as soon as the backward pass has
// accumulated the gradient of each of its parameters (a post-accumulate-grad hook on each), so that it overlaps
// the rest of the backward pass: on a GPU the NCCL reduction runs on its own stream while the compute stream goes
// on; with MPI every hook also lets the started reductions progress. Buckets start strictly in bucket order (a
// ready bucket waits for the ones before it), so every rank starts the same reductions in the same order, whatever
// order its gradients arrive in; finish_() starts what is left in that order, waits, and writes the sums back.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dist/communicator.h"

namespace freehold::dist {

class GradientBuckets {
 public:
  static constexpr int64_t kDefaultBucketBytes = 25 << 20;

  // `names` (one per parameter, or empty) name a parameter in errors.
  explicit GradientBuckets(std::vector<at::Tensor> params, int64_t bucket_bytes = kDefaultBucketBytes,
                           std::vector<std::string> names = {});
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  // Sums every parameter's .grad() over the ranks in place, after the backward pass: arm() then finish_().
  void all_reduce_sum_(Communicator& communicator, std::string_view what);

  // Before the backward pass whose gradients are to be summed (with gradient accumulation: the last micro-batch's):
  // from here on each bucket starts its reduction through `communicator` once its gradients are accumulated.
  // `communicator` must outlive finish_(). Reductions start from the thread that runs the backward pass only where
  // `communicator` allows it (Communicator::starts_from_any_thread); otherwise they start from this thread's
  // finish_().
  void arm(Communicator& communicator, std::string_view what);
  // After that backward pass: starts the buckets not started yet (a parameter without a gradient on this rank, its
  // micro-batches having had no target tokens, contributes zeros and receives the sum), waits for every reduction
  // and writes the sums into .grad(). Throws InternalError when a parameter's gradient changed after its bucket had
  // started (a parameter used twice in one forward pass).
  void finish_();

  size_t num_buckets() const { return buckets_.size(); }
  // How many buckets the last finish_() found already started by the backward pass (the overlapped ones).
  size_t started_during_backward() const { return started_during_backward_; }
  // The device of the parameters (of the first; the trainer's adapters live on one device).
  at::Device device() const { return params_.empty() ? at::Device(at::kCPU) : params_.front().device(); }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    at::Tensor flat;             // (sum of numel,) allocated on first use
    int64_t numel = 0;
    size_t ready = 0;            // params whose gradient the armed backward pass has accumulated
  };
  class Hook;

  void on_gradient(size_t param);  // a parameter's gradient was accumulated (Hook)
  void start(size_t bucket);
  std::string name_of(size_t param) const;

  std::vector<at::Tensor> params_;
  std::vector<std::string> names_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // param → bucket
  std::vector<bool> seen_;         // param → gradient accumulated since arm()
  Communicator* communicator_ = nullptr;  // while armed
  std::string what_;
  size_t next_ = 0;  // the next bucket to start
  bool from_hooks_ = false;
  std::thread::id arming_thread_;
  int64_t late_param_ = -1;  // a parameter whose gradient arrived after its bucket started
  size_t started_during_backward_ = 0;
};

}  // namespace freehold::dist
