// The CPU fp32 GEMM path: measured once, or fixed by FREEHOLD_FP32_GEMM; see cpu_gemm.h.
#include "kernels/cpu_gemm.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/randn.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "kernels/interleaved_timing.h"
#include "kernels/rms_norm.h"  // fused_kernels_enabled

// ATen's oneDNN matmul: result = beta · result + alpha · mat1·mat2 for 2-D (or batched 3-D) CPU tensors of one
// dtype (fp32, bf16, fp16), contiguous or transposed, result contiguous. Declared in
// aten/src/ATen/native/mkldnn/Matmul.h, which the torch wheel does not install; the function is exported from
// libtorch_cpu (TORCH_API), and torch is pinned (scripts/python-requirements.txt), so a changed signature fails the
// link rather than a run.
namespace at::native {
TORCH_API void mkldnn_matmul(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result, float beta,
                             float alpha);
}  // namespace at::native

namespace freehold::kernels {
namespace {

// oneDNN must beat BLAS by this factor in the measurement to be chosen.
constexpr double kOneDnnMargin = 1.2;

std::mutex g_mutex;
std::optional<CpuGemmPath> g_path;

// Whether oneDNN's matmul takes these operands as they are: contiguous, or a transposed contiguous matrix.
bool plain_or_transposed(const at::Tensor& t) {
  return t.is_contiguous() || (t.stride(0) == 1 && t.stride(1) == std::max<int64_t>(t.size(0), 1));
}

void onednn_gemm_out(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  at::native::mkldnn_matmul(plain_or_transposed(a) ? a : a.contiguous(), plain_or_transposed(b) ? b : b.contiguous(),
                            out, /*beta=*/0.0f, /*alpha=*/1.0f);
}

CpuGemmPath measure(int64_t C) {
  if (!at::hasMKLDNN()) return CpuGemmPath::kBlas;
  at::NoGradGuard no_grad;
  C = std::clamp<int64_t>(C, 256, 2048);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4321);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor x = at::randn({256, C}, gen, f32), w = at::randn({C, C}, gen, f32);
  const at::Tensor y = at::empty({256, C}, f32);
  at::Tensor y_out = y;
  const auto blas = [&] { at::mm_out(y_out, x, w.t()); };
  const auto onednn = [&] { onednn_gemm_out(y, x, w.t()); };
  const auto [t_blas, t_onednn] = best_interleaved_seconds(blas, onednn);
  const CpuGemmPath path = t_blas > kOneDnnMargin * t_onednn ? CpuGemmPath::kOneDnn : CpuGemmPath::kBlas;
  core::log_info("fp32 CPU GEMMs: ", std::string(cpu_gemm_path_name(path)), " (a (256, ", C, ") x (", C, ", ", C,
                 ") GEMM: BLAS ", t_blas * 1e3, " ms, oneDNN ", t_onednn * 1e3,
                 " ms; FREEHOLD_FP32_GEMM=onednn|blas fixes it)");
  return path;
}

}  // namespace

std::string_view cpu_gemm_path_name(CpuGemmPath path) { return path == CpuGemmPath::kOneDnn ? "onednn" : "blas"; }

std::optional<CpuGemmPath> cpu_gemm_path_from_name(std::string_view name) {
  if (name == "blas") return CpuGemmPath::kBlas;
  if (name == "onednn") return CpuGemmPath::kOneDnn;
  return std::nullopt;
}

bool onednn_gemm_available() {
#if defined(__x86_64__)
  // mkldnn_matmul refuses fp32 on x86 without AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT; ask for the first only.
  static const bool available = at::hasMKLDNN() && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return available;
#else
  return false;  // measured on x86 only
#endif
}

CpuGemmPath cpu_gemm_path(int64_t C) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (g_path) return *g_path;
  const char* env = std::getenv("FREEHOLD_FP32_GEMM");
  const std::string value = env != nullptr ? env : "";
  if (value.empty()) {
    // Never a timing by default: a timing near the margin would let two runs of one config pick differently, and
    // their losses differ in rounding.
    g_path = onednn_gemm_available() ? CpuGemmPath::kOneDnn : CpuGemmPath::kBlas;
  } else if (value == "auto") {
    g_path = onednn_gemm_available() ? measure(C) : CpuGemmPath::kBlas;
  } else {
    FH_CHECK(cpu_gemm_path_from_name(value).has_value(), "FREEHOLD_FP32_GEMM=", value,
             ": accepted values are onednn (oneDNN's matmul; the default where the CPU has AVX-512), blas (ATen's "
             "BLAS, MKL) and auto (time both at start-up and take the faster)");
    FH_CHECK(value != "onednn" || onednn_gemm_available(), "FREEHOLD_FP32_GEMM=onednn: ",
             at::hasMKLDNN() ? "this CPU lacks AVX-512 (BW, VL and DQ), which oneDNN's fp32 matmul in libtorch needs"
                             : "this libtorch was built without oneDNN",
             "; use blas");
    g_path = cpu_gemm_path_from_name(value);
  }
  return *g_path;
}

CpuGemmPath set_cpu_gemm_path(CpuGemmPath path) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (path == CpuGemmPath::kOneDnn && !onednn_gemm_available()) {
    core::log_warning("fp32 GEMMs: oneDNN was asked for (by rank 0 or the checkpoint), but this CPU cannot run "
                      "oneDNN's fp32 matmul (no AVX-512); BLAS runs them, so results differ in rounding");
    path = CpuGemmPath::kBlas;
  }
  g_path = path;
  return path;
}

void reset_cpu_gemm_path_for_testing() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_path.reset();
}

const at::Tensor& gemm_out(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, int64_t C) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2 && a.size(1) == b.size(0) && out.size(0) == a.size(0) &&
                  out.size(1) == b.size(1),
              "gemm_out: a ", a.sizes(), " · b ", b.sizes(), " into out ", out.sizes());
  const bool onednn_eligible = a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat &&
                               out.scalar_type() == at::kFloat && a.device().is_cpu() && b.device().is_cpu() &&
                               out.device().is_cpu() && out.is_contiguous() && a.numel() > 0 && b.numel() > 0 &&
                               fused_kernels_enabled();
  if (onednn_eligible && cpu_gemm_path(C) == CpuGemmPath::kOneDnn) {
    onednn_gemm_out(out, a, b);
  } else {
    at::Tensor result = out;  // a handle to the same tensor: mm_out takes a mutable reference
    at::mm_out(result, a, b);
  }
  return out;
}

at::Tensor gemm(const at::Tensor& a, const at::Tensor& b, int64_t C) {
  const at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options().memory_format(at::MemoryFormat::Contiguous));
  gemm_out(out, a, b, C);
  return out;
}

at::Tensor gemm_linear(const at::Tensor& x, const at::Tensor& weight) {
  const int64_t in = weight.size(1), out = weight.size(0);
  std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end());
  sizes.back() = out;
  return gemm(x.reshape({-1, in}), weight.t(), in).view(sizes);
}

}  // namespace freehold::kernels
