// Timing two ways of doing one thing on a machine that other processes share: each callable is run once to warm
// it (oneDNN builds its kernels on first use), then both in interleaved rounds, keeping each one's best time, so
// that another process's burst slows both alike. For the start-up measurements that pick a GEMM path
// (kernels/half_gemm.h, kernels/cpu_gemm.h).
#pragma once

#include <algorithm>
#include <chrono>
#include <utility>

namespace freehold::kernels {

// {best seconds of a, best seconds of b} over `rounds` rounds of `reps` runs each.
template <typename A, typename B>
std::pair<double, double> best_interleaved_seconds(const A& a, const B& b, int rounds = 3, int reps = 2) {
  const auto best_of = [reps](const auto& run) {
    double best = 1e30;
    for (int i = 0; i < reps; ++i) {
      const auto start = std::chrono::steady_clock::now();
      run();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return best;
  };
  a();
  b();
  double t_a = 1e30, t_b = 1e30;
  for (int round = 0; round < rounds; ++round) {
    t_a = std::min(t_a, best_of(a));
    t_b = std::min(t_b, best_of(b));
  }
  return {t_a, t_b};
}

}  // namespace freehold::kernels
