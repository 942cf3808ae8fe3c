// HDF5 document sources: prepared datasets (/tokens, /doc_offsets, /loss_mask) and fixed-length rows
// (/input_ids [S, T], /loss_mask [S, T]); every id is checked against the vocabulary as it is read.
#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "data/document_source.h"
#include "data/hdf5_file.h"
#include "data/prepare.h"
#include "data/tokenizer.h"

namespace freehold::data {

bool is_hdf5_path(const std::string& path) {
  return absl::EndsWithIgnoreCase(path, ".h5") || absl::EndsWithIgnoreCase(path, ".hdf5");
}

namespace {

void check_ids(const std::vector<int32_t>& ids, int64_t vocab_limit, const std::string& path, const char* dataset,
               int64_t first_index) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_limit) {
      throw core::DataError(absl::StrCat(path, ": dataset ", dataset, " element ", first_index + static_cast<int64_t>(i),
                                         " is token id ", ids[i], ", outside [0, ", vocab_limit,
                                         ") (the ids the tokenizer and the model's embedding accept); was the file "
                                         "made with another tokenizer?"));
    }
  }
}

class PreparedSource : public DocumentSource {
 public:
  PreparedSource(std::unique_ptr<hdf5::ReadFile> file, const VocabularyCheck& check)
      : file_(std::move(file)), vocab_limit_(check.id_limit) {
    const std::string& path = file_->path();
    std::optional<int64_t> version = file_->int_attribute("version");
    if (version != kPreparedVersion) {
      throw core::FormatError(absl::StrCat(path, ": prepared-dataset version ", version ? absl::StrCat(*version) : "missing",
                                           "; this freehold reads version ", kPreparedVersion));
    }
    if (!check.tokenizer_sha256.empty()) {
      std::optional<std::string> sha = file_->string_attribute("tokenizer_sha256");
      if (sha != check.tokenizer_sha256) {
        throw core::DataError(absl::StrCat(
            path, ": prepared with the tokenizer.json of SHA-256 ", sha ? *sha : "(attribute tokenizer_sha256 missing)",
            "; this run tokenizes with ", check.tokenizer_path, " (SHA-256 ", check.tokenizer_sha256,
            "). Token ids of one tokenizer mean other text in another: prepare the data again with `freehold prepare "
            "--tokenizer ", check.tokenizer_path, "`, or set data.tokenizer to the tokenizer it was prepared with"));
      }
    }
    if (std::optional<int64_t> vocab = file_->int_attribute("vocab_size"); vocab) {
      if (*vocab > vocab_limit_ || *vocab < 1) {
        throw core::DataError(absl::StrCat(path, ": prepared with a vocabulary of ", *vocab, " ids; the tokenizer has ",
                                           vocab_limit_, " (another tokenizer?)"));
      }
      if (check.model_vocab_size > 0 && *vocab > check.model_vocab_size) {
        throw core::DataError(absl::StrCat(path, ": prepared with a vocabulary of ", *vocab,
                                           " ids; the model's embedding has vocab_size ", check.model_vocab_size,
                                           " rows, so ids at or above it cannot be embedded"));
      }
    }
    if (check.model_vocab_size > 0) vocab_limit_ = std::min(vocab_limit_, check.model_vocab_size);
    tokens_ = file_->open_dataset("/tokens");
    offsets_ = file_->open_dataset("/doc_offsets");
    file_->expect_integer(tokens_.get(), "/tokens");
    file_->expect_integer(offsets_.get(), "/doc_offsets");
    std::vector<hsize_t> token_shape = file_->shape(tokens_.get(), "/tokens");
    std::vector<hsize_t> offset_shape = file_->shape(offsets_.get(), "/doc_offsets");
    if (token_shape.size() != 1 || offset_shape.size() != 1 || offset_shape[0] < 1) {
      throw core::FormatError(absl::StrCat(path, ": /tokens must be [N] and /doc_offsets [D+1]"));
    }
    num_tokens_ = static_cast<int64_t>(token_shape[0]);
    if (file_->has_dataset("/loss_mask")) {
      mask_ = file_->open_dataset("/loss_mask");
      file_->expect_integer(mask_.get(), "/loss_mask");
      std::vector<hsize_t> mask_shape = file_->shape(mask_.get(), "/loss_mask");
      if (mask_shape != token_shape) throw core::FormatError(absl::StrCat(path, ": /loss_mask is not the shape of /tokens"));
    }
    // The index: D+1 offsets (8 bytes per document), read in blocks and checked.
    offsets_host_.resize(offset_shape[0]);
    constexpr hsize_t kBlock = 1 << 20;
    for (hsize_t start = 0; start < offset_shape[0]; start += kBlock) {
      hsize_t count = std::min(kBlock, offset_shape[0] - start);
      file_->read_1d(offsets_.get(), "/doc_offsets", H5T_NATIVE_INT64, start, count, offsets_host_.data() + start);
    }
    if (offsets_host_.front() != 0 || offsets_host_.back() != num_tokens_) {
      throw core::FormatError(absl::StrCat(path, ": /doc_offsets must start at 0 and end at the length of /tokens (",
                                           num_tokens_, "); it runs from ", offsets_host_.front(), " to ",
                                           offsets_host_.back()));
    }
    for (size_t d = 1; d < offsets_host_.size(); ++d) {
      if (offsets_host_[d] < offsets_host_[d - 1]) {
        throw core::FormatError(absl::StrCat(path, ": /doc_offsets decreases at index ", d));
      }
    }
  }

  int64_t num_docs() const override { return static_cast<int64_t>(offsets_host_.size()) - 1; }
  int64_t doc_length(int64_t doc) const override { return offsets_host_[doc + 1] - offsets_host_[doc]; }
  const std::string& path() const override { return file_->path(); }

  void read(int64_t doc, int64_t max_tokens, std::vector<int32_t>* ids, std::vector<uint8_t>* mask) const override {
    const int64_t start = offsets_host_[doc];
    const int64_t count = std::min(doc_length(doc), max_tokens);
    ids->resize(count);
    mask->assign(count, 1);
    file_->read_1d(tokens_.get(), "/tokens", H5T_NATIVE_INT32, start, count, ids->data());
    if (mask_.valid()) file_->read_1d(mask_.get(), "/loss_mask", H5T_NATIVE_UINT8, start, count, mask->data());
    check_ids(*ids, vocab_limit_, path(), "/tokens", start);
  }

 private:
  std::unique_ptr<hdf5::ReadFile> file_;
  int64_t vocab_limit_;
  hdf5::Handle tokens_, offsets_, mask_;
  int64_t num_tokens_ = 0;
  std::vector<int64_t> offsets_host_;
};

class RowSource : public DocumentSource {
 public:
  RowSource(std::unique_ptr<hdf5::ReadFile> file, const VocabularyCheck& check)
      : file_(std::move(file)),
        vocab_limit_(check.model_vocab_size > 0 ? std::min(check.id_limit, check.model_vocab_size) : check.id_limit) {
    ids_ = file_->open_dataset("/input_ids");
    file_->expect_integer(ids_.get(), "/input_ids");
    std::vector<hsize_t> shape = file_->shape(ids_.get(), "/input_ids");
    if (shape.size() != 2 || shape[1] == 0) {
      throw core::FormatError(absl::StrCat(file_->path(), ": /input_ids must be [S, T] with T > 0"));
    }
    rows_ = static_cast<int64_t>(shape[0]);
    width_ = static_cast<int64_t>(shape[1]);
    if (file_->has_dataset("/loss_mask")) {
      mask_ = file_->open_dataset("/loss_mask");
      file_->expect_integer(mask_.get(), "/loss_mask");
      if (file_->shape(mask_.get(), "/loss_mask") != shape) {
        throw core::FormatError(absl::StrCat(file_->path(), ": /loss_mask is not the shape of /input_ids"));
      }
    }
  }
  int64_t num_docs() const override { return rows_; }
  int64_t doc_length(int64_t) const override { return width_; }
  const std::string& path() const override { return file_->path(); }

  void read(int64_t doc, int64_t max_tokens, std::vector<int32_t>* ids, std::vector<uint8_t>* mask) const override {
    std::vector<int32_t> row(width_);
    file_->read_rows(ids_.get(), "/input_ids", H5T_NATIVE_INT32, doc, 1, width_, row.data());
    check_ids(row, vocab_limit_, path(), "/input_ids", doc * width_);
    std::vector<uint8_t> row_mask(width_, 1);
    if (mask_.valid()) file_->read_rows(mask_.get(), "/loss_mask", H5T_NATIVE_UINT8, doc, 1, width_, row_mask.data());
    const int64_t count = std::min(width_, max_tokens);
    ids->assign(row.begin(), row.begin() + count);
    mask->assign(row_mask.begin(), row_mask.begin() + count);
  }

 private:
  std::unique_ptr<hdf5::ReadFile> file_;
  int64_t vocab_limit_;
  hdf5::Handle ids_, mask_;
  int64_t rows_ = 0, width_ = 0;
};

}  // namespace

VocabularyCheck vocabulary_check(const Tokenizer& tokenizer, int64_t model_vocab_size) {
  VocabularyCheck check;
  check.id_limit = tokenizer.id_limit();
  check.tokenizer_sha256 = tokenizer.sha256();
  check.tokenizer_path = tokenizer.source();
  check.model_vocab_size = model_vocab_size;
  return check;
}

std::unique_ptr<DocumentSource> open_hdf5_source(const std::string& path, int64_t vocab_limit) {
  VocabularyCheck check;
  check.id_limit = vocab_limit;
  return open_hdf5_source(path, check);
}

std::unique_ptr<DocumentSource> open_hdf5_source(const std::string& path, const VocabularyCheck& check) {
  auto file = std::make_unique<hdf5::ReadFile>(path);
  if (file->has_dataset("/tokens")) {
    std::optional<std::string> format = file->string_attribute("format");
    if (format == kPreparedFormat) return std::make_unique<PreparedSource>(std::move(file), check);
    throw core::FormatError(absl::StrCat(path, ": attribute format is ", format ? absl::StrCat("\"", *format, "\"") : "missing",
                                         "; expected \"", kPreparedFormat, "\" (make the file with `freehold prepare`)"));
  }
  if (file->has_dataset("/input_ids")) return std::make_unique<RowSource>(std::move(file), check);
  throw core::FormatError(absl::StrCat(path, ": neither a prepared dataset (format=\"", kPreparedFormat,
                                       "\", /tokens, /doc_offsets) nor rows of /input_ids [S, T]; make one with "
                                       "`freehold prepare`"));
}

}  // namespace freehold::data
