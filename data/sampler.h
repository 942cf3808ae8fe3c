// The order of an epoch, as a pure function of (seed, epoch, the sources and their weights): which documents it
// holds, in which order, and how they are packed into rows of seq_len tokens. Ranks take disjoint interleaved
// shares of the rows (batch k of rank r is rows [(k·W + r)·B, +B) for world size W and micro-batch B), every rank
// the same number of batches (the tail that cannot be shared equally is dropped). Nothing here depends on the
// platform's standard-library random algorithms: the permutations use splitmix64 and Fisher-Yates.
//
// Mixing: with weights p_s (normalized) and D = Σ D_s documents in all, an epoch takes round(p_s · D) documents from
// source s, continuing through source s's own sequence of shuffled passes (so a small source is repeated and a
// large one is sampled, each pass a fresh permutation), then shuffles all picks together.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

namespace freehold::data {

class DocumentSource;

struct DocRef {
  int32_t source;
  int64_t doc;
};

// splitmix64 of a combination of values: the one hash the sampler's randomness comes from.
uint64_t mix_hash(uint64_t a, uint64_t b, uint64_t c = 0, uint64_t d = 0);
// A permutation of [0, n), the same on every platform.
std::vector<int64_t> permutation(int64_t n, uint64_t key);

class EpochPlan {
 public:
  EpochPlan(const std::vector<const DocumentSource*>& sources, const std::vector<double>& weights, uint64_t seed,
            int64_t epoch, bool shuffle, bool packing, int64_t seq_len);
  int64_t num_rows() const { return static_cast<int64_t>(row_starts_.size()) - 1; }
  // The documents of row r, in order.
  std::pair<const DocRef*, const DocRef*> row(int64_t r) const {
    return {docs_.data() + row_starts_[r], docs_.data() + row_starts_[r + 1]};
  }
  int64_t epoch() const { return epoch_; }

 private:
  int64_t epoch_;
  std::vector<DocRef> docs_;
  std::vector<int64_t> row_starts_;
};

}  // namespace freehold::data
