// JSONL and text files as a document source: one indexing pass (parallel), then each record is tokenized again
// when it is read, so only the index (offset, line, piece, length per sample) stays in memory.
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/log.h"
#include "data/document_source.h"
#include "data/record_pipeline.h"
#include "data/sample_builder.h"

namespace freehold::data {
namespace {

class JsonlSource : public DocumentSource {
 public:
  JsonlSource(const std::string& path, const SampleBuilder& builder, double max_bad_fraction)
      : path_(path), builder_(builder), jsonl_(is_jsonl_path(path)), reader_(path) {
    BadRecords bad;
    int logged = 0;
    process_records({path}, builder.options().format, builder, 0, [&](const ProcessedRecord& record) {
      if (record.built.rejection) {
        bad.add_bad(path, record.origin.line, *record.built.rejection);
        if (logged++ < 5) {
          core::log_warning(path, ":", record.origin.line, ": ", reject_reason_name(record.built.rejection->reason), ": ",
                            record.built.rejection->detail);
        }
        return;
      }
      if (record.built.samples.empty()) return;
      bad.add_good();
      for (size_t i = 0; i < record.built.samples.size(); ++i) {
        entries_.push_back(Entry{record.origin.offset, record.origin.line, static_cast<int32_t>(i),
                                 static_cast<int64_t>(record.built.samples[i].ids.size())});
      }
    });
    if (bad.bad() > 0) core::log_warning(path, ": ", bad.summary());
    bad.enforce(max_bad_fraction, path);
  }

  int64_t num_docs() const override { return static_cast<int64_t>(entries_.size()); }
  int64_t doc_length(int64_t doc) const override { return entries_[doc].length; }
  const std::string& path() const override { return path_; }

  void read(int64_t doc, int64_t max_tokens, std::vector<int32_t>* ids, std::vector<uint8_t>* mask) const override {
    const Entry& entry = entries_[doc];
    std::string line;
    bool too_long = false;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      reader_.seek(entry.offset, entry.line);
      if (!reader_.next(&line, &too_long)) throw core::DataError(absl::StrCat(path_, ":", entry.line, ": changed while read"));
    }
    BuiltSamples built = build_line(line, too_long, jsonl_, builder_.options().format, builder_);
    if (built.rejection || entry.piece >= static_cast<int32_t>(built.samples.size()) ||
        static_cast<int64_t>(built.samples[entry.piece].ids.size()) != entry.length) {
      throw core::DataError(absl::StrCat(path_, ":", entry.line, ": the file changed after it was indexed"));
    }
    Sample& sample = built.samples[entry.piece];
    const int64_t count = std::min(entry.length, max_tokens);
    ids->assign(sample.ids.begin(), sample.ids.begin() + count);
    mask->assign(sample.mask.begin(), sample.mask.begin() + count);
  }

 private:
  struct Entry {
    uint64_t offset;
    int64_t line;
    int32_t piece;
    int64_t length;
  };
  std::string path_;
  const SampleBuilder& builder_;
  bool jsonl_;
  mutable std::mutex mutex_;
  mutable LineReader reader_;
  std::vector<Entry> entries_;
};

}  // namespace

std::unique_ptr<DocumentSource> open_jsonl_source(const std::string& path, const SampleBuilder& builder,
                                                  double max_bad_fraction) {
  return std::make_unique<JsonlSource>(path, builder, max_bad_fraction);
}

}  // namespace freehold::data
