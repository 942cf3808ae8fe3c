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
  // 40-byte buckets: the first two parameters (24 + 40 bytes) land in separate buckets.
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
