// LoRA dropout's mask, as a counter-based random function (dropout_math.h) instead of a stream of Bernoulli draws:
// one 64-bit seed from the device's default generator per mask, and element i of the tensor kept iff a hash of
// (seed, i) falls under a threshold. The same distribution as at::dropout (independent keeps with probability
// 1 − p, kept elements scaled by 1/(1 − p)), other bits. What it buys: the mask costs one integer hash per two
// elements (ATen's CPU Bernoulli draws one double per element from a serial generator, 11% of a LoRA step), it
// can be recomputed in the backward pass from the seed instead of kept, and it is the same on the CPU and on CUDA.
//
// In the four parts of every freehold kernel: the spec (a scalar loop over dropout_keep, and plain ATen for
// applying it), the CPU and CUDA kernels sharing dropout_math.h, and this binding. Errors throw c10::Error naming
// the function and the value.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>

namespace freehold::kernels {

// One mask's seed, drawn from the default generator of `device` (the CPU's mt19937, or that GPU's Philox, whose
// offset it advances by one step): seeding that generator (at::manual_seed) or restoring its state (checkpoints,
// activation checkpointing's replay) gives the same seed, so the same mask, again.
uint64_t draw_dropout_seed(const at::Device& device);

// The keep mask of a tensor of `sizes` (row-major element order), bool, on `device`. The spec: a scalar loop over
// dropout_keep on the CPU, copied to the device. p in [0, 1).
at::Tensor dropout_mask_reference(at::IntArrayRef sizes, uint64_t seed, double p, const at::Device& device);

// The same mask, by the CPU or CUDA kernel of `device`; equal to the reference bit for bit.
at::Tensor dropout_mask(at::IntArrayRef sizes, uint64_t seed, double p, const at::Device& device);

// Dropout of x with the mask of (seed, p), in plain ATen: x · mask.to(x's dtype) / (1 − p), ATen's rounding of
// at::dropout's `x · noise`. Differentiable in x; any floating dtype, any device.
at::Tensor dropout_reference(const at::Tensor& x, uint64_t seed, double p);

// The same value by one fused pass (no mask tensor): the kernel of x's device for Float, BFloat16 and Half, else
// dropout_reference. Equal to dropout_reference bit for bit. Not differentiable: meant for autograd nodes that know
// their own backward (the backward of dropout is dropout_apply of the gradient with the same seed). Returns a new
// contiguous tensor of x's shape; p = 0 returns x itself.
at::Tensor dropout_apply(const at::Tensor& x, uint64_t seed, double p);

// Throws unless p is a probability in [0, 1); `op` names the caller.
void check_dropout_probability(const char* op, double p);

}  // namespace freehold::kernels
