// Model FLOPs utilisation (MFU) of a LoRA training run: the FLOPs a step needs by the model's arithmetic,
// divided by time and by the machine's matmul peak. Written to metrics.jsonl ("mfu") and the progress line.
//
// Training FLOPs per token (multiply-add = 2 FLOPs), for a decoder of L layers, H query heads of size D:
//
//   flops_per_token = 4 · N  +  6 · N_lora  +  12 · L · H · D · T
//
//   N       frozen matmul weights: per layer q, k, v, o, gate, up, down (C·H·D + 2·C·H_kv·D + H·D·C + 3·C·I)
//           plus the LM head (V·C, counted even when tied to the embedding, because it is a matmul). The forward
//           costs 2N and the backward 2N for the input gradients only: frozen weights get no weight gradient.
//   N_lora  trainable adapter parameters (lora_A, lora_B; DoRA's magnitudes are elementwise and negligible):
//           2 forward + 2 input gradient + 2 weight gradient.
//   T       the sequence length of the micro-batch. Attention's scores (Q Kᵀ) and values (A V) cost 4·H·D·T per
//           token and layer forward, twice that backward; the causal mask is not subtracted (PaLM's convention).
//
// Not counted: norms, RoPE, SwiGLU, softmax and the loss (elementwise), DoRA's weight norm, and the forward that
// activation checkpointing recomputes (that is hardware FLOPs, not model FLOPs). The same formula in Python:
//   4 * N + 6 * N_lora + 12 * L * H * D * T         (docs/benchmarks.md, "MFU")
//
// The peak is measured at start-up: the best rate of a square GEMM in the compute dtype over ~0.3 s, on the
// threads LibTorch uses, through the GEMM path the run itself uses (kernels::gemm: oneDNN or BLAS for fp32 on the
// CPU, kernels/cpu_gemm.h; at::mm otherwise). FREEHOLD_PEAK_TFLOPS (a number, TFLOP/s) replaces the measurement, e.g. with a GPU's
// datasheet figure.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

#include "io/hf_config.h"

namespace freehold::trainer {

// N: the frozen matmul weights of one token's forward (see above).
int64_t frozen_matmul_parameters(const io::ModelConfig& config);

// flops_per_token = 4·N + 6·N_lora + 12·L·H·D·T.
double training_flops_per_token(const io::ModelConfig& config, int64_t adapter_parameters, int64_t seq_len);

struct PeakFlops {
  double flops_per_s = 0;  // > 0
  std::string source;      // how it was obtained, for the log line
};

// FREEHOLD_PEAK_TFLOPS when set (a positive number, else a UsageError naming the value), otherwise the
// GEMM microbenchmark in `dtype` on `device` for about `seconds`.
PeakFlops matmul_peak_flops(c10::ScalarType dtype, const c10::Device& device = c10::Device(c10::kCPU),
                            double seconds = 0.3);

// tokens_per_s · flops_per_token / peak_flops_per_s; 0 when the peak is not positive.
double model_flops_utilization(double tokens_per_s, double flops_per_token, double peak_flops_per_s);

}  // namespace freehold::trainer
