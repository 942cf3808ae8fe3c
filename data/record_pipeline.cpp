// Ordered parallel map over blocks of input lines.
#include "data/record_pipeline.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <deque>
#include <future>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/file.h"
#include "nlohmann/json.hpp"

namespace freehold::data {

BadRecords::~BadRecords() {
  if (rejects_ != nullptr) std::fclose(rejects_);
}

void BadRecords::open_rejects_file(const std::string& path) {
  core::create_file_if_missing(path);  // owner-only: it quotes the bad records' content
  rejects_ = std::fopen(path.c_str(), "wb");
  if (rejects_ == nullptr) throw core::SystemError(absl::StrCat("creating rejects file ", path), errno);
  rejects_path_ = path;
}

void BadRecords::close_rejects_file() {
  if (rejects_ == nullptr) return;
  const bool failed = std::fclose(rejects_) != 0;
  rejects_ = nullptr;
  if (failed) throw core::SystemError(absl::StrCat("writing ", rejects_path_), errno);
  if (bad_ == 0) std::remove(rejects_path_.c_str());
}

void BadRecords::add_bad(const std::string& file, int64_t line, const Rejection& rejection) {
  ++bad_;
  ++by_reason_[static_cast<int>(rejection.reason)];
  if (rejects_ != nullptr) {
    nlohmann::json record = {{"file", file}, {"line", line}, {"reason", reject_reason_name(rejection.reason)},
                             {"detail", rejection.detail}};
    std::string text = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    if (std::fwrite(text.data(), 1, text.size(), rejects_) != text.size()) {
      throw core::SystemError(absl::StrCat("writing ", rejects_path_), errno);
    }
  }
}

std::string BadRecords::summary() const {
  std::string out = absl::StrCat(bad_, " bad of ", good_ + bad_, " records");
  std::string reasons;
  for (int r = 0; r < kNumRejectReasons; ++r) {
    if (by_reason_[r] > 0) {
      absl::StrAppend(&reasons, reasons.empty() ? "" : ", ", reject_reason_name(static_cast<RejectReason>(r)), " ",
                      by_reason_[r]);
    }
  }
  if (!reasons.empty()) absl::StrAppend(&out, " (", reasons, ")");
  return out;
}

void BadRecords::enforce(double max_fraction, const std::string& what) const {
  const int64_t total = good_ + bad_;
  if (total == 0) throw core::DataError(absl::StrCat(what, ": no records"));
  if (good_ == 0 || static_cast<double>(bad_) > max_fraction * static_cast<double>(total)) {
    if (rejects_ != nullptr) std::fflush(rejects_);
    throw core::DataError(absl::StrCat(what, ": ", summary(), " is more than max_bad_fraction ", max_fraction,
                                       rejects_path_.empty() ? "" : absl::StrCat("; each is listed in ", rejects_path_),
                                       " (fix the data, or raise max_bad_fraction)"));
  }
}

bool is_jsonl_path(const std::string& path) {
  return absl::EndsWithIgnoreCase(path, ".jsonl") || absl::EndsWithIgnoreCase(path, ".json");
}

BuiltSamples build_line(std::string_view line, bool too_long, bool jsonl, InputFormat format,
                        const SampleBuilder& builder) {
  BuiltSamples out;
  if (too_long) {
    out.rejection = Rejection{RejectReason::kTooLong, absl::StrCat("line longer than ", kMaxRecordBytes, " bytes")};
    return out;
  }
  ParsedRecord parsed = parse_record(line, format, jsonl);
  if (parsed.rejection) {
    out.rejection = std::move(parsed.rejection);
    return out;
  }
  if (!parsed.record) return out;  // blank
  return builder.build(*parsed.record);
}

namespace {

struct Line {
  RecordOrigin origin;
  std::string text;
  bool too_long = false;
};

using Block = std::vector<ProcessedRecord>;

}  // namespace

void process_records(const std::vector<std::string>& inputs, InputFormat format, const SampleBuilder& builder,
                     int threads, const std::function<void(const ProcessedRecord&)>& sink,
                     const std::function<void(const PipelineProgress&)>& progress) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  constexpr size_t kBlockLines = 256;
  constexpr size_t kBlockBytes = size_t{4} << 20;
  const size_t max_in_flight = static_cast<size_t>(threads) * 2;

  PipelineProgress state;
  for (const std::string& path : inputs) {
    LineReader probe(path);
    state.bytes_total += probe.file_size();
  }
  auto last_report = std::chrono::steady_clock::now();
  std::deque<std::future<Block>> in_flight;

  auto drain_one = [&] {
    Block block = in_flight.front().get();  // rethrows a worker's exception
    in_flight.pop_front();
    for (const ProcessedRecord& record : block) {
      ++state.records;
      for (const Sample& s : record.built.samples) state.tokens += static_cast<int64_t>(s.ids.size());
      sink(record);
    }
    if (progress && std::chrono::steady_clock::now() - last_report > std::chrono::milliseconds(500)) {
      last_report = std::chrono::steady_clock::now();
      progress(state);
    }
  };

  auto submit = [&](std::vector<Line> lines, bool jsonl) {
    while (in_flight.size() >= max_in_flight) drain_one();
    in_flight.push_back(std::async(std::launch::async, [lines = std::move(lines), jsonl, format, &builder] {
      Block block;
      block.reserve(lines.size());
      for (const Line& line : lines) {
        block.push_back(ProcessedRecord{line.origin, build_line(line.text, line.too_long, jsonl, format, builder)});
      }
      return block;
    }));
  };

  uint64_t bytes_before = 0;
  for (size_t f = 0; f < inputs.size(); ++f) {
    LineReader reader(inputs[f]);
    const bool jsonl = is_jsonl_path(inputs[f]);
    std::vector<Line> block;
    size_t block_bytes = 0;
    std::string text;
    bool too_long = false;
    while (reader.next(&text, &too_long)) {
      state.bytes_read = bytes_before + reader.byte_offset();
      if (!too_long && text.find_first_not_of(" \t\r\n\f\v") == std::string::npos) continue;  // blank
      block_bytes += text.size();
      block.push_back(Line{RecordOrigin{static_cast<int>(f), reader.line_number(), reader.byte_offset()},
                           std::move(text), too_long});
      text = std::string();
      if (block.size() >= kBlockLines || block_bytes >= kBlockBytes) {
        submit(std::move(block), jsonl);
        block = {};
        block_bytes = 0;
      }
    }
    if (!block.empty()) submit(std::move(block), jsonl);
    bytes_before += reader.file_size();
    state.bytes_read = bytes_before;
  }
  while (!in_flight.empty()) drain_one();
  if (progress) progress(state);
}

}  // namespace freehold::data
