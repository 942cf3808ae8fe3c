// Schema, attributes and one-pass statistics of an HDF5 dataset for `freehold inspect`.
#include "data/dataset_info.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "data/document_source.h"

namespace freehold::data {
namespace {

constexpr hsize_t kBlockTokens = hsize_t{1} << 20;

// Folds a block of ids and mask bytes, starting at token `first` of the file, into the totals. A document's first
// token is never a target (nothing before it predicts it; the loader labels it kIgnoreIndex), so `starts` (the
// ascending first-token indices of the non-empty documents) and its cursor `next_start` skip those.
void add_block(const std::vector<int32_t>& ids, const std::vector<uint8_t>& mask, bool has_mask, int64_t first,
               const std::vector<int64_t>& starts, size_t* next_start, Hdf5DatasetInfo* info) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (info->tokens == 0 && i == 0) info->min_id = info->max_id = ids[i];
    info->min_id = std::min<int64_t>(info->min_id, ids[i]);
    info->max_id = std::max<int64_t>(info->max_id, ids[i]);
    const int64_t index = first + static_cast<int64_t>(i);
    if (*next_start < starts.size() && starts[*next_start] == index) {
      ++*next_start;
      continue;
    }
    if (!has_mask || mask[i] != 0) ++info->target_tokens;
  }
  info->tokens += static_cast<int64_t>(ids.size());
}

void summarize_lengths(std::vector<int64_t> lengths, Hdf5DatasetInfo* info) {
  if (lengths.empty()) return;
  std::sort(lengths.begin(), lengths.end());
  const auto at = [&](double q) { return lengths[static_cast<size_t>(q * static_cast<double>(lengths.size() - 1))]; };
  info->min_length = lengths.front();
  info->max_length = lengths.back();
  info->p50_length = at(0.5);
  info->p90_length = at(0.9);
  info->p99_length = at(0.99);
  double sum = 0;
  for (int64_t n : lengths) sum += static_cast<double>(n);
  info->mean_length = sum / static_cast<double>(lengths.size());
  for (int64_t n : lengths) {
    int64_t lower = 0;
    if (n > 0) {
      lower = 1;
      while (lower * 2 <= n) lower *= 2;
    }
    if (info->length_histogram.empty() || info->length_histogram.back().first != lower) {
      info->length_histogram.emplace_back(lower, 0);
    }
    ++info->length_histogram.back().second;
  }
}

}  // namespace

nlohmann::json Hdf5DatasetInfo::to_json() const {
  nlohmann::json out;
  out["type"] = kind == "prepared" ? "prepared_dataset" : "hdf5_rows";
  out["path"] = path;
  nlohmann::json attrs = nlohmann::json::object();
  for (const auto& [name, text] : attributes) attrs[name] = text;
  out["attributes"] = attrs;
  nlohmann::json sets = nlohmann::json::object();
  for (const auto& [name, layout] : datasets) {
    sets[name] = {{"dtype", layout.type}, {"shape", layout.shape}, {"chunk", layout.chunk}, {"filters", layout.filters}};
  }
  out["datasets"] = sets;
  out["documents"] = documents;
  out["tokens"] = tokens;
  out["target_tokens"] = target_tokens;
  out["target_share"] = target_share();
  out["min_id"] = min_id;
  out["max_id"] = max_id;
  nlohmann::json histogram = nlohmann::json::array();
  for (const auto& [lower, count] : length_histogram) histogram.push_back({lower, count});
  out["lengths"] = {{"min", min_length}, {"max", max_length}, {"mean", mean_length}, {"p50", p50_length},
                    {"p90", p90_length}, {"p99", p99_length}, {"histogram", histogram}};
  return out;
}

Hdf5DatasetInfo describe_hdf5_dataset(const std::string& path) {
  // The loader's own checks first (schema, version, index), with no vocabulary bound: inspect reports the id range.
  std::unique_ptr<DocumentSource> source = open_hdf5_source(path, std::numeric_limits<int32_t>::max());
  hdf5::ReadFile file(path);
  Hdf5DatasetInfo info;
  info.path = path;
  info.kind = file.has_dataset("/tokens") ? "prepared" : "rows";
  std::vector<std::string> attribute_names = file.attribute_names();
  std::sort(attribute_names.begin(), attribute_names.end());
  for (const std::string& name : attribute_names) info.attributes.emplace_back(name, file.attribute_text(name));

  const std::string ids_name = info.kind == "prepared" ? "/tokens" : "/input_ids";
  std::vector<std::string> names = {ids_name};
  if (info.kind == "prepared") names.push_back("/doc_offsets");
  const bool has_mask = file.has_dataset("/loss_mask");
  if (has_mask) names.push_back("/loss_mask");
  for (const std::string& name : names) {
    hdf5::Handle dataset = file.open_dataset(name);
    info.datasets.emplace_back(name, file.layout(dataset.get(), name));
  }

  hdf5::Handle ids = file.open_dataset(ids_name);
  hdf5::Handle mask;
  if (has_mask) mask = file.open_dataset("/loss_mask");
  std::vector<int32_t> id_block;
  std::vector<uint8_t> mask_block;
  info.documents = source->num_docs();
  std::vector<int64_t> lengths(static_cast<size_t>(info.documents));
  std::vector<int64_t> starts;
  int64_t offset = 0;
  for (int64_t d = 0; d < info.documents; ++d) {
    lengths[d] = source->doc_length(d);
    if (lengths[d] > 0) starts.push_back(offset);
    offset += lengths[d];
  }
  size_t next_start = 0;
  if (info.kind == "prepared") {
    const hsize_t total = file.shape(ids.get(), ids_name)[0];
    for (hsize_t start = 0; start < total; start += kBlockTokens) {
      const hsize_t count = std::min(kBlockTokens, total - start);
      id_block.resize(count);
      file.read_1d(ids.get(), ids_name, H5T_NATIVE_INT32, start, count, id_block.data());
      if (has_mask) {
        mask_block.resize(count);
        file.read_1d(mask.get(), "/loss_mask", H5T_NATIVE_UINT8, start, count, mask_block.data());
      }
      add_block(id_block, mask_block, has_mask, static_cast<int64_t>(start), starts, &next_start, &info);
    }
  } else {
    const std::vector<hsize_t> shape = file.shape(ids.get(), ids_name);
    const hsize_t width = shape[1];
    const hsize_t rows_per_block = std::max<hsize_t>(1, kBlockTokens / width);
    for (hsize_t row = 0; row < shape[0]; row += rows_per_block) {
      const hsize_t rows = std::min(rows_per_block, shape[0] - row);
      id_block.resize(rows * width);
      file.read_rows(ids.get(), ids_name, H5T_NATIVE_INT32, row, rows, width, id_block.data());
      if (has_mask) {
        mask_block.resize(rows * width);
        file.read_rows(mask.get(), "/loss_mask", H5T_NATIVE_UINT8, row, rows, width, mask_block.data());
      }
      add_block(id_block, mask_block, has_mask, static_cast<int64_t>(row * width), starts, &next_start, &info);
    }
  }
  summarize_lengths(std::move(lengths), &info);
  return info;
}

}  // namespace freehold::data
