// Fused kernels against their unfused ATen compositions on the CPU: time and peak memory of one op, forward and
// backward, in this process (bench/kernels/kernels_bench.py runs each variant in its own process so that peak
// RSS belongs to one variant). Prints one JSON line.
//
//   kernels_bench linear_cross_entropy fused|unfused TOKENS VOCAB HIDDEN fp32|bf16 REPEATS
//   kernels_bench rope fused|unfused|fused_copy|in_place|unfused_in_place B H T D fp32|bf16 REPEATS
//     x is (B, H, T, D) strided as the model's q.transpose(1, 2); the first three run forward + backward (fused_copy
//     makes x contiguous before the kernel), the in_place ones are the generation path (no gradient).
//   kernels_bench lora_group grouped|separate qkv|gate_up TOKENS fp32|bf16 REPEATS
//     SmolLM2-135M's projections reading one x (C 576; q 576, k/v 192; gate/up 1536), LoRA r 16 with fp32
//     adapters, no dropout, forward + backward (x needs a gradient, as in every layer but the first): one
//     lora_group_fused node against one lora_linear_fused per projection.
//   kernels_bench swiglu fused|unfused ROWS I fp32|bf16 REPEATS
//     silu(gate) * up of the MLP, gate and up (ROWS = B·T, I), forward + backward; graph_mb is what the forward
//     adds while its graph is alive (the output plus what the graph saves beyond gate and up).
//   kernels_bench attention fused|unfused B H H_KV T D REPEATS
//     causal self-attention in fp32, q (B, H, T, D) and k, v (B, H_KV, T, D) strided as the model's (B, T, ., D)
//     views: kernels/causal_attention.h's blocked kernel on oneDNN's GEMMs against ATen's
//     scaled_dot_product_attention; forward alone (no gradient) and forward + backward.
//   kernels_bench adamw fused|reference LAYERS REPEATS
//     one AdamW step (weight decay on) over SmolLM2-135M's r 16 all-linear adapters: LAYERS × 7 projections, A (16, in)
//     and B (out, 16) with C 576, kv 192, intermediate 1536 (LAYERS 30: 420 tensors, 4.9M parameters); the fused
//     one-pass kernel against the per-tensor ATen composition (adamw_step_reference).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/zeros.h>
#include <sys/resource.h>
#include <torch/csrc/autograd/autograd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/causal_attention.h"
#include "kernels/cpu_gemm.h"
#include "kernels/linear_cross_entropy.h"
#include "kernels/lora_group_fused.h"
#include "kernels/lora_linear_fused.h"
#include "kernels/rms_norm.h"  // set_fused_kernels_enabled
#include "kernels/rope.h"
#include "kernels/swiglu.h"

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
               "usage: kernels_bench linear_cross_entropy fused|unfused TOKENS VOCAB HIDDEN fp32|bf16 REPEATS\n"
               "       kernels_bench rope fused|unfused|fused_copy|in_place|unfused_in_place B H T D fp32|bf16 "
               "REPEATS\n"
               "       kernels_bench lora_group grouped|separate qkv|gate_up TOKENS fp32|bf16 REPEATS\n"
               "       kernels_bench swiglu fused|unfused ROWS I fp32|bf16 REPEATS\n"
               "       kernels_bench attention fused|unfused B H H_KV T D REPEATS\n"
               "       kernels_bench adamw fused|reference LAYERS REPEATS\n");
  return 2;
}

// RoPE: forward + backward of q's rotation, or the in-place rotation of generation; see the usage at the top.
int run_rope(int argc, char** argv) {
  const std::string impl = argc == 9 ? argv[2] : "";
  const bool in_place = impl == "in_place" || impl == "unfused_in_place";
  if (!in_place && impl != "fused" && impl != "unfused" && impl != "fused_copy") return usage();
  const int64_t B = std::atoll(argv[3]), H = std::atoll(argv[4]), T = std::atoll(argv[5]), D = std::atoll(argv[6]);
  const std::string dtype_name = argv[7];
  const int repeats = std::atoi(argv[8]);
  if (B < 1 || H < 1 || T < 1 || D < 2 || D % 2 != 0 || repeats < 1 || (dtype_name != "fp32" && dtype_name != "bf16")) {
    return usage();
  }
  const at::ScalarType dtype = dtype_name == "fp32" ? at::kFloat : at::kBFloat16;
  namespace k = freehold::kernels;
  k::set_fused_kernels_enabled(impl != "unfused" && impl != "unfused_in_place");

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor q_data = at::randn({B, T, H, D}, gen, f32).to(dtype);  // (B, T, H, D), as the projection gives it
  const at::Tensor dy = at::randn({B, T, H, D}, gen, f32).to(dtype).transpose(1, 2);
  const at::Tensor angles = at::randn({B, T, D}, gen, f32);
  const at::Tensor cos = angles.cos().to(dtype), sin = angles.sin().to(dtype);

  const double baseline_mb = current_rss_mb();
  double first_s = 0, best_s = 1e30, best_cpu_s = 1e30, checksum = 0;
  for (int i = 0; i < repeats; ++i) {
    at::Tensor q = q_data.clone();
    if (!in_place) q.set_requires_grad(true);
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = cpu_seconds();
    if (in_place) {
      at::NoGradGuard no_grad;
      k::rope_(q.transpose(1, 2), cos, sin);
    } else {
      at::Tensor x = q.transpose(1, 2);  // (B, H, T, D), strided
      if (impl == "fused_copy") x = x.contiguous();
      const at::Tensor y = k::rope(x, cos, sin);
      y.backward(dy);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best_cpu_s = std::min(best_cpu_s, cpu_seconds() - cpu_start);
    checksum = (in_place ? q : q.grad()).to(at::kFloat).sum().item<double>();  // outside the timing
    if (i == 0) first_s = s;
    best_s = std::min(best_s, s);
  }
  std::printf(
      "{\"op\": \"rope\", \"impl\": \"%s\", \"B\": %lld, \"H\": %lld, \"T\": %lld, \"D\": %lld, \"dtype\": \"%s\", "
      "\"repeats\": %d, \"first_s\": %.5f, \"best_s\": %.5f, \"best_cpu_s\": %.5f, \"extra_peak_mb\": %.1f, "
      "\"baseline_mb\": %.1f, \"checksum\": %.6f}\n",
      impl.c_str(), static_cast<long long>(B), static_cast<long long>(H), static_cast<long long>(T),
      static_cast<long long>(D), dtype_name.c_str(), repeats, first_s, best_s, best_cpu_s, peak_rss_mb() - baseline_mb,
      baseline_mb, checksum);
  return 0;
}

// LoRA group: forward + backward of q/k/v or gate/up; see the usage at the top.
int run_lora_group(int argc, char** argv) {
  const std::string impl = argc == 7 ? argv[2] : "", set = argc == 7 ? argv[3] : "";
  if ((impl != "grouped" && impl != "separate") || (set != "qkv" && set != "gate_up")) return usage();
  const int64_t N = std::atoll(argv[4]);
  const std::string dtype_name = argv[5];
  const int repeats = std::atoi(argv[6]);
  if (N < 1 || repeats < 1 || (dtype_name != "fp32" && dtype_name != "bf16")) return usage();
  const at::ScalarType dtype = dtype_name == "fp32" ? at::kFloat : at::kBFloat16;
  namespace k = freehold::kernels;
  constexpr int64_t C = 576, r = 16;
  const std::vector<int64_t> outs = set == "qkv" ? std::vector<int64_t>{576, 192, 192} : std::vector<int64_t>{1536, 1536};

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor x_data = at::randn({N, C}, gen, f32).to(dtype);  // (T, C): B·T tokens of one layer's input
  std::vector<k::LoraGroupMember> members;
  std::vector<at::Tensor> dys;
  for (int64_t out : outs) {
    members.push_back({(at::randn({out, C}, gen, f32) * 0.02).to(dtype), at::Tensor(),
                       (at::randn({r, C}, gen, f32) * 0.02).set_requires_grad(true),
                       (at::randn({out, r}, gen, f32) * 0.02).set_requires_grad(true), 2.0});
    dys.push_back(at::randn({N, out}, gen, f32).to(dtype));
  }

  const double baseline_mb = current_rss_mb();
  double first_s = 0, best_s = 1e30, best_cpu_s = 1e30, checksum = 0;
  for (int i = 0; i < repeats; ++i) {
    at::Tensor x = x_data.clone().set_requires_grad(true);
    for (k::LoraGroupMember& m : members) m.lora_A.mutable_grad() = at::Tensor(), m.lora_B.mutable_grad() = at::Tensor();
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = cpu_seconds();
    std::vector<at::Tensor> ys;
    if (impl == "grouped") {
      ys = k::lora_group_fused(x, members);
    } else {
      for (const k::LoraGroupMember& m : members) {
        ys.push_back(k::lora_linear_fused(x, m.weight, m.bias, m.lora_A, m.lora_B, m.scale, 0.0, true));
      }
    }
    torch::autograd::backward(ys, dys);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best_cpu_s = std::min(best_cpu_s, cpu_seconds() - cpu_start);
    checksum = x.grad().to(at::kFloat).sum().item<double>() + members[0].lora_A.grad().sum().item<double>();
    if (i == 0) first_s = s;
    best_s = std::min(best_s, s);
  }
  std::printf(
      "{\"op\": \"lora_group\", \"impl\": \"%s\", \"set\": \"%s\", \"tokens\": %lld, \"hidden\": %lld, \"r\": %lld, "
      "\"dtype\": \"%s\", \"repeats\": %d, \"first_s\": %.5f, \"best_s\": %.5f, \"best_cpu_s\": %.5f, "
      "\"extra_peak_mb\": %.1f, \"baseline_mb\": %.1f, \"checksum\": %.6f}\n",
      impl.c_str(), set.c_str(), static_cast<long long>(N), static_cast<long long>(C), static_cast<long long>(r),
      dtype_name.c_str(), repeats, first_s, best_s, best_cpu_s, peak_rss_mb() - baseline_mb, baseline_mb, checksum);
  return 0;
}

// SwiGLU: forward + backward of silu(gate) * up through kernels::swiglu, fused or (fused kernels off) the reference.
int run_swiglu(int argc, char** argv) {
  const std::string impl = argc == 7 ? argv[2] : "";
  if (impl != "fused" && impl != "unfused") return usage();
  const int64_t rows = std::atoll(argv[3]), I = std::atoll(argv[4]);
  const std::string dtype_name = argv[5];
  const int repeats = std::atoi(argv[6]);
  if (rows < 1 || I < 1 || repeats < 1 || (dtype_name != "fp32" && dtype_name != "bf16")) return usage();
  const at::ScalarType dtype = dtype_name == "fp32" ? at::kFloat : at::kBFloat16;
  namespace k = freehold::kernels;
  k::set_fused_kernels_enabled(impl == "fused");

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor gate_data = at::randn({rows, I}, gen, f32).to(dtype);
  const at::Tensor up_data = at::randn({rows, I}, gen, f32).to(dtype);
  const at::Tensor dy = at::randn({rows, I}, gen, f32).to(dtype);

  const double baseline_mb = current_rss_mb();
  double first_s = 0, best_s = 1e30, best_cpu_s = 1e30, graph_mb = 0, checksum = 0;
  for (int i = 0; i < repeats; ++i) {
    at::Tensor gate = gate_data.clone().set_requires_grad(true), up = up_data.clone().set_requires_grad(true);
    const double before_mb = current_rss_mb();
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = cpu_seconds();
    const at::Tensor y = k::swiglu(gate, up);
    graph_mb = std::max(graph_mb, current_rss_mb() - before_mb);
    y.backward(dy);
    checksum = gate.grad().to(at::kFloat).sum().item<double>() + up.grad().to(at::kFloat).sum().item<double>();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best_cpu_s = std::min(best_cpu_s, cpu_seconds() - cpu_start);
    if (i == 0) first_s = s;
    best_s = std::min(best_s, s);
  }
  std::printf(
      "{\"op\": \"swiglu\", \"impl\": \"%s\", \"rows\": %lld, \"I\": %lld, \"dtype\": \"%s\", \"repeats\": %d, "
      "\"first_s\": %.5f, \"best_s\": %.5f, \"best_cpu_s\": %.5f, \"graph_mb\": %.1f, \"extra_peak_mb\": %.1f, "
      "\"baseline_mb\": %.1f, \"checksum\": %.6f}\n",
      impl.c_str(), static_cast<long long>(rows), static_cast<long long>(I), dtype_name.c_str(), repeats, first_s,
      best_s, best_cpu_s, graph_mb, peak_rss_mb() - baseline_mb, baseline_mb, checksum);
  return 0;
}

// Causal attention in fp32: the blocked kernel against ATen's; see the usage at the top.
int run_attention(int argc, char** argv) {
  const std::string impl = argc == 9 ? argv[2] : "";
  if (impl != "fused" && impl != "unfused") return usage();
  const int64_t B = std::atoll(argv[3]), H = std::atoll(argv[4]), Hkv = std::atoll(argv[5]), T = std::atoll(argv[6]),
                D = std::atoll(argv[7]);
  const int repeats = argc == 9 ? std::atoi(argv[8]) : 0;
  if (B < 1 || H < 1 || Hkv < 1 || H % Hkv != 0 || T < 1 || D < 1 || repeats < 1) return usage();
  namespace k = freehold::kernels;
  if (impl == "fused" && !k::onednn_gemm_available()) {
    std::fprintf(stderr, "kernels_bench attention fused: this CPU cannot run oneDNN's fp32 matmul (AVX-512)\n");
    return 1;
  }
  k::set_cpu_gemm_path(impl == "fused" ? k::CpuGemmPath::kOneDnn : k::CpuGemmPath::kBlas);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor q_data = at::randn({B, T, H, D}, gen, f32), k_data = at::randn({B, T, Hkv, D}, gen, f32);
  const at::Tensor v_data = at::randn({B, T, Hkv, D}, gen, f32), dout = at::randn({B, H, T, D}, gen, f32);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const double baseline_mb = current_rss_mb();
  double best_forward_s = 1e30, best_s = 1e30, best_cpu_s = 1e30, checksum = 0;
  for (int i = 0; i < repeats; ++i) {
    at::Tensor q = q_data.transpose(1, 2).set_requires_grad(true), kk = k_data.transpose(1, 2).set_requires_grad(true);
    at::Tensor v = v_data.transpose(1, 2).set_requires_grad(true);
    {
      at::NoGradGuard no_grad;
      const auto start = std::chrono::steady_clock::now();
      k::causal_attention(q, kk, v, scale);
      best_forward_s = std::min(best_forward_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = cpu_seconds();
    const at::Tensor out = k::causal_attention(q, kk, v, scale);
    const auto grads = torch::autograd::grad({out}, {q, kk, v}, {dout});
    best_s = std::min(best_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    best_cpu_s = std::min(best_cpu_s, cpu_seconds() - cpu_start);
    checksum = grads[0].sum().item<double>() + grads[1].sum().item<double>() + grads[2].sum().item<double>();
  }
  // Causal: half the (T, T) scores, two GEMMs of 2·T·T·D FLOPs each per head forward, about 2.5x that backward.
  const double forward_flops = 2.0 * static_cast<double>(B * H) * static_cast<double>(T * T) * static_cast<double>(D);
  std::printf(
      "{\"op\": \"attention\", \"impl\": \"%s\", \"B\": %lld, \"H\": %lld, \"H_kv\": %lld, \"T\": %lld, "
      "\"D\": %lld, \"repeats\": %d, \"best_forward_s\": %.5f, \"best_s\": %.5f, \"best_cpu_s\": %.5f, "
      "\"forward_gflop_per_s\": %.1f, \"extra_peak_mb\": %.1f, \"baseline_mb\": %.1f, \"checksum\": %.6f}\n",
      impl.c_str(), static_cast<long long>(B), static_cast<long long>(H), static_cast<long long>(Hkv),
      static_cast<long long>(T), static_cast<long long>(D), repeats, best_forward_s, best_s, best_cpu_s,
      forward_flops / best_forward_s * 1e-9, peak_rss_mb() - baseline_mb, baseline_mb, checksum);
  return 0;
}

// AdamW: one optimizer step over an adapter set; see the usage at the top.
int run_adamw(int argc, char** argv) {
  const std::string impl = argc == 5 ? argv[2] : "";
  if (impl != "fused" && impl != "reference") return usage();
  const int64_t layers = std::atoll(argv[3]);
  const int repeats = std::atoi(argv[4]);
  if (layers < 1 || repeats < 1) return usage();
  namespace k = freehold::kernels;
  const int64_t C = 576, kv = 192, I = 1536, r = 16;
  const int64_t in_out[7][2] = {{C, C}, {C, kv}, {C, kv}, {C, C}, {C, I}, {C, I}, {I, C}};  // q k v o gate up down
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs;
  std::vector<double> lrs;
  int64_t numel = 0;
  for (int64_t l = 0; l < layers; ++l) {
    for (const auto& [in, out] : in_out) {
      for (const std::vector<int64_t>& shape : {std::vector<int64_t>{r, in}, std::vector<int64_t>{out, r}}) {
        params.push_back(at::randn(shape, gen, f32) * 0.02);
        grads.push_back(at::randn(shape, gen, f32) * 1e-3);
        exp_avgs.push_back(at::zeros(shape, f32));
        exp_avg_sqs.push_back(at::zeros(shape, f32));
        lrs.push_back(2e-4);
        numel += params.back().numel();
      }
    }
  }
  const k::AdamWHyperparameters hyper{0.9, 0.999, 1e-8, 0.01};
  const double baseline_mb = current_rss_mb();
  double first_s = 0, best_s = 1e30, best_cpu_s = 1e30;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = cpu_seconds();
    if (impl == "fused") {
      k::adamw_step_fused(params, grads, exp_avgs, exp_avg_sqs, lrs, hyper, i + 1);
    } else {
      k::adamw_step_reference(params, grads, exp_avgs, exp_avg_sqs, lrs, hyper, i + 1);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best_cpu_s = std::min(best_cpu_s, cpu_seconds() - cpu_start);
    if (i == 0) first_s = s;
    best_s = std::min(best_s, s);
  }
  double checksum = 0;
  for (const at::Tensor& p : params) checksum += p.sum().item<double>();
  std::printf(
      "{\"op\": \"adamw\", \"impl\": \"%s\", \"layers\": %lld, \"tensors\": %zu, \"params\": %lld, "
      "\"repeats\": %d, \"first_s\": %.5f, \"best_s\": %.5f, \"best_cpu_s\": %.5f, \"extra_peak_mb\": %.1f, "
      "\"baseline_mb\": %.1f, \"arithmetic\": \"%s\", \"checksum\": %.9f}\n",
      impl.c_str(), static_cast<long long>(layers), params.size(), static_cast<long long>(numel), repeats, first_s,
      best_s, best_cpu_s, peak_rss_mb() - baseline_mb, baseline_mb, k::adamw_cpu_arithmetic().description.c_str(),
      checksum);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "rope") return run_rope(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "lora_group") return run_lora_group(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "swiglu") return run_swiglu(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "adamw") return run_adamw(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "attention") return run_attention(argc, argv);
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
