// Gradient buckets: the adapter gradients flattened into a few contiguous buffers (in parameter order, at most
// `bucket_bytes` each, one dtype and device per bucket), so that a step sums them over the ranks with a handful of
// all-reduces instead of one per tensor. The sum is what the trainer wants: its loss is already divided by the
// global target-token count, so summed gradients are the gradients of the global mean loss.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include "dist/communicator.h"

namespace freehold::dist {

class GradientBuckets {
 public:
  static constexpr int64_t kDefaultBucketBytes = 25 << 20;

  explicit GradientBuckets(std::vector<at::Tensor> params, int64_t bucket_bytes = kDefaultBucketBytes);

  // Sums every parameter's .grad() over the ranks in place. A parameter without a gradient on this rank (its
  // micro-batches had no target tokens) contributes zeros and receives the sum.
  void all_reduce_sum_(Communicator& communicator, std::string_view what);

  size_t num_buckets() const { return buckets_.size(); }
  // The device of the parameters (of the first; the trainer's adapters live on one device).
  at::Device device() const { return params_.empty() ? at::Device(at::kCPU) : params_.front().device(); }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    at::Tensor flat;             // (sum of numel,) allocated on first use
    int64_t numel = 0;
  };
  std::vector<at::Tensor> params_;
  std::vector<Bucket> buckets_;
};

}  // namespace freehold::dist
