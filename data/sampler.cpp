// Epoch plans: mixing, shuffling and greedy packing, all deterministic.
#include "data/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "data/document_source.h"

namespace freehold::data {

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace

uint64_t mix_hash(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  return splitmix64(splitmix64(splitmix64(splitmix64(a) ^ b) ^ c) ^ d);
}

std::vector<int64_t> permutation(int64_t n, uint64_t key) {
  std::vector<int64_t> out(n);
  for (int64_t i = 0; i < n; ++i) out[i] = i;
  uint64_t state = key;
  for (int64_t i = n - 1; i > 0; --i) {
    state = splitmix64(state);
    // A uniform index in [0, i] by the multiply-shift map (bias below 2^-40 for any dataset size we read).
    const int64_t j = static_cast<int64_t>((static_cast<unsigned __int128>(state) * static_cast<uint64_t>(i + 1)) >> 64);
    std::swap(out[i], out[j]);
  }
  return out;
}

EpochPlan::EpochPlan(const std::vector<const DocumentSource*>& sources, const std::vector<double>& weights,
                     uint64_t seed, int64_t epoch, bool shuffle, bool packing, int64_t seq_len)
    : epoch_(epoch) {
  FH_CHECK(sources.size() == weights.size() && !sources.empty() && seq_len > 0);
  double weight_sum = 0;
  int64_t total_docs = 0;
  for (size_t s = 0; s < sources.size(); ++s) {
    if (!(weights[s] > 0) || !std::isfinite(weights[s])) {
      throw core::UsageError(absl::StrCat("data source ", sources[s]->path(), " has weight ", weights[s], "; must be > 0"));
    }
    weight_sum += weights[s];
    total_docs += sources[s]->num_docs();
  }
  constexpr uint64_t kPassTag = 0x70617373, kMixTag = 0x6d6978;
  for (size_t s = 0; s < sources.size(); ++s) {
    const int64_t available = sources[s]->num_docs();
    if (available == 0) continue;
    const int64_t take = sources.size() == 1 ? available
                                             : std::llround(weights[s] / weight_sum * static_cast<double>(total_docs));
    std::map<int64_t, std::vector<int64_t>> passes;
    for (int64_t j = 0; j < take; ++j) {
      const int64_t global = epoch * take + j;
      const int64_t pass = global / available;
      const int64_t index = global % available;
      int64_t doc = index;
      if (shuffle) {
        auto it = passes.find(pass);
        if (it == passes.end()) {
          if (passes.size() > 2) passes.erase(passes.begin());
          it = passes.emplace(pass, permutation(available, mix_hash(seed, kPassTag, s, pass))).first;
        }
        doc = it->second[index];
      }
      docs_.push_back(DocRef{static_cast<int32_t>(s), doc});
    }
  }
  if (shuffle && sources.size() > 1) {
    std::vector<int64_t> order = permutation(static_cast<int64_t>(docs_.size()), mix_hash(seed, kMixTag, epoch));
    std::vector<DocRef> mixed(docs_.size());
    for (size_t i = 0; i < order.size(); ++i) mixed[i] = docs_[order[i]];
    docs_ = std::move(mixed);
  } else if (shuffle) {
    // One source: its pass order already is the shuffle.
  }
  // Rows: greedy packing in order (a document longer than seq_len is cut to it), or one document per row.
  row_starts_.push_back(0);
  int64_t used = 0;
  for (size_t i = 0; i < docs_.size(); ++i) {
    const int64_t length = std::min(seq_len, sources[docs_[i].source]->doc_length(docs_[i].doc));
    if (i > 0 && (!packing || used + length > seq_len)) {
      row_starts_.push_back(static_cast<int64_t>(i));
      used = 0;
    }
    used += length;
  }
  if (!docs_.empty()) row_starts_.push_back(static_cast<int64_t>(docs_.size()));
}

}  // namespace freehold::data
