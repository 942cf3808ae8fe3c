// Fused kernels against their unfused ATen compositions on the CPU: time and peak memory of one op, forward and
// backward, in this process (bench/kernels/kernels_bench.py runs each variant in its own process so that peak
// RSS belongs to one variant). Prints one JSON line.
//
//   kernels_bench linear_cross_entropy fused|unfused TOKENS VOCAB HIDDEN fp32|bf16 REPEATS
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <sys/resource.h>
#include <torch/csrc/autograd/autograd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "kernels/linear_cross_entropy.h"

namespace {

double current_rss_mb() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // KiB on Linux
}

int usage() {
  std::fprintf(stderr,
               "usage: kernels_bench linear_cross_entropy fused|unfused TOKENS VOCAB HIDDEN fp32|bf16 REPEATS\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8 || std::string(argv[1]) != "linear_cross_entropy") return usage();
  const std::string impl = argv[2];
  if (impl != "fused" && impl != "unfused") return usage();
  const int64_t N = std::atoll(argv[3]), V = std::atoll(argv[4]), C = std::atoll(argv[5]);
  const std::string dtype_name = argv[6];
  const int repeats = std::atoi(argv[7]);
  if (N < 1 || V < 1 || C < 1 || repeats < 1 || (dtype_name != "fp32" && dtype_name != "bf16")) return usage();
  const at::ScalarType dtype = dtype_name == "fp32" ? at::kFloat : at::kBFloat16;

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const at::Tensor hidden_data = at::randn({N, C}, gen, at::TensorOptions().dtype(at::kFloat)).to(dtype);
  const at::Tensor weight = (at::randn({V, C}, gen, at::TensorOptions().dtype(at::kFloat)) * 0.02).to(dtype);
  at::Tensor targets = at::randint(V, {N}, gen, at::TensorOptions().dtype(at::kLong));
  for (int64_t i = 0; i < N; i += 10) targets[i] = -100;  // prompt tokens

  const double baseline_mb = current_rss_mb();
  double first_s = 0, best_s = 1e30, best_cpu_s = 1e30, loss = 0;
  for (int i = 0; i < repeats; ++i) {
    at::Tensor hidden = hidden_data.clone().set_requires_grad(true);
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = cpu_seconds();
    const at::Tensor l = impl == "fused" ? freehold::kernels::linear_cross_entropy_fused(hidden, weight, targets)
                                         : freehold::kernels::linear_cross_entropy_reference(hidden, weight, targets, -100);
    l.backward();
    loss = l.item<double>();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best_cpu_s = std::min(best_cpu_s, cpu_seconds() - cpu_start);
    if (i == 0) first_s = s;
    best_s = std::min(best_s, s);
  }
  std::printf(
      "{\"op\": \"linear_cross_entropy\", \"impl\": \"%s\", \"tokens\": %lld, \"vocab\": %lld, \"hidden\": %lld, "
      "\"dtype\": \"%s\", \"repeats\": %d, \"first_s\": %.4f, \"best_s\": %.4f, \"best_cpu_s\": %.4f, \"extra_peak_mb\": %.1f, "
      "\"baseline_mb\": %.1f, \"loss\": %.6f}\n",
      impl.c_str(), static_cast<long long>(N), static_cast<long long>(V), static_cast<long long>(C), dtype_name.c_str(),
      repeats, first_s, best_s, best_cpu_s, peak_rss_mb() - baseline_mb, baseline_mb, loss);
  return 0;
}
