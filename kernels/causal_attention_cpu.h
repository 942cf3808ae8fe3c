// The row math of kernels/causal_attention.h's blocks on the CPU: one pass for the row maximum, one for exp and its
// sum (fp32, 16 lanes combined in a fixed tree, so the bits do not depend on the instruction set), with the causal
// mask applied by position instead of a mask tensor. Raw pointers, no torch.
#pragma once

#include <cstdint>

namespace freehold::kernels {

// scores (rows, keys) row-major, row i the scores of query q0 + i against keys 0 .. keys − 1 (keys = q0 + rows),
// already scaled. Row i keeps keys 0 .. q0 + i: afterwards scores[i][j] = exp(s_ij − m_i) there and 0 after; sum[i]
// = Σ_j of them and lse[i] = m_i + log(sum[i]), m_i the kept keys' maximum. A NaN score gives a NaN row.
void attention_softmax_forward_rows(float* scores, int64_t rows, int64_t keys, int64_t q0, float* sum, float* lse);

// The backward pass of those rows: scores as above on entry, P on exit (exp(s_ij − lse_i) at kept keys, 0 after);
// grad (rows, keys) holds dP = dO·Vᵀ on entry and dS = P ⊙ (dP − delta_i) on exit, delta_i = Σ_d dO_id · O_id.
void attention_softmax_backward_rows(float* scores, float* grad, int64_t rows, int64_t keys, int64_t q0,
                                     const float* lse, const float* delta);

}  // namespace freehold::kernels
