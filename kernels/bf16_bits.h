// bf16 for the CPU kernels' span loops: the conversions of c10::BFloat16 (round to nearest even, NaN to 0x7FC0),
// written without branches so that g++ vectorizes loops over it; c10::BFloat16's isnan branch keeps them scalar
// (the fused RoPE kernel was 3x slower than ATen's five vectorized ops with it, bench/kernels/kernels_bench.cpp
// rope). Same bits as c10::BFloat16, so kernels reinterpret bf16 tensors' data as it. Torch-free, host-only.
#pragma once

#include <cstdint>
#include <cstring>

namespace freehold::kernels {

struct Bf16Bits {
  uint16_t bits;
  Bf16Bits() = default;
  explicit Bf16Bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    const uint32_t rounded = (u + UINT32_C(0x7FFF) + ((u >> 16) & 1)) >> 16;
    bits = static_cast<uint16_t>(f != f ? UINT32_C(0x7FC0) : rounded);
  }
  explicit operator float() const {
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  }
};
static_assert(sizeof(Bf16Bits) == 2);

}  // namespace freehold::kernels
