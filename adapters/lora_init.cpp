#include "adapters/lora_init.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linalg_qr.h>
#include <ATen/ops/linalg_svd.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>

#include <charconv>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/error.h"

namespace freehold::adapters {

std::optional<LoraInit> parse_lora_init(std::string_view name) {
  if (name == "default") return LoraInit{LoraInit::Kind::kDefault};
  if (name == "gaussian") return LoraInit{LoraInit::Kind::kGaussian};
  if (name == "pissa") return LoraInit{LoraInit::Kind::kPissa, -1};
  if (name == "olora") return LoraInit{LoraInit::Kind::kOlora};
  constexpr std::string_view kNiter = "pissa_niter_";
  if (name.starts_with(kNiter)) {
    std::string_view digits = name.substr(kNiter.size());
    int64_t niter = -1;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), niter);
    if (ec == std::errc() && end == digits.data() + digits.size() && !digits.empty() && niter >= 0 && niter <= 1000) {
      return LoraInit{LoraInit::Kind::kPissa, niter};
    }
  }
  return std::nullopt;
}

std::string lora_init_name(const LoraInit& init) {
  switch (init.kind) {
    case LoraInit::Kind::kDefault:
      return "default";
    case LoraInit::Kind::kGaussian:
      return "gaussian";
    case LoraInit::Kind::kPissa:
      return init.pissa_niter < 0 ? "pissa" : absl::StrCat("pissa_niter_", init.pissa_niter);
    case LoraInit::Kind::kOlora:
      return "olora";
  }
  return "?";
}

void svd_lowrank(const at::Tensor& A_in, int64_t q, int64_t niter, at::Generator& generator, at::Tensor& U,
                 at::Tensor& S, at::Tensor& V) {
  FH_CHECK(A_in.dim() == 2, "svd_lowrank needs a matrix");
  // Work on the tall orientation, as torch does, so the Gaussian start has the smaller dimension's rows.
  const bool wide = A_in.size(0) < A_in.size(1);
  at::Tensor A = wide ? A_in.t() : A_in;  // (m, n), m >= n
  at::Tensor R = at::randn({A.size(1), q}, generator, at::TensorOptions().dtype(A.scalar_type())).to(A.device());
  at::Tensor Q = std::get<0>(at::linalg_qr(at::matmul(A, R)));  // (m, q)
  for (int64_t i = 0; i < niter; ++i) {
    Q = std::get<0>(at::linalg_qr(at::matmul(A.t(), Q)));  // (n, q)
    Q = std::get<0>(at::linalg_qr(at::matmul(A, Q)));      // (m, q)
  }
  at::Tensor B = at::matmul(Q.t(), A);  // (q, n)
  auto [Ub, Sb, Vh] = at::linalg_svd(B, /*full_matrices=*/false);
  at::Tensor Ufull = at::matmul(Q, Ub);  // (m, q)
  at::Tensor Vfull = Vh.t();             // (n, q)
  if (wide) std::swap(Ufull, Vfull);
  U = Ufull;
  S = Sb;
  V = Vfull;
}

LoraInitResult init_lora_weights(const LoraInit& init, const at::Tensor& weight, int64_t r, double scale,
                                 at::Generator& generator) {
  FH_CHECK(weight.dim() == 2 && r > 0, "init_lora_weights needs a (out, in) weight and r > 0");
  const int64_t out = weight.size(0), in = weight.size(1);
  const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat);
  LoraInitResult result;
  switch (init.kind) {
    case LoraInit::Kind::kDefault: {
      // torch.nn.init.kaiming_uniform_(a=√5) on (r, in): gain √(2/(1+5)), bound gain·√(3/in) = 1/√in.
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      result.lora_A = at::empty({r, in}, f32).uniform_(-bound, bound, generator);
      result.lora_B = at::zeros({out, r}, f32);
      break;
    }
    case LoraInit::Kind::kGaussian:
      result.lora_A = at::empty({r, in}, f32).normal_(0.0, 1.0 / static_cast<double>(r), generator);
      result.lora_B = at::zeros({out, r}, f32);
      break;
    case LoraInit::Kind::kPissa:
    case LoraInit::Kind::kOlora: {
      const char* what = init.kind == LoraInit::Kind::kPissa ? "pissa" : "olora";
      if (r > std::min(out, in)) {
        throw core::UsageError(absl::StrCat(what, " init needs r <= min(out, in) of every adapted weight; r is ", r,
                                            " but a weight is (", out, ", ", in, ")"));
      }
      at::Tensor w = weight.detach().to(at::kFloat);  // (out, in)
      if (init.kind == LoraInit::Kind::kPissa) {
        at::Tensor U, S, Vh;  // W = U diag(S) Vh
        if (init.pissa_niter < 0) {
          auto [u, s, vh] = at::linalg_svd(w, /*full_matrices=*/false);
          U = u.narrow(1, 0, r);
          S = s.narrow(0, 0, r);
          Vh = vh.narrow(0, 0, r);
        } else {
          at::Tensor u, s, v;
          svd_lowrank(w, r, init.pissa_niter, generator, u, s, v);
          U = u, S = s, Vh = v.t();
        }
        at::Tensor root = (S / scale).sqrt();                           // (r)
        result.lora_A = (root.unsqueeze(1) * Vh).contiguous();          // (r, in)
        result.lora_B = (U * root.unsqueeze(0)).contiguous();           // (out, r)
      } else {
        auto [Q, R] = at::linalg_qr(w, "reduced");  // Q (out, k), R (k, in)
        result.lora_A = R.narrow(0, 0, r).contiguous();
        result.lora_B = Q.narrow(1, 0, r).contiguous();
      }
      result.residual_base = (w - scale * at::matmul(result.lora_B, result.lora_A)).to(weight.scalar_type());
      break;
    }
  }
  result.lora_A = result.lora_A.to(weight.device());
  result.lora_B = result.lora_B.to(weight.device());
  return result;
}

}  // namespace freehold::adapters
