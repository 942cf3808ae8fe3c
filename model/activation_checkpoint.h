// Activation checkpointing of one decoder layer: its forward keeps no activations for the backward pass; the
// backward recomputes the layer from its saved input (B, T, C) and back-propagates through the recomputation.
// Only the layer inputs stay alive between forward and backward: L · B · T · C elements instead of every
// projection, norm and attention output of every layer.
//
// Identical results, not just close ones: the forward and the recomputation run the same function with grad mode
// on and the same requires_grad pattern (so every op, fused or reference, is picked the same way as without
// checkpointing), and the recomputation replays the CPU generator's state from the forward, so LoRA dropout draws
// the same masks. Leaf gradients (the adapters) are accumulated by a nested backward, as torch.utils.checkpoint's
// reentrant variant does; the generator is put back afterwards, so the random stream continues exactly as it
// would without checkpointing.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

namespace freehold::model {

// y = layer(x), with x (B, T, C) → y (B, T, C). Outside grad mode, or when neither x nor anything the layer uses
// requires grad, this is a plain call. `layer` must stay valid until the backward pass has run: it is called
// again there.
at::Tensor checkpointed_forward(std::function<at::Tensor(const at::Tensor&)> layer, const at::Tensor& x);

}  // namespace freehold::model
