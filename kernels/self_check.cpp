// The fused kernels' start-up self-check; see self_check.h.
#include "kernels/self_check.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/autograd.h>

#include <map>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "kernels/adamw.h"
#include "kernels/causal_attention.h"
#include "kernels/linear_cross_entropy.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"

namespace freehold::kernels {
namespace {

std::mutex g_mutex;
std::map<std::pair<std::string, at::ScalarType>, bool> g_cache;
std::string g_force_mismatch;

at::Tensor seeded(std::vector<int64_t> shape, uint64_t seed, at::ScalarType dtype, const at::Device& device) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(dtype).to(device);
}

// Empty when max |actual − expected| − (atol + rtol·|expected|) <= 0, else a line naming `what`.
std::string compare(const std::string& what, const at::Tensor& actual, const at::Tensor& expected, double rtol,
                    double atol) {
  const at::Tensor a = actual.detach().to(at::kFloat).cpu(), e = expected.detach().to(at::kFloat).cpu();
  const double excess = ((a - e).abs() - (atol + rtol * e.abs())).max().item<double>();
  const double worst = (a - e).abs().max().item<double>();
  if (excess <= 0) return "";  // NaN compares false: a NaN anywhere fails
  return absl::StrCat(what, ": max |fused - reference| = ", worst, " exceeds atol ", atol, " + rtol ", rtol,
                      " x |reference|");
}

}  // namespace

SelfCheckReport run_kernel_self_check(const at::Device& device, at::ScalarType dtype, const std::string& force_mismatch) {
  SelfCheckReport report;
  const bool fp32 = dtype == at::kFloat;
  const double rtol = fp32 ? 1e-4 : 3e-2, atol = fp32 ? 1e-5 : 3e-3;
  const auto add = [&](std::string line) {
    if (!line.empty()) report.failures.push_back(std::move(line));
  };
  const auto perturb = [&](const char* name, at::Tensor t) {
    return force_mismatch == name ? (t.detach() * 1.5 + 1.0) : t;
  };

  {  // linear_cross_entropy: 37 tokens, V = 1031 over 5-row chunks, a quarter of the rows ignored.
    const int64_t N = 37, C = 32, V = 1031;
    at::AutoGradMode grad_on(true);
    const at::Tensor hidden = seeded({N, C}, 1, dtype, device);
    const at::Tensor weight = (seeded({V, C}, 2, at::kFloat, device) * 0.5).to(dtype);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
    at::Tensor targets = at::randint(V, {N}, gen, at::TensorOptions().dtype(at::kLong));
    for (int64_t i = 0; i < N; i += 4) targets[i] = -100;
    targets = targets.to(device);
    at::Tensor h_ref = hidden.clone().set_requires_grad(true), h = hidden.clone().set_requires_grad(true);
    const at::Tensor ref = linear_cross_entropy_reference(h_ref, weight, targets, -100);
    at::Tensor got;
    try {
      got = linear_cross_entropy_fused(h, weight, targets, {-100, 5 * V * hidden.element_size()});
      ref.backward();
      got.backward();
      add(compare("linear_cross_entropy loss", perturb("linear_cross_entropy", got), ref, rtol, atol));
      add(compare("linear_cross_entropy d hidden", h.grad(), h_ref.grad(), rtol, atol));
    } catch (const c10::Error& e) {
      add(absl::StrCat("linear_cross_entropy: ", e.what_without_backtrace()));
    }
  }
  {  // rms_norm: the fused forward, and the fused backward against the reference's gradients.
    const at::Tensor x = seeded({19, 989}, 4, dtype, device);
    const at::Tensor w = seeded({989}, 5, dtype, device);
    const at::Tensor dy = seeded({19, 989}, 6, dtype, device);
    try {
      {
        at::NoGradGuard no_grad;
        add(compare("rms_norm", perturb("rms_norm", rms_norm(x, w, 1e-6)), rms_norm_reference(x, w, 1e-6), rtol,
                    atol));
      }
      at::AutoGradMode grad_on(true);
      auto [dx, dw] = rms_norm_backward(x, w, dy, 1e-6);
      at::Tensor x_ref = x.clone().set_requires_grad(true), w_ref = w.clone().set_requires_grad(true);
      rms_norm_reference(x_ref, w_ref, 1e-6).backward(dy);
      // dweight sums 19 rows: its tolerance scales with them.
      add(compare("rms_norm dx", perturb("rms_norm_backward", dx), x_ref.grad(), rtol, atol));
      add(compare("rms_norm dweight", dw, w_ref.grad(), rtol, atol * 19));
    } catch (const c10::Error& e) {
      add(absl::StrCat("rms_norm: ", e.what_without_backtrace()));
    }
  }
  {  // rope: the fused rotation of a strided x (the model's q.transpose(1, 2)) and its backward (the transpose).
    const at::Tensor x = seeded({2, 7, 3, 14}, 7, dtype, device).transpose(1, 2);  // (B, H, T, D) = (2, 3, 7, 14)
    const at::Tensor cos = seeded({2, 7, 14}, 8, dtype, device), sin = seeded({2, 7, 14}, 9, dtype, device);
    const at::Tensor dy = seeded({2, 3, 7, 14}, 10, dtype, device);
    try {
      {
        at::NoGradGuard no_grad;
        add(compare("rope", perturb("rope", rope(x, cos, sin)), rope_reference(x, cos, sin), rtol, atol));
      }
      at::AutoGradMode grad_on(true);
      at::Tensor x_ref = x.clone().set_requires_grad(true);
      rope_reference(x_ref, cos, sin).backward(dy);
      add(compare("rope dx", perturb("rope_backward", rope_backward(dy, cos, sin)), x_ref.grad(), rtol, atol));
    } catch (const c10::Error& e) {
      add(absl::StrCat("rope: ", e.what_without_backtrace()));
    }
  }
  {  // swiglu: the fused silu(gate) * up, and its backward (d gate, d up) against the reference's gradients.
    const at::Tensor gate = seeded({19, 989}, 11, dtype, device), up = seeded({19, 989}, 12, dtype, device);
    const at::Tensor dy = seeded({19, 989}, 13, dtype, device);
    try {
      {
        at::NoGradGuard no_grad;
        add(compare("swiglu", perturb("swiglu", swiglu(gate, up)), swiglu_reference(gate, up), rtol, atol));
      }
      at::AutoGradMode grad_on(true);
      const auto [d_gate, d_up] = swiglu_backward(gate, up, dy);
      at::Tensor gate_ref = gate.clone().set_requires_grad(true), up_ref = up.clone().set_requires_grad(true);
      swiglu_reference(gate_ref, up_ref).backward(dy);
      add(compare("swiglu d gate", perturb("swiglu_backward", d_gate), gate_ref.grad(), rtol, atol));
      add(compare("swiglu d up", d_up, up_ref.grad(), rtol, atol));
    } catch (const c10::Error& e) {
      add(absl::StrCat("swiglu: ", e.what_without_backtrace()));
    }
  }
  {  // causal_attention: 3 query blocks (the last partial), GQA groups of 2, forward and the three gradients. Where
     // the blocked kernel does not apply (16-bit, BLAS GEMMs, CUDA) it is the reference and this compares it to itself.
    const int64_t T = 2 * kAttentionBlockRows + 45;
    const at::Tensor q = seeded({1, 4, T, 16}, 30, dtype, device), k = seeded({1, 2, T, 16}, 31, dtype, device);
    const at::Tensor v = seeded({1, 2, T, 16}, 32, dtype, device), dy = seeded({1, 4, T, 16}, 33, dtype, device);
    try {
      at::AutoGradMode grad_on(true);
      at::Tensor q_ref = q.clone().set_requires_grad(true), k_ref = k.clone().set_requires_grad(true);
      at::Tensor v_ref = v.clone().set_requires_grad(true);
      at::Tensor q_got = q.clone().set_requires_grad(true), k_got = k.clone().set_requires_grad(true);
      at::Tensor v_got = v.clone().set_requires_grad(true);
      const at::Tensor ref = causal_attention_reference(q_ref, k_ref, v_ref, 0.25);
      const at::Tensor got = causal_attention(q_got, k_got, v_got, 0.25);
      ref.backward(dy);
      got.backward(dy);
      add(compare("causal_attention", perturb("causal_attention", got.detach()), ref.detach(), rtol, atol));
      add(compare("causal_attention d q", q_got.grad(), q_ref.grad(), rtol, atol));
      add(compare("causal_attention d k", k_got.grad(), k_ref.grad(), rtol, atol));
      add(compare("causal_attention d v", v_got.grad(), v_ref.grad(), rtol, atol));
    } catch (const c10::Error& e) {
      add(absl::StrCat("causal_attention: ", e.what_without_backtrace()));
    }
  }
  {  // adamw: three fused steps over odd-sized tensors against the reference, weight decay and LoRA+ lrs on; in
     // float32 whatever `dtype` is, since optimizer state is float32.
    try {
      at::NoGradGuard no_grad;
      std::vector<at::Tensor> p, m, v, p_ref, m_ref, v_ref;
      const std::vector<std::vector<int64_t>> shapes = {{7}, {16, 129}, {4097}};
      for (size_t i = 0; i < shapes.size(); ++i) {
        p.push_back(seeded(shapes[i], 14 + i, at::kFloat, device) * 0.1);
        m.push_back(at::zeros_like(p.back()));
        v.push_back(at::zeros_like(p.back()));
        p_ref.push_back(p.back().clone());
        m_ref.push_back(m.back().clone());
        v_ref.push_back(v.back().clone());
      }
      const std::vector<double> lrs = {1e-2, 1.6e-1, 1e-2};
      const AdamWHyperparameters hyper{0.9, 0.999, 1e-8, 0.1};
      for (int64_t step = 1; step <= 3; ++step) {
        std::vector<at::Tensor> grads;
        for (size_t i = 0; i < shapes.size(); ++i) {
          grads.push_back(seeded(shapes[i], 20 + 3 * step + i, at::kFloat, device));
        }
        adamw_step_fused(p, grads, m, v, lrs, hyper, step);
        adamw_step_reference(p_ref, grads, m_ref, v_ref, lrs, hyper, step);
      }
      // Float32 on every device: a few ulp of an lr-sized update (CUDA's ATen rounds lerp and division differently).
      for (size_t i = 0; i < shapes.size(); ++i) {
        add(compare(absl::StrCat("adamw param ", i), perturb("adamw", p[i]), p_ref[i], 1e-5, 1e-7));
        add(compare(absl::StrCat("adamw exp_avg_sq ", i), v[i], v_ref[i], 1e-4, 1e-12));
      }
    } catch (const c10::Error& e) {
      add(absl::StrCat("adamw: ", e.what_without_backtrace()));
    }
  }
  return report;
}

bool fused_kernels_pass_self_check(const at::Device& device, at::ScalarType dtype) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  const auto key = std::make_pair(device.str(), dtype);
  if (auto it = g_cache.find(key); it != g_cache.end()) return it->second;
  const SelfCheckReport report = run_kernel_self_check(device, dtype, g_force_mismatch);
  if (!report.passed()) {
    std::string lines;
    for (const std::string& f : report.failures) absl::StrAppend(&lines, "\n  ", f);
    core::log_warning("fused kernels disagree with their references on ", device.str(), " ", c10::toString(dtype),
                      "; using the reference kernels (model.fused_kernels: auto). Set model.fused_kernels: off to "
                      "silence this, or on to force them:", lines);
  }
  g_cache[key] = report.passed();
  return report.passed();
}

void reset_self_check_for_testing(const std::string& force_mismatch) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_cache.clear();
  g_force_mismatch = force_mismatch;
}

}  // namespace freehold::kernels
