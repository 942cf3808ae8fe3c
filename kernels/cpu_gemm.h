// Which library runs freehold's large fp32 GEMMs on the CPU: ATen's BLAS (MKL in the torch wheel) or oneDNN (also
// inside libtorch). MKL chooses its kernels by CPU vendor: on AMD Zen it runs code paths that leave AVX-512 unused
// (measured on one Zen 5 core: 98-112 GFLOP/s), while oneDNN chooses by instruction set (242-250 GFLOP/s on the same
// core and shapes). On Intel CPUs the two are close. Both compute in fp32 and accumulate in fp32 (oneDNN's strict
// fp32 math: no bf16 or tf32 shortcut unless torch's float32 matmul precision asks for one), so they differ in
// summation order only. oneDNN is the default where libtorch's oneDNN matmul runs fp32 (x86 with AVX-512), BLAS
// elsewhere; FREEHOLD_FP32_GEMM overrides. Never a timing by default: it would make two runs of one config on a loaded
// machine differ in rounding. oneDNN's generated f32 GEMM kernels must not be interrupted by a handled signal
// (core/stop_signals.h): the `freehold` binary keeps SIGUSR1/SIGTERM on a thread of their own.
//
//   blas    at::mm / at::linear
//   onednn  ATen's oneDNN matmul (at::native::mkldnn_matmul), written into the output in place
//
// Used by the frozen base GEMMs (kernels/half_gemm.h: frozen_linear, frozen_linear_input_grad), the LoRA nodes'
// low-rank GEMMs (kernels/lora_linear_fused.h, lora_group_fused.h; oneDNN was 2x faster on those skinny shapes too)
// and the linear + cross-entropy's chunk GEMMs, on CPU fp32 tensors while the fused kernels are enabled; everything else (CUDA,
// other dtypes, `model.fused_kernels: off`) is at::mm as before.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>

namespace freehold::kernels {

enum class CpuGemmPath { kBlas, kOneDnn };

std::string_view cpu_gemm_path_name(CpuGemmPath path);  // "blas" | "onednn"
std::optional<CpuGemmPath> cpu_gemm_path_from_name(std::string_view name);

// The path: FREEHOLD_FP32_GEMM=onednn|blas when set; =auto measures once (both timed on a (256, C)·(C, C)ᵀ fp32
// GEMM, interleaved, oneDNN chosen only when at least 1.2x faster; logged); anything else is an error naming the
// variable and the value, as is onednn where it is not available. Unset: onednn where available, else blas.
// Thread-safe.
CpuGemmPath cpu_gemm_path(int64_t C = 1024);

// Whether libtorch's oneDNN matmul takes fp32 on this CPU (built with oneDNN; x86 with AVX-512 BW, VL and DQ).
bool onednn_gemm_available();

// Tests, rank 0's choice and the trainer's resume: fix the path (replaces the measurement and the environment).
// Returns the path set: blas, with a warning, where oneDNN is asked for but not available.
CpuGemmPath set_cpu_gemm_path(CpuGemmPath path);
// Tests only: forget the chosen path, so the next call reads FREEHOLD_FP32_GEMM again.
void reset_cpu_gemm_path_for_testing();

// out = a·b for 2-D a (M, K), b (K, N), out (M, N) contiguous, all of one dtype and device; a and b may be
// transposed views (b = weight.t() reads the weight in place). CPU fp32 with the fused kernels enabled takes the
// chosen path (`C` sizes its measurement), anything else at::mm_out. Returns out.
const at::Tensor& gemm_out(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, int64_t C = 1024);

// a·b as a new contiguous (M, N) tensor, by gemm_out.
at::Tensor gemm(const at::Tensor& a, const at::Tensor& b, int64_t C = 1024);

// x·weightᵀ for x (..., in) and weight (out, in) → (..., out), by gemm (at::linear without a bias).
at::Tensor gemm_linear(const at::Tensor& x, const at::Tensor& weight);

}  // namespace freehold::kernels
