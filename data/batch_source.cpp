// The streaming BatchSource: epoch plans, rank shares, row assembly, and the read-ahead thread.
#include "data/batch_source.h"

#include <ATen/Functions.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "data/chat_template.h"
#include "data/document_source.h"
#include "data/prepare.h"
#include "data/record_pipeline.h"
#include "data/sample_builder.h"
#include "data/sampler.h"
#include "data/tokenizer.h"

namespace freehold::data {
namespace {

constexpr size_t kReadAhead = 4;  // batches queued ahead of the trainer

class StreamingBatchSource : public BatchSource {
 public:
  StreamingBatchSource(const DataOptions& options, const Tokenizer& tokenizer, int64_t micro_batch_size,
                       uint64_t seed, int rank, int world_size, bool eval, int64_t model_vocab_size)
      : seq_len_(options.seq_len), packing_(options.packing), shuffle_(options.shuffle && !eval), seed_(seed),
        rank_(rank), world_size_(world_size), micro_batch_size_(micro_batch_size) {
    const std::vector<DataSource>& list = eval ? options.eval : options.train;
    const char* which = eval ? "data.eval" : "data.train";
    if (list.empty()) throw core::UsageError(absl::StrCat(which, " lists no sources"));
    if (seq_len_ < 2) throw core::UsageError(absl::StrCat("data.seq_len is ", seq_len_, "; must be at least 2"));
    if (micro_batch_size < 1 || world_size < 1 || rank < 0 || rank >= world_size) {
      throw core::UsageError(absl::StrCat("loader: micro_batch_size ", micro_batch_size, ", rank ", rank, " of ", world_size));
    }
    if (model_vocab_size > 0 && tokenizer.id_limit() > model_vocab_size) {
      throw core::UsageError(absl::StrCat("data.tokenizer: ", tokenizer.source(), " has ids up to ",
                                          tokenizer.id_limit() - 1, "; the model's embedding has vocab_size ",
                                          model_vocab_size, " rows. Use the tokenizer.json of the model"));
    }
    for (const DataSource& source : list) {
      if (is_hdf5_path(source.path)) {
        sources_.push_back(open_hdf5_source(source.path, vocabulary_check(tokenizer, model_vocab_size)));
      } else {
        sources_.push_back(open_jsonl_source(source.path, builder_for(options, tokenizer, source.path),
                                             options.max_bad_fraction));
      }
      weights_.push_back(source.weight);
      raw_sources_.push_back(sources_.back().get());
    }
    EpochPlan first(raw_sources_, weights_, seed_, 0, shuffle_, packing_, seq_len_);
    const int64_t per_step = micro_batch_size_ * world_size_;
    batches_per_epoch_ = first.num_rows() / per_step;
    if (batches_per_epoch_ == 0) {
      throw core::DataError(absl::StrCat(which, ": the data gives ", first.num_rows(), " rows of seq_len ", seq_len_,
                                         "; one step of world_size ", world_size_, " × micro_batch_size ",
                                         micro_batch_size_, " needs ", per_step));
    }
    start_reader(DataPosition{});
  }

  ~StreamingBatchSource() override { stop_reader(); }

  std::optional<Batch> next() override {
    Item item;
    {
      std::unique_lock<std::mutex> guard(mutex_);
      ready_.wait(guard, [&] { return !queue_.empty(); });
      // An error stays at the head of the queue: every later call reports it too.
      if (queue_.front().error) std::rethrow_exception(queue_.front().error);
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    space_.notify_one();
    if (!item.batch) {
      consumer_ = DataPosition{consumer_.epoch + 1, 0};
      return std::nullopt;
    }
    consumer_.sample_index += micro_batch_size_ * world_size_;
    return std::move(item.batch);
  }

  DataPosition position() const override { return consumer_; }

  void seek(const DataPosition& position) override {
    const int64_t per_step = micro_batch_size_ * world_size_;
    if (position.epoch < 0 || position.sample_index < 0 || position.sample_index % per_step != 0 ||
        position.sample_index / per_step > batches_per_epoch_) {
      throw core::UsageError(absl::StrCat("loader: cannot seek to epoch ", position.epoch, " sample ",
                                          position.sample_index, " (a multiple of ", per_step, " up to ",
                                          batches_per_epoch_ * per_step, " expected; another world size?)"));
    }
    stop_reader();
    start_reader(position);
  }

  int64_t batches_per_epoch() const override { return batches_per_epoch_; }

 private:
  struct Item {
    std::optional<Batch> batch;  // nullopt: end of epoch
    std::exception_ptr error;
  };

  std::vector<std::unique_ptr<SampleBuilder>> builders_;

  const SampleBuilder& builder_for(const DataOptions& options, const Tokenizer& tokenizer, const std::string& path) {
    SampleOptions sample;
    sample.format = options.format == "auto" ? detect_format(path) : parse_input_format(options.format);
    if (options.custom_template) {
      sample.chat_template = ChatTemplate::custom(*options.custom_template);
    } else if (options.template_name) {
      sample.chat_template = ChatTemplate::builtin(*options.template_name);
    } else if (sample.format == InputFormat::kChat) {
      std::optional<std::string> name = detect_template(tokenizer);
      if (!name) throw core::UsageError("data.template: chat data needs a template (llama3, chatml, mistral or custom)");
      sample.chat_template = ChatTemplate::builtin(*name);
    }
    sample.train_on = parse_train_on(options.train_on);
    sample.seq_len = options.seq_len;
    const std::string tokenizer_json = options.tokenizer ? resolve_tokenizer_json(*options.tokenizer) : std::string();
    builders_.push_back(std::make_unique<SampleBuilder>(tokenizer, sample, find_special_tokens(tokenizer, tokenizer_json)));
    return *builders_.back();
  }

  // Rows [first, first + count) of `plan` as a Batch.
  Batch make_batch(const EpochPlan& plan, int64_t first) const {
    const int64_t B = micro_batch_size_, T = seq_len_;
    at::Tensor input_ids = at::zeros({B, T}, at::kLong);
    at::Tensor labels = at::full({B, T}, kIgnoreIndex, at::kLong);
    at::Tensor position_ids = at::zeros({B, T}, at::kLong);
    at::Tensor segment_ids = at::zeros({B, T}, at::kLong);
    int64_t* ids = input_ids.data_ptr<int64_t>();
    int64_t* lab = labels.data_ptr<int64_t>();
    int64_t* pos = position_ids.data_ptr<int64_t>();
    int64_t* seg = segment_ids.data_ptr<int64_t>();
    std::vector<int32_t> doc_ids;
    std::vector<uint8_t> doc_mask;
    int64_t targets = 0;
    for (int64_t b = 0; b < B; ++b) {
      // Packing another epoch's order can give a few rows fewer than epoch 0 (whose count fixes batches_per_epoch
      // for every epoch and rank): such an epoch repeats its first rows; one with more rows drops its last.
      auto [begin, end] = plan.row((first + b) % plan.num_rows());
      int64_t t = 0;
      int64_t segment = 0;
      for (const DocRef* ref = begin; ref != end && t < T; ++ref, ++segment) {
        raw_sources_[ref->source]->read(ref->doc, T - t, &doc_ids, &doc_mask);
        for (size_t i = 0; i < doc_ids.size(); ++i, ++t) {
          ids[b * T + t] = doc_ids[i];
          pos[b * T + t] = static_cast<int64_t>(i);
          seg[b * T + t] = segment;
          if (i > 0 && doc_mask[i]) {
            lab[b * T + t] = doc_ids[i];
            ++targets;
          }
        }
      }
      for (int64_t p = 0; t < T; ++t, ++p) {  // padding: its own segment, positions from 0
        pos[b * T + t] = p;
        seg[b * T + t] = segment;
      }
    }
    Batch batch;
    batch.input_ids = input_ids;
    batch.labels = labels;
    batch.position_ids = position_ids;
    if (packing_) batch.segment_ids = segment_ids;
    batch.num_target_tokens = targets;
    return batch;
  }

  void start_reader(DataPosition position) {
    consumer_ = position;
    stopping_ = false;
    queue_.clear();
    reader_ = std::thread([this, position] { read_ahead(position); });
  }

  void stop_reader() {
    {
      std::lock_guard<std::mutex> guard(mutex_);
      stopping_ = true;
    }
    space_.notify_all();
    if (reader_.joinable()) reader_.join();
    queue_.clear();
  }

  // Produces batches from `position` on, forever (epoch after epoch), until stopped.
  void read_ahead(DataPosition position) {
    try {
      const int64_t per_step = micro_batch_size_ * world_size_;
      int64_t epoch = position.epoch;
      int64_t k = position.sample_index / per_step;
      while (true) {
        EpochPlan plan(raw_sources_, weights_, seed_, epoch, shuffle_, packing_, seq_len_);
        for (; k <= batches_per_epoch_; ++k) {
          Item item;
          if (k < batches_per_epoch_) item.batch = make_batch(plan, k * per_step + rank_ * micro_batch_size_);
          std::unique_lock<std::mutex> guard(mutex_);
          space_.wait(guard, [&] { return stopping_ || queue_.size() < kReadAhead; });
          if (stopping_) return;
          queue_.push_back(std::move(item));
          ready_.notify_one();
        }
        ++epoch;
        k = 0;
      }
    } catch (...) {
      std::lock_guard<std::mutex> guard(mutex_);
      queue_.push_back(Item{std::nullopt, std::current_exception()});
      ready_.notify_one();
    }
  }

  int64_t seq_len_;
  bool packing_;
  bool shuffle_;
  uint64_t seed_;
  int rank_, world_size_;
  int64_t micro_batch_size_;
  std::vector<std::unique_ptr<DocumentSource>> sources_;
  std::vector<const DocumentSource*> raw_sources_;
  std::vector<double> weights_;
  int64_t batches_per_epoch_ = 0;

  DataPosition consumer_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::thread reader_;
};

}  // namespace

std::unique_ptr<BatchSource> open_batch_source(const DataOptions& options, const Tokenizer& tokenizer,
                                               int64_t micro_batch_size, uint64_t seed, int rank, int world_size,
                                               bool eval, int64_t model_vocab_size) {
  return std::make_unique<StreamingBatchSource>(options, tokenizer, micro_batch_size, seed, rank, world_size, eval,
                                                model_vocab_size);
}

}  // namespace freehold::data
