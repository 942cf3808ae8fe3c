// The prepare pipeline: fingerprint, read and tokenize in parallel, write in order, check the bad-record budget,
// commit atomically.
#include "data/prepare.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/sha256.h"
#include "data/chat_template.h"
#include "data/hdf5_file.h"
#include "data/record_pipeline.h"
#include "data/sample_builder.h"
#include "data/tokenizer.h"
#include "nlohmann/json.hpp"

namespace freehold::data {

std::string resolve_tokenizer_json(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return path + "/tokenizer.json";
  return path;
}

InputFormat detect_format(const std::string& path) {
  if (!is_jsonl_path(path)) return InputFormat::kText;
  LineReader reader(path);
  std::string line;
  bool too_long = false;
  while (reader.next(&line, &too_long)) {
    if (too_long || line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json doc = nlohmann::json::parse(line, nullptr, false);
    if (!doc.is_object()) continue;
    if (doc.contains("messages")) return InputFormat::kChat;
    if (doc.contains("instruction")) return InputFormat::kAlpaca;
    if (doc.contains("text")) return InputFormat::kText;
    break;
  }
  throw core::UsageError(absl::StrCat(path, ": cannot tell the format from its first record (no \"messages\", "
                                      "\"instruction\" or \"text\"); pass --format text|alpaca|chat"));
}

std::optional<std::string> detect_template(const Tokenizer& tokenizer) {
  std::vector<std::string> fits;
  for (const char* name : {"llama3", "chatml", "mistral"}) {
    bool all = true;
    for (const std::string& token : ChatTemplate::builtin(name).special_token_strings()) {
      if (tokenizer.encode(token, false).size() != 1) all = false;
    }
    if (name == std::string("mistral") && !tokenizer.token_to_id("[INST]")) all = false;
    if (all) fits.push_back(name);
  }
  if (fits.size() == 1) return fits[0];
  return std::nullopt;
}

namespace {

std::string describe_template(const PrepareOptions& options, const std::optional<ChatTemplate>& chat_template) {
  if (!chat_template) return "none";
  if (chat_template->name() != "custom") return chat_template->name();
  nlohmann::json roles = nlohmann::json::object();
  for (const auto& [role, strings] : options.custom_template->roles) {
    roles[role] = {{"prefix", strings.prefix}, {"suffix", strings.suffix}};
  }
  return absl::StrCat("custom ", roles.dump());
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw core::SystemError(absl::StrCat("opening ", path, " to fsync"), errno);
  int status = ::fsync(fd);
  int saved = errno;
  ::close(fd);
  if (status != 0) throw core::SystemError(absl::StrCat("fsync ", path), saved);
}

std::string format_duration(double seconds) {
  if (seconds < 0 || seconds > 1e7) return "?";
  int s = static_cast<int>(seconds);
  return absl::StrFormat("%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
}

}  // namespace

PrepareResult prepare_dataset(const PrepareOptions& options) {
  if (options.inputs.empty()) throw core::UsageError("prepare: no --input files");
  if (options.max_bad_fraction < 0 || options.max_bad_fraction > 1) {
    throw core::UsageError(absl::StrCat("prepare: max_bad_fraction ", options.max_bad_fraction, " is not in [0, 1]"));
  }
  const std::string tokenizer_json = resolve_tokenizer_json(options.tokenizer_path);
  Tokenizer tokenizer = Tokenizer::load(tokenizer_json);
  const std::string tokenizer_sha = core::sha256_file_hex(tokenizer_json);

  const InputFormat format = options.format ? parse_input_format(*options.format) : detect_format(options.inputs[0]);
  std::optional<ChatTemplate> chat_template;
  if (options.custom_template) {
    chat_template = ChatTemplate::custom(*options.custom_template);
  } else if (options.template_name) {
    chat_template = ChatTemplate::builtin(*options.template_name);
  } else if (format == InputFormat::kChat) {
    std::optional<std::string> name = detect_template(tokenizer);
    if (!name) {
      throw core::UsageError("prepare: format chat needs --template llama3|chatml|mistral (the tokenizer's special "
                             "tokens do not single one out)");
    }
    core::log_info("prepare: chat template ", *name, " (from the tokenizer's special tokens)");
    chat_template = ChatTemplate::builtin(*name);
  }
  SampleOptions sample_options;
  sample_options.format = format;
  sample_options.chat_template = chat_template;
  sample_options.train_on = parse_train_on(options.train_on);
  sample_options.seq_len = options.seq_len;
  SampleBuilder builder(tokenizer, sample_options, find_special_tokens(tokenizer, tokenizer_json));

  // The fingerprint: everything the output is a function of.
  core::Sha256 fingerprint;
  fingerprint.update(absl::StrCat("freehold.prepare/", kPreparedVersion, "\ntokenizer ", tokenizer_sha, "\nformat ",
                                  input_format_name(format), "\ntemplate ", describe_template(options, chat_template),
                                  "\ntrain_on ", options.train_on, "\nseq_len ", options.seq_len, "\n"));
  for (const std::string& input : options.inputs) {
    struct stat info;
    if (::stat(input.c_str(), &info) != 0) throw core::SystemError(absl::StrCat("prepare: --input ", input), errno);
    fingerprint.update(absl::StrCat("input ", input, " ", info.st_size, " ", info.st_mtim.tv_sec, ".",
                                    info.st_mtim.tv_nsec, "\n"));
  }
  PrepareResult result;
  result.fingerprint = fingerprint.hex_digest();

  std::error_code ec;
  if (!options.force && std::filesystem::exists(options.out, ec)) {
    try {
      hdf5::ReadFile existing(options.out);
      if (existing.string_attribute("source_fingerprint") == result.fingerprint &&
          existing.string_attribute("tokenizer_sha256") == tokenizer_sha) {
        result.skipped = true;
        core::log_info("prepare: ", options.out, " is already prepared from these inputs (fingerprint ",
                       result.fingerprint.substr(0, 12), "); skipped");
        return result;
      }
    } catch (const core::Error&) {
      // not a dataset we made: rebuilt below
    }
  }

  const std::string temp_path = absl::StrCat(options.out, ".tmp.", ::getpid());
  struct TempGuard {
    std::string path;
    bool keep = false;
    ~TempGuard() {
      if (!keep) std::remove(path.c_str());
    }
  } guard{temp_path};

  BadRecords bad;
  bad.open_rejects_file(options.out + ".rejects.jsonl");
  hdf5::TokenFileWriter writer(temp_path);
  const auto start = std::chrono::steady_clock::now();
  const bool show_progress = options.progress && ::isatty(STDERR_FILENO);

  process_records(
      options.inputs, format, builder, options.threads,
      [&](const ProcessedRecord& record) {
        if (record.built.rejection) {
          bad.add_bad(options.inputs[record.origin.file], record.origin.line, *record.built.rejection);
          return;
        }
        if (record.built.samples.empty()) return;
        bad.add_good();
        if (record.built.truncated) ++result.truncated;
        for (const Sample& sample : record.built.samples) {
          writer.append(sample.ids, sample.mask);
          result.target_tokens += sample.num_targets();
        }
      },
      [&](const PipelineProgress& p) {
        if (!show_progress) return;
        double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        double fraction = p.bytes_total > 0 ? static_cast<double>(p.bytes_read) / p.bytes_total : 0;
        double eta = fraction > 0 ? seconds * (1 - fraction) / fraction : -1;
        std::fprintf(stderr, "\rprepare: %5.1f%%  %lld records (%.0f/s)  %lld tokens (%.0f/s)  ETA %s   ",
                     100 * fraction, static_cast<long long>(p.records), p.records / std::max(seconds, 1e-9),
                     static_cast<long long>(p.tokens), p.tokens / std::max(seconds, 1e-9), format_duration(eta).c_str());
        std::fflush(stderr);
      });
  if (show_progress) std::fprintf(stderr, "\n");

  bad.close_rejects_file();
  result.records = bad.good() + bad.bad();
  result.bad_records = bad.bad();
  if (bad.bad() > 0) core::log_warning("prepare: ", bad.summary(), "; listed in ", options.out, ".rejects.jsonl");
  bad.enforce(options.max_bad_fraction, absl::StrCat("prepare ", options.out));
  if (result.truncated > 0) {
    core::log_warning("prepare: ", result.truncated, " record(s) were cut to seq_len ", options.seq_len,
                      " and lost their end (and final EOS)");
  }

  writer.set_string_attribute("format", kPreparedFormat);
  writer.set_int_attribute("version", kPreparedVersion);
  writer.set_int_attribute("vocab_size", tokenizer.id_limit());
  writer.set_string_attribute("tokenizer_sha256", tokenizer_sha);
  writer.set_string_attribute("source_fingerprint", result.fingerprint);
  writer.set_string_attribute("record_format", input_format_name(format));
  writer.set_string_attribute("chat_template", describe_template(options, chat_template));
  writer.set_string_attribute("train_on", options.train_on);
  writer.set_int_attribute("seq_len", options.seq_len);
  result.documents = writer.num_docs();
  result.tokens = writer.num_tokens();
  writer.close();

  fsync_path(temp_path);
  if (std::rename(temp_path.c_str(), options.out.c_str()) != 0) {
    throw core::SystemError(absl::StrCat("prepare: renaming ", temp_path, " to ", options.out), errno);
  }
  guard.keep = true;
  core::fsync_directory(core::parent_directory(options.out));
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  core::log_info("prepare: ", options.out, ": ", result.documents, " documents, ", result.tokens, " tokens (",
                 result.target_tokens, " targets) from ", result.records, " records in ",
                 absl::StrFormat("%.1f", seconds), " s");
  return result;
}

}  // namespace freehold::data
