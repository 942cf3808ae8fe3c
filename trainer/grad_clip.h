// Gradient clipping by global L2 norm as torch.nn.utils.clip_grad_norm_ computes it: per-tensor norms, the norm
// of those, coefficient max_norm / (norm + 1e-6) clamped to 1, every gradient multiplied by it. The norm is
// returned for logging and for the finite check (RELIABILITY.md N5): a non-finite norm means the step is skipped,
// and then nothing is multiplied.
#pragma once

#include <vector>

#include "io/safetensors.h"

namespace freehold::trainer {

// The global L2 norm of the gradients of `params` (those without a gradient count as absent, as in torch), as a
// double read from torch's float32 total; 0 when no tensor has a gradient. With max_norm > 0 and a finite norm,
// clips the gradients in place; max_norm == 0 only measures.
double clip_grad_norm(const std::vector<io::NamedTensor>& params, double max_norm);

}  // namespace freehold::trainer
