#include "trainer/flops.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/randn.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/error.h"
#include "kernels/cpu_gemm.h"
#include "kernels/rms_norm.h"  // fused_kernels_enabled

namespace freehold::trainer {

int64_t frozen_matmul_parameters(const io::ModelConfig& c) {
  const int64_t C = c.hidden_size, H = c.num_attention_heads, Hkv = c.num_key_value_heads, D = c.head_dim;
  const int64_t I = c.intermediate_size;
  const int64_t per_layer = C * H * D + 2 * C * Hkv * D + H * D * C + 3 * C * I;
  return c.num_hidden_layers * per_layer + c.vocab_size * C;
}

double training_flops_per_token(const io::ModelConfig& c, int64_t adapter_parameters, int64_t seq_len) {
  const double N = static_cast<double>(frozen_matmul_parameters(c));
  const double attention = 12.0 * static_cast<double>(c.num_hidden_layers) *
                           static_cast<double>(c.num_attention_heads) * static_cast<double>(c.head_dim) *
                           static_cast<double>(seq_len);
  return 4.0 * N + 6.0 * static_cast<double>(adapter_parameters) + attention;
}

PeakFlops matmul_peak_flops(c10::ScalarType dtype, const c10::Device& device, double seconds) {
  if (const char* env = std::getenv("FREEHOLD_PEAK_TFLOPS"); env != nullptr) {
    double tflops = 0;
    if (!absl::SimpleAtod(env, &tflops) || !(tflops > 0) || !std::isfinite(tflops)) {
      throw core::UsageError(absl::StrCat("FREEHOLD_PEAK_TFLOPS is \"", env, "\"; expected a positive number of "
                                          "TFLOP/s (or unset it to measure)"));
    }
    return {tflops * 1e12, "FREEHOLD_PEAK_TFLOPS"};
  }
  // 512³ multiply-adds on the CPU: large enough for the blocked kernels to reach their rate, small enough for ~30
  // repeats. A GPU needs 8192³ to fill its SMs, and a burst of launches between synchronizations (a copy of one
  // element back to the host) so that launch latency is not what is timed.
  const bool cpu = device.is_cpu();
  const int64_t n = cpu ? 512 : 8192;
  const int burst = cpu ? 1 : 5;
  // A private generator: the measurement must not move the default one, which LoRA dropout draws from.
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(0);
  const at::Tensor a = at::randn({n, n}, generator).to(dtype).to(device);
  const at::Tensor b = at::randn({n, n}, generator).to(dtype).to(device);
  at::Tensor c = kernels::gemm(a, b);  // warm-up: thread pool, packing buffers, GPU kernel selection
  auto wait = [&] {
    if (!cpu) (void)c.flatten().narrow(0, 0, 1).cpu();
  };
  wait();
  double best = 0;
  int repeats = 0;
  const auto start = std::chrono::steady_clock::now();
  // At least 10 repeats: on a shared machine the best of a few can all be slowed by other processes.
  while (repeats < 10 || std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < burst; ++i) c = kernels::gemm(a, b);
    wait();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt > 0) best = std::max(best, 2.0 * burst * n * n * n / dt);
    if (++repeats > 10000) break;
  }
  return {best, cpu ? absl::StrFormat("%s GEMM %dx%d %s, best of %d, %d threads",
                                      dtype == c10::kFloat && kernels::fused_kernels_enabled()
                                          ? kernels::cpu_gemm_path_name(kernels::cpu_gemm_path())
                                                           : "ATen",
                                      n, n, c10::toString(dtype), repeats, at::get_num_threads())
                    : absl::StrFormat("at::mm %dx%d %s on %s, best of %d bursts of %d", n, n, c10::toString(dtype),
                                      device.str(), repeats, burst)};
}

double model_flops_utilization(double tokens_per_s, double flops_per_token, double peak_flops_per_s) {
  if (!(peak_flops_per_s > 0)) return 0;
  return tokens_per_s * flops_per_token / peak_flops_per_s;
}

}  // namespace freehold::trainer
