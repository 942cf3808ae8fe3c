// How a fresh adapter's A (r, in) and B (out, r) start, as PEFT 0.21.2 starts them (peft/tuners/lora/layer.py):
//   default   A kaiming-uniform with a = √5 (as torch.nn.Linear's weight: U(-1/√in, 1/√in)), B = 0
//   gaussian  A ~ N(0, (1/r)²), B = 0
//   pissa     W = U S Vᵀ (exact SVD); A = diag(√(S_r/scale)) V_rᵀ, B = U_r diag(√(S_r/scale)); base W − scale·BA
//   pissa_niter_N  the same from torch.svd_lowrank(W, q = r, niter = N) (randomized)
//   olora     W = QR; A = R[:r], B = Q[:, :r]; base W − scale·BA
// The decompositions run in float32 (as PEFT) and the residual base is cast back to the weight's dtype.
// Deterministic given the generator: the same seed gives the same A and B.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace freehold::adapters {

struct LoraInit {
  enum class Kind { kDefault, kGaussian, kPissa, kOlora };
  Kind kind = Kind::kDefault;
  int64_t pissa_niter = -1;  // kPissa: -1 exact SVD, N >= 0 randomized with N subspace iterations

  bool adjusts_base() const { return kind == Kind::kPissa || kind == Kind::kOlora; }
};

// "default", "gaussian", "pissa", "pissa_niter_N", "olora"; nullopt for anything else.
std::optional<LoraInit> parse_lora_init(std::string_view name);
std::string lora_init_name(const LoraInit& init);

struct LoraInitResult {
  at::Tensor lora_A;         // (r, in) float32
  at::Tensor lora_B;         // (out, r) float32
  at::Tensor residual_base;  // (out, in) in the weight's dtype; undefined unless init.adjusts_base()
};

// `weight` is the frozen base weight (out, in); `scale` is the adapter's alpha/r or alpha/√r. Throws core::Error
// when r exceeds what the decomposition gives (min(out, in)) for pissa and olora.
LoraInitResult init_lora_weights(const LoraInit& init, const at::Tensor& weight, int64_t r, double scale,
                                 at::Generator& generator);

// torch.svd_lowrank(A, q, niter) for a real matrix A (m, n): U (m, q), S (q), V (n, q) with A ≈ U diag(S) Vᵀ.
// Randomized (Halko, Martinsson, Tropp 2009): a Gaussian start drawn from `generator`, then `niter` power
// iterations with QR re-orthonormalisation, as torch/_lowrank.py does.
void svd_lowrank(const at::Tensor& A, int64_t q, int64_t niter, at::Generator& generator, at::Tensor& U, at::Tensor& S,
                 at::Tensor& V);

}  // namespace freehold::adapters
