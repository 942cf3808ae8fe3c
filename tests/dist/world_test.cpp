// dist/'s World and MPI communicator under `mpirun -np 2` (and alone, world size 1: the same calls return their
// input): control-plane sums, minima, gathers and broadcasts; tensor all-reduce and broadcast; gradient buckets
// with a parameter that has no gradient on one rank; and the deadline: a rank that skips a collective makes the
// other fail with PeerLostError naming it, within dist.timeout_s plus the roll call, never a hang (D3).
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "core/error.h"

#include "dist/communicator.h"
#include "dist/grad_buckets.h"
#include "dist/world.h"

namespace freehold::dist {
namespace {

World& world() {
  static std::unique_ptr<World> w = [] {
    DistOptions options;
    options.timeout_s = 3;
    return World::bootstrap(options);
  }();
  return *w;
}

TEST(WorldTest, ControlPlane) {
  World& w = world();
  const int n = w.size(), r = w.rank();
  EXPECT_EQ(w.all_reduce_sum(std::vector<int64_t>{1, r}, "sum"), (std::vector<int64_t>{n, n * (n - 1) / 2}));
  EXPECT_EQ(w.all_reduce_sum(std::vector<double>{0.5}, "sum")[0], 0.5 * n);
  EXPECT_EQ(w.all_reduce_max(r, "max"), n - 1);
  EXPECT_EQ(w.all_reduce_min(r, "min"), 0);
  EXPECT_TRUE(w.all_ok(true, "ok"));
  EXPECT_FALSE(w.all_ok(r != n - 1, "one rank fails"));
  const std::vector<std::string> all = w.all_gather(std::string(static_cast<size_t>(r + 1), 'a' + r), "gather");
  ASSERT_EQ(all.size(), static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) EXPECT_EQ(all[static_cast<size_t>(i)], std::string(static_cast<size_t>(i + 1), 'a' + i));
  EXPECT_EQ(w.broadcast(r == 0 ? "from rank 0" : "", 0, "broadcast"), "from rank 0");
  EXPECT_EQ(w.local_rank(), w.rank());  // one host in these tests
  w.barrier("barrier");
}

TEST(WorldTest, TensorAllReduceAndBroadcast) {
  World& w = world();
  const int n = w.size(), r = w.rank();
  Communicator& c = w.communicator(at::Device(at::kCPU));
  at::Tensor f = at::full({5}, static_cast<double>(r + 1), at::kFloat);
  at::Tensor d = at::arange(3, at::kDouble) * (r + 1);
  c.all_reduce_sum_({f, d}, "tensors");
  EXPECT_TRUE(f.equal(at::full({5}, n * (n + 1) / 2.0, at::kFloat)));
  EXPECT_TRUE(d.equal(at::arange(3, at::kDouble) * (n * (n + 1) / 2.0)));
  at::Tensor b = r == 0 ? at::arange(4, at::kFloat) : at::zeros({4}, at::kFloat);
  c.broadcast_(b, 0, "broadcast");
  EXPECT_TRUE(b.equal(at::arange(4, at::kFloat)));
}

TEST(WorldTest, GradientBucketsSumEveryGradient) {
  World& w = world();
  const int n = w.size(), r = w.rank();
  std::vector<at::Tensor> params;
  for (int64_t size : {3, 5, 7}) params.push_back(at::zeros({size, 2}, at::kFloat).requires_grad_());
  // 40-byte buckets, filled from the last parameter back: 56 bytes alone, then 40 + 24 bytes do not fit one.
  GradientBuckets buckets(params, 40);
  EXPECT_EQ(buckets.num_buckets(), 3u);
  params[0].mutable_grad() = at::full({3, 2}, static_cast<double>(r + 1), at::kFloat);
  params[2].mutable_grad() = at::ones({7, 2}, at::kFloat);
  // params[1] has a gradient on rank 0 only (the others had no target tokens).
  if (r == 0) params[1].mutable_grad() = at::full({5, 2}, 2.0, at::kFloat);
  buckets.all_reduce_sum_(w.communicator(at::Device(at::kCPU)), "grads");
  EXPECT_TRUE(params[0].grad().equal(at::full({3, 2}, n * (n + 1) / 2.0, at::kFloat)));
  ASSERT_TRUE(params[1].grad().defined());
  EXPECT_TRUE(params[1].grad().equal(at::full({5, 2}, 2.0, at::kFloat)));
  EXPECT_TRUE(params[2].grad().equal(at::full({7, 2}, static_cast<double>(n), at::kFloat)));
}

// Passes every call on to `inner` and records, for each reduction started, how many of `params` had a gradient
// then (the backward pass still running when fewer than all) and which tensor it was.
class RecordingCommunicator final : public Communicator {
 public:
  RecordingCommunicator(Communicator& inner, std::vector<at::Tensor> params, bool any_thread)
      : inner_(inner), params_(std::move(params)), any_thread_(any_thread) {}
  std::string_view backend() const override { return "recording"; }
  void all_reduce_sum_(const std::vector<at::Tensor>& t, std::string_view what) override { inner_.all_reduce_sum_(t, what); }
  void start_all_reduce_sum_(const at::Tensor& t, std::string_view what) override {
    int64_t with_grad = 0;
    for (const at::Tensor& p : params_) with_grad += p.grad().defined() ? 1 : 0;
    grads_at_start.push_back(with_grad);
    started.push_back(t.data_ptr());
    inner_.start_all_reduce_sum_(t, what);
  }
  void wait_started(std::string_view what) override { inner_.wait_started(what); }
  void progress() override { inner_.progress(); }
  bool starts_from_any_thread() const override { return any_thread_; }
  void broadcast_(const at::Tensor& t, int root, std::string_view what) override { inner_.broadcast_(t, root, what); }

  std::vector<int64_t> grads_at_start;
  std::vector<const void*> started;

 private:
  Communicator& inner_;
  std::vector<at::Tensor> params_;
  bool any_thread_;
};

// loss = sum(x · p_0 · p_1 · … · p_{n-1}) with x = rank + 1: d loss / d p_k = (rank + 1) · Π_{j≠k} p_j, and the
// backward pass accumulates p_{n-1}'s gradient first and p_0's last.
struct Chain {
  std::vector<at::Tensor> params;
  explicit Chain(int64_t n) {
    for (int64_t k = 0; k < n; ++k) params.push_back(at::full({4}, 1.0 + 0.25 * k, at::kFloat).requires_grad_());
  }
  at::Tensor loss(int rank) const {
    at::Tensor h = at::full({4}, static_cast<double>(rank + 1), at::kFloat);
    for (const at::Tensor& p : params) h = h * p;
    return h.sum();
  }
  // The sum over n_ranks ranks of d loss / d p_k.
  at::Tensor summed_grad(size_t k, int n_ranks) const {
    double product = 1;
    for (size_t j = 0; j < params.size(); ++j) product *= j == k ? 1.0 : 1.0 + 0.25 * static_cast<double>(j);
    return at::full({4}, product * n_ranks * (n_ranks + 1) / 2.0, at::kFloat);
  }
};

TEST(WorldTest, GradientBucketsStartDuringTheBackwardPassInBucketOrder) {
  World& w = world();
  const int n = w.size(), r = w.rank();
  Chain chain(4);
  GradientBuckets buckets(chain.params, 16);  // one 4-float parameter per bucket, p_3's first
  ASSERT_EQ(buckets.num_buckets(), 4u);
  RecordingCommunicator c(w.communicator(at::Device(at::kCPU)), chain.params, /*any_thread=*/false);
  buckets.arm(c, "grads");
  chain.loss(r).backward();
  // Every bucket was started from the backward pass's hooks, the first while p_0 still had no gradient.
  ASSERT_EQ(c.started.size(), 4u);
  EXPECT_LT(c.grads_at_start.front(), 4);
  buckets.finish_();
  EXPECT_EQ(buckets.started_during_backward(), 4u);
  EXPECT_EQ(c.started.size(), 4u);  // nothing left for finish_ to start
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_TRUE(chain.params[k].grad().allclose(chain.summed_grad(k, n))) << "p_" << k << " " << chain.params[k].grad();
  }
}

TEST(WorldTest, GradientBucketsOnAnotherThreadStartAtFinish) {
  World& w = world();
  const int n = w.size(), r = w.rank();
  Chain chain(3);
  GradientBuckets buckets(chain.params, 16);
  // The communicator may only be called from this thread, and the backward pass runs on another.
  RecordingCommunicator c(w.communicator(at::Device(at::kCPU)), chain.params, /*any_thread=*/false);
  buckets.arm(c, "grads");
  std::thread([&] { chain.loss(r).backward(); }).join();
  EXPECT_TRUE(c.started.empty());
  buckets.finish_();
  EXPECT_EQ(buckets.started_during_backward(), 0u);
  EXPECT_EQ(c.grads_at_start, (std::vector<int64_t>{3, 3, 3}));
  for (size_t k = 0; k < 3; ++k) EXPECT_TRUE(chain.params[k].grad().allclose(chain.summed_grad(k, n)));
}

TEST(WorldTest, GradientBucketsRefuseAGradientThatChangesAfterItsBucketStarted) {
  World& w = world();
  const int r = w.rank();
  Chain chain(2);
  GradientBuckets buckets(chain.params, 16, {"first", "second"});
  Communicator& c = w.communicator(at::Device(at::kCPU));
  buckets.arm(c, "grads");
  chain.loss(r).backward();  // starts both buckets
  chain.loss(r).backward();  // accumulates into gradients already being summed
  try {
    buckets.finish_();
    FAIL() << "no error";
  } catch (const core::InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("changed after its bucket's reduction had started"), std::string::npos)
        << e.what();
  }
  // Unarmed, a backward pass starts nothing, and the next armed step works.
  for (at::Tensor& p : chain.params) p.mutable_grad() = at::Tensor();
  chain.loss(r).backward();
  for (at::Tensor& p : chain.params) p.mutable_grad() = at::Tensor();
  buckets.arm(c, "grads");
  chain.loss(r).backward();
  buckets.finish_();
  for (size_t k = 0; k < 2; ++k) EXPECT_TRUE(chain.params[k].grad().allclose(chain.summed_grad(k, w.size())));
}

// Run alone (the World is unusable after a loss; deadline_test.sh): rank 1 skips a collective and goes quiet for longer than the deadline
// plus the roll call; rank 0 must get PeerLostError naming rank 1 instead of waiting forever.
TEST(WorldDeadlineTest, SkippedCollectiveTimesOutNamingTheRank) {
  World& w = world();
  if (w.size() < 2) GTEST_SKIP() << "needs mpirun -np 2";
  if (w.rank() == 1) {
    std::this_thread::sleep_for(std::chrono::seconds(w.options().timeout_s + 3 + 4));
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  try {
    w.all_reduce_max(1, "the skipped collective");
    FAIL() << "no error";
  } catch (const PeerLostError& e) {
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_NE(std::string(e.what()).find("lost rank 1 "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("the skipped collective"), std::string::npos) << e.what();
    EXPECT_EQ(e.exit_code(), core::ExitCode::kPeerLost);
    EXPECT_LT(took, w.options().timeout_s + 30) << e.what();
  }
  EXPECT_TRUE(w.lost());
  EXPECT_THROW(w.barrier("after the loss"), PeerLostError);
}

}  // namespace
}  // namespace freehold::dist
