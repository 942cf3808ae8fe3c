// GradientBuckets; see grad_buckets.h.
#include "dist/grad_buckets.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>

#include "core/error.h"

namespace freehold::dist {

GradientBuckets::GradientBuckets(std::vector<at::Tensor> params, int64_t bucket_bytes) : params_(std::move(params)) {
  FH_CHECK(bucket_bytes > 0, "bucket_bytes ", bucket_bytes);
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& p = params_[i];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    bool fits = false;
    if (!buckets_.empty()) {
      const at::Tensor& first = params_[buckets_.back().params.front()];
      fits = first.scalar_type() == p.scalar_type() && first.device() == p.device() &&
             (buckets_.back().numel * static_cast<int64_t>(first.element_size()) + bytes) <= bucket_bytes;
    }
    if (!fits) buckets_.push_back(Bucket{});
    buckets_.back().params.push_back(i);
    buckets_.back().numel += p.numel();
  }
}

void GradientBuckets::all_reduce_sum_(Communicator& communicator, std::string_view what) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> flats;
  for (Bucket& bucket : buckets_) {
    const at::Tensor& first = params_[bucket.params.front()];
    if (!bucket.flat.defined()) {
      bucket.flat = at::empty({bucket.numel}, first.options().requires_grad(false));
    }
    int64_t offset = 0;
    for (size_t i : bucket.params) {
      const at::Tensor& p = params_[i];
      at::Tensor slot = bucket.flat.narrow(0, offset, p.numel());
      if (p.grad().defined()) {
        slot.copy_(p.grad().reshape({-1}));
      } else {
        slot.zero_();
      }
      offset += p.numel();
    }
    flats.push_back(bucket.flat);
  }
  communicator.all_reduce_sum_(flats, what);
  for (Bucket& bucket : buckets_) {
    int64_t offset = 0;
    for (size_t i : bucket.params) {
      at::Tensor p = params_[i];
      at::Tensor sum = bucket.flat.narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(sum);
      } else {
        p.mutable_grad() = sum.clone();
      }
      offset += p.numel();
    }
  }
}

}  // namespace freehold::dist
