// LoRA dropout's keep mask as a counter-based random function, shared by the CPU kernel (dropout_cpu.cpp), the CUDA
// kernel (dropout.cu) and the scalar spec (dropout.cpp): element i of a tensor of n elements, in row-major order, is
// kept iff word i of the stream below is under a threshold. The mask depends on (seed, i, p) only, so it is the same
// on every device and for every thread count, and the backward pass recomputes it instead of keeping it.
//
//   block k = mix64(seed + (k + 1) · 0x9E3779B97F4A7C15)        (SplitMix64's output function, Weyl sequence)
//   word 2k = low 32 bits of block k, word 2k + 1 = its high 32 bits
//   keep_i  = word_i < threshold(p),  threshold(p) = round((1 − p) · 2^32) ∈ [1, 2^32] for p ∈ [0, 1)
//
// A kept element is multiplied by 1/(1 − p) (rounded to the element type, as at::dropout's noise tensor is), a
// dropped one by 0, so the expectation is x and a non-finite x stays non-finite where it is dropped (inf · 0 = NaN),
// as x · noise does in ATen. Torch-free and CUDA-free.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace freehold::kernels {

constexpr uint64_t kDropoutWeyl = 0x9E3779B97F4A7C15ULL;

// SplitMix64's finalizer (Stafford's "Mix13"): a bijection of 64-bit words whose outputs, on a Weyl sequence of
// inputs, pass BigCrush.
FREEHOLD_HOST_DEVICE inline uint64_t dropout_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Block k of the stream: the words of elements 2k and 2k + 1.
FREEHOLD_HOST_DEVICE inline uint64_t dropout_block(uint64_t seed, uint64_t k) {
  return dropout_mix64(seed + (k + 1) * kDropoutWeyl);
}

// Whether element i is kept.
FREEHOLD_HOST_DEVICE inline bool dropout_keep(uint64_t seed, uint64_t i, uint64_t threshold) {
  const uint64_t block = dropout_block(seed, i >> 1);
  const uint64_t word = (i & 1) != 0 ? block >> 32 : block & 0xFFFFFFFFULL;
  return word < threshold;
}

// round((1 − p) · 2^32) for p in [0, 1): 2^32 (keep everything) at p = 0, at least 1 for any p < 1.
inline uint64_t dropout_threshold(double p) {
  const double t = (1.0 - p) * 4294967296.0;
  const uint64_t rounded = static_cast<uint64_t>(t + 0.5);
  return rounded < 1 ? 1 : (rounded > (1ULL << 32) ? (1ULL << 32) : rounded);
}

}  // namespace freehold::kernels
