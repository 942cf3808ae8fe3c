// What `freehold inspect` says about an HDF5 dataset: its schema (datasets with type, shape, chunking and filters),
// its attributes, and statistics from one full read (documents, tokens, target-token share, id range, document
// lengths). The full read also verifies every chunk's Fletcher32 checksum. Torch-free (part of the ASan-tested
// HDF5 reading path).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "data/hdf5_file.h"
#include "nlohmann/json.hpp"

namespace freehold::data {

struct Hdf5DatasetInfo {
  std::string path;
  std::string kind;  // "prepared" (freehold prepare's schema) or "rows" (/input_ids [S, T])
  std::vector<std::pair<std::string, std::string>> attributes;  // name, display text
  std::vector<std::pair<std::string, hdf5::DatasetLayout>> datasets;
  int64_t documents = 0;  // documents (prepared) or rows
  int64_t tokens = 0;
  int64_t target_tokens = 0;  // tokens the loader trains on: loss_mask == 1 (all without a mask), except each
                              // document's first token, which nothing predicts
  int64_t min_id = 0, max_id = 0;
  // Document lengths in tokens.
  int64_t min_length = 0, max_length = 0, p50_length = 0, p90_length = 0, p99_length = 0;
  double mean_length = 0;
  // Power-of-two buckets: (lower bound, documents with lower ≤ length < 2·lower); lower 0 holds empty documents.
  std::vector<std::pair<int64_t, int64_t>> length_histogram;

  double target_share() const { return tokens > 0 ? static_cast<double>(target_tokens) / tokens : 0.0; }
  nlohmann::json to_json() const;
};

// Reads the whole file once (memory: the document index plus one block). Throws what the loader throws for a
// file it would refuse: FormatError / DataError naming the file and dataset.
Hdf5DatasetInfo describe_hdf5_dataset(const std::string& path);

}  // namespace freehold::data
