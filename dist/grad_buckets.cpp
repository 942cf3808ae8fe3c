// GradientBuckets; see grad_buckets.h.
#include "dist/grad_buckets.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "core/error.h"

namespace freehold::dist {

// Runs after autograd has accumulated a parameter's gradient into .grad() (AccumulateGrad), on the thread that runs
// that part of the backward pass.
class GradientBuckets::Hook final : public torch::autograd::PostAccumulateGradHook {
 public:
  Hook(GradientBuckets* buckets, size_t param) : buckets_(buckets), param_(param) {}
  void operator()(const torch::autograd::Variable&) override { buckets_->on_gradient(param_); }

 private:
  GradientBuckets* buckets_;
  size_t param_;
};

GradientBuckets::GradientBuckets(std::vector<at::Tensor> params, int64_t bucket_bytes, std::vector<std::string> names)
    : params_(std::move(params)), names_(std::move(names)) {
  FH_CHECK(bucket_bytes > 0, "bucket_bytes ", bucket_bytes);
  FH_CHECK(names_.empty() || names_.size() == params_.size(), names_.size(), " names for ", params_.size(), " params");
  bucket_of_.resize(params_.size());
  seen_.assign(params_.size(), false);
  for (size_t k = params_.size(); k-- > 0;) {  // the backward pass's order: the last parameters first
    const at::Tensor& p = params_[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    bool fits = false;
    if (!buckets_.empty()) {
      const at::Tensor& first = params_[buckets_.back().params.front()];
      fits = first.scalar_type() == p.scalar_type() && first.device() == p.device() &&
             (buckets_.back().numel * static_cast<int64_t>(first.element_size()) + bytes) <= bucket_bytes;
    }
    if (!fits) buckets_.push_back(Bucket{});
    buckets_.back().params.push_back(k);
    buckets_.back().numel += p.numel();
    bucket_of_[k] = buckets_.size() - 1;
  }
  for (size_t k = 0; k < params_.size(); ++k) {
    if (params_[k].requires_grad() && params_[k].is_leaf()) {
      torch::autograd::impl::set_post_acc_grad_hooks(params_[k], std::make_unique<Hook>(this, k));
    }
  }
}

GradientBuckets::~GradientBuckets() {
  for (const at::Tensor& p : params_) {
    if (p.requires_grad() && p.is_leaf()) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
  }
}

std::string GradientBuckets::name_of(size_t param) const {
  return names_.empty() ? absl::StrCat("parameter ", param) : names_[param];
}

void GradientBuckets::all_reduce_sum_(Communicator& communicator, std::string_view what) {
  arm(communicator, what);
  finish_();
}

void GradientBuckets::arm(Communicator& communicator, std::string_view what) {
  FH_CHECK(communicator_ == nullptr, "GradientBuckets::arm while armed for ", what_);
  communicator_ = &communicator;
  what_ = std::string(what);
  next_ = 0;
  late_param_ = -1;
  from_hooks_ = true;
  arming_thread_ = std::this_thread::get_id();
  seen_.assign(params_.size(), false);
  for (Bucket& bucket : buckets_) bucket.ready = 0;
}

void GradientBuckets::on_gradient(size_t param) {
  if (communicator_ == nullptr) return;  // a backward pass nobody armed (an earlier micro-batch)
  const size_t b = bucket_of_[param];
  if (b < next_) {  // its bucket's reduction already started with the gradient as it was
    if (late_param_ < 0) late_param_ = static_cast<int64_t>(param);
    return;
  }
  if (!from_hooks_ || seen_[param]) return;  // accumulated twice before its bucket started: the bucket takes the total
  seen_[param] = true;
  ++buckets_[b].ready;
  // Not on a thread the communicator may be called from: finish_() starts everything (same order, no overlap).
  if (!communicator_->starts_from_any_thread() && std::this_thread::get_id() != arming_thread_) {
    from_hooks_ = false;
    return;
  }
  while (next_ < buckets_.size() && buckets_[next_].ready == buckets_[next_].params.size()) start(next_++);
  communicator_->progress();
}

void GradientBuckets::start(size_t b) {
  at::NoGradGuard no_grad;
  Bucket& bucket = buckets_[b];
  const at::Tensor& first = params_[bucket.params.front()];
  if (!bucket.flat.defined()) bucket.flat = at::empty({bucket.numel}, first.options().requires_grad(false));
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
  communicator_->start_all_reduce_sum_(bucket.flat, what_);
}

void GradientBuckets::finish_() {
  FH_CHECK(communicator_ != nullptr, "GradientBuckets::finish_ without arm");
  Communicator& communicator = *communicator_;
  started_during_backward_ = next_;
  from_hooks_ = false;
  while (next_ < buckets_.size()) start(next_++);
  communicator_ = nullptr;
  communicator.wait_started(what_);
  if (late_param_ >= 0) {
    throw core::InternalError(absl::StrCat(
        what_, ": the gradient of ", name_of(static_cast<size_t>(late_param_)),
        " changed after its bucket's reduction had started (is it used twice in one forward pass?)"));
  }
  at::NoGradGuard no_grad;
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
