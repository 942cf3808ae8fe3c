#include "launch/run_config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/file.h"
#include "launch/command_line.h"

namespace freehold::launch {
namespace {

// Where every problem goes, with the file and line of the node it concerns.
class Problems {
 public:
  explicit Problems(std::string source) : source_(std::move(source)) {}

  void add(const YAML::Node& at, const std::string& key_path, const std::string& message) {
    std::string where = source_;
    if (at.IsDefined() && !at.Mark().is_null()) {
      where = absl::StrCat(source_, ":", at.Mark().line + 1);
    } else if (overridden_.count(key_path)) {
      where = "command line";
    }
    list_.push_back(absl::StrCat(where, ": ", key_path, ": ", message));
  }
  void add_plain(const std::string& message) { list_.push_back(message); }
  void mark_overridden(const std::string& key_path) { overridden_.insert(key_path); }
  const std::vector<std::string>& list() const { return list_; }

 private:
  std::string source_;
  std::vector<std::string> list_;
  std::set<std::string> overridden_;
};

std::string scalar_text(const YAML::Node& node) {
  if (node.IsScalar()) return absl::StrCat("\"", node.Scalar(), "\"");
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "null";
}

std::string format_double(double x) { return absl::StrCat(x); }

// Reads the keys of one mapping, remembering which ones it knows, so the rest are reported as unknown.
class Section {
 public:
  Section(YAML::Node node, std::string path, Problems& problems)
      : node_(std::move(node)), path_(std::move(path)), problems_(problems) {
    if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap()) {
      problems_.add(node_, path_, absl::StrCat("is ", scalar_text(node_), "; expected a mapping of keys"));
      node_ = YAML::Node(YAML::NodeType::Undefined);
    }
    if (node_.IsMap()) {
      std::set<std::string> seen;
      for (const auto& entry : node_) {
        std::string key = entry.first.as<std::string>();
        if (!seen.insert(key).second) problems_.add(entry.first, key_path(key), "appears twice");
      }
    }
  }

  Problems& problems() { return problems_; }
  std::string key_path(const std::string& key) const { return path_.empty() ? key : absl::StrCat(path_, ".", key); }

  // The value under `key`, or an undefined node when the key (or the whole section) is absent, so the default
  // stays (YAML::Node() would be a defined null, which optional keys read as "set to null"); marks the key as known.
  YAML::Node get(const std::string& key) {
    known_.push_back(key);
    if (!node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    return node_[key];
  }
  static bool present(const YAML::Node& v) { return v.IsDefined() && !v.IsNull(); }
  bool has(const std::string& key) {
    if (!node_.IsMap()) return false;
    return present(node_[key]);
  }

  void fail(const YAML::Node& v, const std::string& key, const std::string& message) {
    problems_.add(v, key_path(key), message);
  }

  bool integer(const std::string& key, int64_t* out, int64_t min, int64_t max) {
    YAML::Node v = get(key);
    if (!present(v)) return false;
    int64_t x = 0;
    if (!v.IsScalar() || !absl::SimpleAtoi(v.Scalar(), &x)) {
      fail(v, key, absl::StrCat("is ", scalar_text(v), "; expected an integer from ", min, " to ", max));
      return false;
    }
    if (x < min || x > max) {
      fail(v, key, absl::StrCat("is ", x, "; expected an integer from ", min, " to ", max));
      return false;
    }
    *out = x;
    return true;
  }

  void optional_integer(const std::string& key, std::optional<int64_t>* out, int64_t min, int64_t max) {
    YAML::Node v = get(key);
    known_.pop_back();  // integer() marks it again
    if (v.IsDefined() && v.IsNull()) {
      known_.push_back(key);
      out->reset();
      return;
    }
    int64_t x = 0;
    if (integer(key, &x, min, max)) *out = x;
  }

  // `range` says what is accepted, for the message; `ok` decides.
  bool number(const std::string& key, double* out, bool (*ok)(double), const std::string& range) {
    YAML::Node v = get(key);
    if (!present(v)) return false;
    double x = 0;
    if (!v.IsScalar() || !absl::SimpleAtod(v.Scalar(), &x) || !std::isfinite(x)) {
      fail(v, key, absl::StrCat("is ", scalar_text(v), "; expected a number ", range));
      return false;
    }
    if (!ok(x)) {
      fail(v, key, absl::StrCat("is ", format_double(x), "; expected a number ", range));
      return false;
    }
    *out = x;
    return true;
  }

  void optional_number(const std::string& key, std::optional<double>* out, bool (*ok)(double),
                       const std::string& range) {
    YAML::Node v = get(key);
    known_.pop_back();
    if (v.IsDefined() && v.IsNull()) {
      known_.push_back(key);
      out->reset();
      return;
    }
    double x = 0;
    if (number(key, &x, ok, range)) *out = x;
  }

  void boolean(const std::string& key, bool* out) {
    YAML::Node v = get(key);
    if (!present(v)) return;
    if (v.IsScalar() && (v.Scalar() == "true" || v.Scalar() == "false")) {
      *out = v.Scalar() == "true";
    } else {
      fail(v, key, absl::StrCat("is ", scalar_text(v), "; expected true or false"));
    }
  }

  bool string(const std::string& key, std::string* out) {
    YAML::Node v = get(key);
    if (!present(v)) return false;
    if (!v.IsScalar()) {
      fail(v, key, absl::StrCat("is ", scalar_text(v), "; expected a string"));
      return false;
    }
    *out = v.Scalar();
    return true;
  }

  void optional_string(const std::string& key, std::optional<std::string>* out) {
    YAML::Node v = get(key);
    known_.pop_back();
    if (v.IsDefined() && v.IsNull()) {
      known_.push_back(key);
      out->reset();
      return;
    }
    std::string s;
    if (string(key, &s)) *out = s;
  }

  template <typename E>
  void choice(const std::string& key, E* out, const std::vector<std::pair<std::string, E>>& choices) {
    YAML::Node v = get(key);
    if (!present(v)) return;
    std::vector<std::string> names;
    for (const auto& [name, value] : choices) {
      names.push_back(name);
      if (v.IsScalar() && v.Scalar() == name) {
        *out = value;
        return;
      }
    }
    std::string hint;
    if (v.IsScalar()) {
      if (auto close = closest_match(v.Scalar(), names)) hint = absl::StrCat(" (did you mean ", *close, "?)");
    }
    fail(v, key, absl::StrCat("is ", scalar_text(v), "; expected one of ", absl::StrJoin(names, ", "), hint));
  }

  // A list of strings; a single string is accepted as a one-element list when `scalar_ok`.
  void string_list(const std::string& key, std::vector<std::string>* out, bool scalar_ok) {
    YAML::Node v = get(key);
    if (!v.IsDefined()) return;
    if (v.IsNull()) {
      out->clear();
      return;
    }
    if (v.IsScalar() && scalar_ok) {
      *out = {v.Scalar()};
      return;
    }
    if (!v.IsSequence()) {
      fail(v, key, absl::StrCat("is ", scalar_text(v), "; expected a list of strings"));
      return;
    }
    std::vector<std::string> items;
    for (const auto& item : v) {
      if (!item.IsScalar()) {
        fail(item, key, absl::StrCat("has an entry that is ", scalar_text(item), "; expected strings"));
        return;
      }
      items.push_back(item.Scalar());
    }
    *out = items;
  }

  // Reports every key this section did not ask for, with the closest known key as a suggestion.
  void finish() {
    if (!node_.IsMap()) return;
    for (const auto& entry : node_) {
      std::string key = entry.first.as<std::string>();
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      std::string hint;
      if (auto close = closest_match(key, known_)) hint = absl::StrCat("; did you mean ", key_path(*close), "?");
      problems_.add(entry.first, key_path(key),
                    absl::StrCat("unknown key", hint.empty() ? absl::StrCat("; known keys here: ",
                                                                            absl::StrJoin(known_, ", "))
                                                              : hint));
    }
  }

 private:
  YAML::Node node_;
  std::string path_;
  Problems& problems_;
  std::vector<std::string> known_;
};

bool positive(double x) { return x > 0; }
bool non_negative(double x) { return x >= 0; }
bool unit_closed(double x) { return x >= 0 && x <= 1; }
bool unit_half_open(double x) { return x >= 0 && x < 1; }

constexpr int64_t kMaxInt = int64_t{1} << 53;

const std::vector<std::pair<std::string, core::DType>> kModelDTypes = {
    {"bf16", core::DType::kBF16}, {"fp16", core::DType::kF16}, {"fp32", core::DType::kF32}};
const std::vector<std::pair<std::string, core::DType>> kPrecisions = {{"bf16", core::DType::kBF16},
                                                                      {"fp32", core::DType::kF32}};

void read_model(Section s, model::ModelOptions& m, Problems& problems) {
  if (!s.string("path", &m.path) || m.path.empty()) {
    problems.add(YAML::Node(), "model.path", "is required: the Hugging Face model directory to fine-tune");
  }
  s.choice("dtype", &m.dtype, kModelDTypes);
  s.choice("fused_kernels", &m.fused_kernels,
           {{"auto", model::FusedKernels::kAuto}, {"on", model::FusedKernels::kOn}, {"off", model::FusedKernels::kOff}});
  s.boolean("activation_checkpointing", &m.activation_checkpointing);
  s.finish();
}

void read_adapter(Section s, adapters::LoraOptions& a) {
  s.string("type", &a.type);
  s.integer("r", &a.r, 1, 65536);
  s.number("alpha", &a.alpha, positive, "> 0");
  s.number("dropout", &a.dropout, unit_half_open, "in [0, 1)");
  s.string_list("target_modules", &a.target_modules, /*scalar_ok=*/true);
  s.string_list("exclude_modules", &a.exclude_modules, /*scalar_ok=*/true);
  {
    YAML::Node v = s.get("layers");
    if (Section::present(v)) {
      if (!v.IsSequence()) {
        s.fail(v, "layers", absl::StrCat("is ", scalar_text(v), "; expected null or a list of layer indices"));
      } else {
        a.layers.clear();
        for (const auto& item : v) {
          int64_t index = 0;
          if (!item.IsScalar() || !absl::SimpleAtoi(item.Scalar(), &index) || index < 0) {
            s.fail(item, "layers", absl::StrCat("has ", scalar_text(item), "; expected layer indices >= 0"));
            continue;
          }
          a.layers.push_back(index);
        }
      }
    } else if (v.IsDefined()) {
      a.layers.clear();
    }
  }
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    YAML::Node v = s.get(key);
    if (!Section::present(v)) continue;
    if (!v.IsMap()) {
      s.fail(v, key, absl::StrCat("is ", scalar_text(v), "; expected a mapping of module-name patterns to values"));
      continue;
    }
    if (std::string(key) == "rank_pattern") a.rank_pattern.clear(); else a.alpha_pattern.clear();
    for (const auto& entry : v) {
      std::string pattern = entry.first.as<std::string>();
      std::string path = absl::StrCat(key, ".", pattern);
      if (std::string(key) == "rank_pattern") {
        int64_t r = 0;
        if (!entry.second.IsScalar() || !absl::SimpleAtoi(entry.second.Scalar(), &r) || r < 1) {
          s.fail(entry.second, path, absl::StrCat("is ", scalar_text(entry.second), "; expected a rank >= 1"));
          continue;
        }
        a.rank_pattern.emplace_back(pattern, r);
      } else {
        double alpha = 0;
        if (!entry.second.IsScalar() || !absl::SimpleAtod(entry.second.Scalar(), &alpha) || !(alpha > 0)) {
          s.fail(entry.second, path, absl::StrCat("is ", scalar_text(entry.second), "; expected a number > 0"));
          continue;
        }
        a.alpha_pattern.emplace_back(pattern, alpha);
      }
    }
  }
  s.boolean("use_rslora", &a.use_rslora);
  s.boolean("use_dora", &a.use_dora);
  s.string("init", &a.init);
  s.optional_string("init_from", &a.init_from);
  s.finish();
}

std::vector<data::DataSource> read_sources(Section& s, const std::string& key) {
  std::vector<data::DataSource> sources;
  YAML::Node v = s.get(key);
  if (!Section::present(v)) return sources;
  // yaml-cpp's operator= on a Node writes through to the node it refers to; build the one-element list fresh.
  YAML::Node list(YAML::NodeType::Sequence);
  if (v.IsScalar() || v.IsMap()) {  // one source written without the list
    list.push_back(v);
  } else {
    list.reset(v);
  }
  if (!list.IsSequence()) {
    s.fail(v, key, "expected a list of sources ({path: FILE, weight: W} or FILE)");
    return sources;
  }
  for (size_t i = 0; i < list.size(); ++i) {
    YAML::Node item = list[i];
    std::string item_key = absl::StrCat(key, "[", i, "]");
    data::DataSource source;
    if (item.IsScalar()) {
      source.path = item.Scalar();
    } else if (item.IsMap()) {
      for (const auto& entry : item) {
        std::string k = entry.first.as<std::string>();
        if (k == "path" && entry.second.IsScalar()) {
          source.path = entry.second.Scalar();
        } else if (k == "weight") {
          if (!entry.second.IsScalar() || !absl::SimpleAtod(entry.second.Scalar(), &source.weight) ||
              !std::isfinite(source.weight) || source.weight <= 0) {
            s.fail(entry.second, item_key + ".weight",
                   absl::StrCat("is ", scalar_text(entry.second), "; expected a number > 0"));
          }
        } else {
          std::string hint;
          if (auto close = closest_match(k, {"path", "weight"})) hint = absl::StrCat("; did you mean ", *close, "?");
          s.fail(entry.first, item_key + "." + k,
                 k == "path" ? "expected a file path" : absl::StrCat("unknown key", hint.empty() ? "; known keys: path, weight" : hint));
        }
      }
    } else {
      s.fail(item, item_key, absl::StrCat("is ", scalar_text(item), "; expected {path: FILE, weight: W} or FILE"));
      continue;
    }
    if (source.path.empty()) {
      s.fail(item, item_key + ".path", "is missing");
      continue;
    }
    sources.push_back(source);
  }
  return sources;
}

void read_data(Section s, data::DataOptions& d) {
  d.train = read_sources(s, "train");
  d.eval = read_sources(s, "eval");
  s.choice<std::string>("format", &d.format, {{"auto", "auto"}, {"text", "text"}, {"alpaca", "alpaca"}, {"chat", "chat"}});
  {
    YAML::Node v = s.get("template");
    if (Section::present(v)) {
      if (v.IsScalar()) {
        const std::vector<std::string> builtin = {"llama3", "chatml", "mistral"};
        if (std::find(builtin.begin(), builtin.end(), v.Scalar()) == builtin.end()) {
          std::string hint;
          if (auto close = closest_match(v.Scalar(), builtin)) hint = absl::StrCat(" (did you mean ", *close, "?)");
          s.fail(v, "template", absl::StrCat("is ", scalar_text(v), "; expected llama3, chatml, mistral, or a mapping "
                                             "of roles to {prefix, suffix}", hint));
        } else {
          d.template_name = v.Scalar();
        }
      } else if (v.IsMap()) {
        data::ChatTemplateSpec spec;
        for (const auto& entry : v) {
          std::string role = entry.first.as<std::string>();
          std::string path = "template." + role;
          if (role != "system" && role != "user" && role != "assistant") {
            s.fail(entry.first, path, "unknown role; expected system, user or assistant");
            continue;
          }
          Section role_section(entry.second, s.key_path(path), s.problems());
          data::ChatTemplateSpec::Role r;
          role_section.string("prefix", &r.prefix);
          role_section.string("suffix", &r.suffix);
          role_section.finish();
          spec.roles[role] = r;
        }
        for (const char* required : {"user", "assistant"}) {
          if (!spec.roles.count(required)) s.fail(v, absl::StrCat("template.", required), "is required in a custom template");
        }
        d.custom_template = spec;
      } else {
        s.fail(v, "template", absl::StrCat("is ", scalar_text(v), "; expected a template name or a mapping"));
      }
    }
  }
  s.optional_string("tokenizer", &d.tokenizer);
  s.integer("seq_len", &d.seq_len, 2, int64_t{1} << 20);
  s.boolean("packing", &d.packing);
  s.boolean("shuffle", &d.shuffle);
  s.choice<std::string>("train_on", &d.train_on,
                        {{"assistant", "assistant"}, {"all", "all"}, {"last_assistant", "last_assistant"}});
  s.number("max_bad_fraction", &d.max_bad_fraction, unit_closed, "in [0, 1]");
  s.finish();
}

void read_train(Section s, trainer::TrainOptions& t, bool& max_steps_set, bool& epochs_set) {
  int64_t seed = static_cast<int64_t>(t.seed);
  if (s.integer("seed", &seed, 0, kMaxInt)) t.seed = static_cast<uint64_t>(seed);
  s.integer("micro_batch_size", &t.micro_batch_size, 1, 1 << 20);
  s.integer("grad_accum_steps", &t.grad_accum_steps, 1, 1 << 20);
  max_steps_set = s.has("max_steps");
  epochs_set = s.has("epochs");
  s.optional_integer("max_steps", &t.max_steps, 1, kMaxInt);
  s.optional_integer("epochs", &t.epochs, 1, 1 << 20);
  s.number("lr", &t.lr, positive, "> 0");
  {
    YAML::Node v = s.get("betas");
    if (Section::present(v)) {
      double b0 = 0, b1 = 0;
      if (!v.IsSequence() || v.size() != 2 || !v[0].IsScalar() || !v[1].IsScalar() ||
          !absl::SimpleAtod(v[0].Scalar(), &b0) || !absl::SimpleAtod(v[1].Scalar(), &b1) || !unit_half_open(b0) ||
          !unit_half_open(b1)) {
        s.fail(v, "betas", "expected two numbers in [0, 1), like [0.9, 0.999]");
      } else {
        t.betas = {b0, b1};
      }
    }
  }
  s.number("eps", &t.eps, positive, "> 0");
  s.number("weight_decay", &t.weight_decay, non_negative, ">= 0");
  s.optional_number("loraplus_lr_ratio", &t.loraplus_lr_ratio, positive, "> 0 (or null)");
  s.choice("lr_schedule", &t.lr_schedule,
           {{"constant", trainer::LrSchedule::kConstant}, {"linear", trainer::LrSchedule::kLinear},
            {"cosine", trainer::LrSchedule::kCosine}});
  s.integer("warmup_steps", &t.warmup_steps, 0, kMaxInt);
  s.number("min_lr_ratio", &t.min_lr_ratio, unit_closed, "in [0, 1]");
  s.number("max_grad_norm", &t.max_grad_norm, non_negative, ">= 0 (0 disables clipping)");
  s.choice("precision", &t.precision, kPrecisions);
  s.choice("device", &t.device,
           {{"auto", trainer::DeviceChoice::kAuto}, {"cpu", trainer::DeviceChoice::kCpu},
            {"cuda", trainer::DeviceChoice::kCuda}});
  s.integer("eval_every", &t.eval_every, 0, kMaxInt);
  s.integer("eval_batches", &t.eval_batches, 1, kMaxInt);
  s.choice("nonfinite", &t.nonfinite,
           {{"skip", trainer::NonfinitePolicy::kSkip}, {"abort", trainer::NonfinitePolicy::kAbort}});
  s.integer("max_consecutive_nonfinite", &t.max_consecutive_nonfinite, 1, kMaxInt);
  s.finish();
}

void read_output(Section s, trainer::OutputOptions& o) {
  s.string("dir", &o.dir);
  s.integer("log_every", &o.log_every, 1, kMaxInt);
  s.integer("save_every", &o.save_every, 0, kMaxInt);
  s.integer("keep_last", &o.keep_last, 1, 1 << 20);
  s.choice("export", &o.export_kind,
           {{"adapter", trainer::ExportKind::kAdapter}, {"merged", trainer::ExportKind::kMerged},
            {"both", trainer::ExportKind::kBoth}, {"none", trainer::ExportKind::kNone}});
  s.choice("export_dtype", &o.export_dtype, kModelDTypes);
  s.boolean("tensorboard", &o.tensorboard);
  s.finish();
}

void read_dist(Section s, dist::DistOptions& d) {
  s.choice("backend", &d.backend,
           {{"auto", dist::Backend::kAuto}, {"mpi", dist::Backend::kMpi}, {"nccl", dist::Backend::kNccl}});
  s.integer("timeout_s", &d.timeout_s, 1, 7 * 24 * 3600);
  s.integer("bucket_mb", &d.bucket_mb, 1, 1024);
  s.finish();
}

// Applies "a.b.c=value" to the tree; the value is parsed as YAML ("[q_proj, v_proj]", "null", "1e-4").
void apply_override(YAML::Node& root, const std::string& text, Problems& problems) {
  size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    problems.add_plain(absl::StrCat("command line: \"", text, "\" is not an override; expected section.key=value"));
    return;
  }
  std::string path = text.substr(0, eq);
  std::string value_text = text.substr(eq + 1);
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  for (const std::string& part : parts) {
    if (part.empty()) {
      problems.add_plain(absl::StrCat("command line: \"", text, "\" has an empty key in \"", path, "\""));
      return;
    }
  }
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception&) {
    value = YAML::Node(value_text);
  }
  if (!value.IsDefined() || (value.IsNull() && value_text.empty())) value = YAML::Node(YAML::NodeType::Null);
  YAML::Node node;
  node.reset(root);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node child = node[parts[i]];
    if (child.IsDefined() && !child.IsNull() && !child.IsMap()) {
      problems.add_plain(absl::StrCat("command line: ", path, ": ", absl::StrJoin(parts.begin(), parts.begin() + i + 1, "."),
                                      " is not a section"));
      return;
    }
    if (!child.IsDefined() || child.IsNull()) node[parts[i]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node next = node[parts[i]];
    node.reset(next);
  }
  node[parts.back()] = value;
  problems.mark_overridden(path);
}

}  // namespace

ConfigError::ConfigError(const std::vector<std::string>& problems)
    : core::UsageError(absl::StrCat("the config has ", problems.size(), problems.size() == 1 ? " problem" : " problems",
                                    ":\n  ", absl::StrJoin(problems, "\n  "))),
      problems_(problems) {}

RunConfig parse_run_config(const std::string& yaml_text, const std::string& source,
                           const std::vector<std::string>& overrides) {
  Problems problems(source);
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError({absl::StrCat(source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": not valid YAML: ", e.msg)});
  }
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw ConfigError({absl::StrCat(source, ": expected a mapping of sections (model:, adapter:, ...)")});
  for (const std::string& text : overrides) apply_override(root, text, problems);

  RunConfig config;
  config.config_path = source;
  std::string base = source.substr(source.find_last_of('/') == std::string::npos ? 0 : source.find_last_of('/') + 1);
  for (const char* ext : {".yaml", ".yml"}) {
    if (base.size() > std::strlen(ext) && base.compare(base.size() - std::strlen(ext), std::strlen(ext), ext) == 0) {
      base.resize(base.size() - std::strlen(ext));
    }
  }
  config.name = base;

  Section top(root, "", problems);
  read_model(Section(top.get("model"), "model", problems), config.model, problems);
  read_adapter(Section(top.get("adapter"), "adapter", problems), config.adapter);
  read_data(Section(top.get("data"), "data", problems), config.data);
  bool max_steps_set = false, epochs_set = false;
  read_train(Section(top.get("train"), "train", problems), config.train, max_steps_set, epochs_set);
  read_output(Section(top.get("output"), "output", problems), config.output);
  {
    YAML::Node v = top.get("resume");
    if (Section::present(v)) {
      if (!v.IsScalar() || v.Scalar().empty()) {
        problems.add(v, "resume", "expected auto, never, or a checkpoint directory");
      } else if (v.Scalar() == "auto") {
        config.resume.mode = ResumeOptions::Mode::kAuto;
      } else if (v.Scalar() == "never") {
        config.resume.mode = ResumeOptions::Mode::kNever;
      } else {
        config.resume = {ResumeOptions::Mode::kPath, v.Scalar()};
      }
    }
  }
  read_dist(Section(top.get("dist"), "dist", problems), config.dist);
  top.finish();

  // Settings that are each fine but conflict together.
  trainer::TrainOptions& t = config.train;
  if (epochs_set && max_steps_set) {
    problems.add(root["train"]["epochs"], "train.epochs",
                 "and train.max_steps are both set; set one (the other to null)");
  } else if (epochs_set) {
    t.max_steps.reset();
  }
  if (!t.max_steps && !t.epochs) {
    problems.add(root["train"], "train.max_steps", "and train.epochs are both null; set one of them");
  }
  if (t.max_steps && t.warmup_steps > *t.max_steps) {
    problems.add(root["train"]["warmup_steps"], "train.warmup_steps",
                 absl::StrCat("is ", t.warmup_steps, ", more than train.max_steps (", *t.max_steps, ")"));
  }
  if (t.eval_every > 0 && config.data.eval.empty()) {
    problems.add(root["train"]["eval_every"], "train.eval_every",
                 absl::StrCat("is ", t.eval_every, " but data.eval lists no sources"));
  }
  if (config.data.train.empty()) {
    problems.add(root["data"], "data.train", "is required: at least one training source ({path: FILE})");
  }
  if (config.data.format == "text" && (config.data.template_name || config.data.custom_template)) {
    problems.add(root["data"]["template"], "data.template", "is set but data.format is text (templates format chats)");
  }
  if (config.model.dtype == core::DType::kF16 && t.precision == core::DType::kBF16) {
    problems.add(root["model"]["dtype"], "model.dtype",
                 "is fp16 but train.precision is bf16; use model.dtype bf16 (or fp32 with precision fp32)");
  }
  for (const std::string& p : adapters::validate_lora_options(config.adapter)) {
    problems.add_plain(absl::StrCat(source, ": ", p));
  }
  if (config.output.dir.empty()) config.output.dir = absl::StrCat("runs/", config.name);
  if (!problems.list().empty()) throw ConfigError(problems.list());
  return config;
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::string text;
  try {
    text = core::read_file(path, 16u << 20);
  } catch (const core::Error& e) {
    throw core::UsageError(absl::StrCat("cannot read the config: ", e.what()));
  }
  return parse_run_config(text, path, overrides);
}

std::string run_config_to_yaml(const RunConfig& c) {
  YAML::Emitter out;
  auto dtype = [](core::DType d) { return std::string(core::precision_name(d)); };
  out << YAML::BeginMap;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "path" << YAML::Value << c.model.path;
  out << YAML::Key << "dtype" << YAML::Value << dtype(c.model.dtype);
  out << YAML::Key << "fused_kernels" << YAML::Value
      << (c.model.fused_kernels == model::FusedKernels::kAuto ? "auto"
          : c.model.fused_kernels == model::FusedKernels::kOn ? "on" : "off");
  out << YAML::Key << "activation_checkpointing" << YAML::Value << c.model.activation_checkpointing;
  out << YAML::EndMap;

  const adapters::LoraOptions& a = c.adapter;
  out << YAML::Key << "adapter" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "type" << YAML::Value << a.type;
  out << YAML::Key << "r" << YAML::Value << a.r;
  out << YAML::Key << "alpha" << YAML::Value << a.alpha;
  out << YAML::Key << "dropout" << YAML::Value << a.dropout;
  out << YAML::Key << "target_modules" << YAML::Value << YAML::Flow << a.target_modules;
  out << YAML::Key << "exclude_modules" << YAML::Value << YAML::Flow << a.exclude_modules;
  out << YAML::Key << "layers" << YAML::Value;
  if (a.layers.empty()) out << YAML::Null; else out << YAML::Flow << a.layers;
  out << YAML::Key << "rank_pattern" << YAML::Value << YAML::BeginMap;
  for (const auto& [k, v] : a.rank_pattern) out << YAML::Key << k << YAML::Value << v;
  out << YAML::EndMap;
  out << YAML::Key << "alpha_pattern" << YAML::Value << YAML::BeginMap;
  for (const auto& [k, v] : a.alpha_pattern) out << YAML::Key << k << YAML::Value << v;
  out << YAML::EndMap;
  out << YAML::Key << "use_rslora" << YAML::Value << a.use_rslora;
  out << YAML::Key << "use_dora" << YAML::Value << a.use_dora;
  out << YAML::Key << "init" << YAML::Value << a.init;
  out << YAML::Key << "init_from" << YAML::Value;
  if (a.init_from) out << *a.init_from; else out << YAML::Null;
  out << YAML::EndMap;

  const data::DataOptions& d = c.data;
  auto sources = [&](const std::vector<data::DataSource>& list) {
    out << YAML::BeginSeq;
    for (const auto& s : list) {
      out << YAML::Flow << YAML::BeginMap << YAML::Key << "path" << YAML::Value << s.path << YAML::Key << "weight"
          << YAML::Value << s.weight << YAML::EndMap;
    }
    out << YAML::EndSeq;
  };
  out << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "train" << YAML::Value;
  sources(d.train);
  out << YAML::Key << "eval" << YAML::Value;
  sources(d.eval);
  out << YAML::Key << "format" << YAML::Value << d.format;
  out << YAML::Key << "template" << YAML::Value;
  if (d.template_name) {
    out << *d.template_name;
  } else if (d.custom_template) {
    out << YAML::BeginMap;
    for (const auto& [role, r] : d.custom_template->roles) {
      out << YAML::Key << role << YAML::Value << YAML::BeginMap << YAML::Key << "prefix" << YAML::Value
          << YAML::DoubleQuoted << r.prefix << YAML::Key << "suffix" << YAML::Value << YAML::DoubleQuoted << r.suffix
          << YAML::EndMap;
    }
    out << YAML::EndMap;
  } else {
    out << YAML::Null;
  }
  out << YAML::Key << "tokenizer" << YAML::Value;
  if (d.tokenizer) out << *d.tokenizer; else out << YAML::Null;
  out << YAML::Key << "seq_len" << YAML::Value << d.seq_len;
  out << YAML::Key << "packing" << YAML::Value << d.packing;
  out << YAML::Key << "shuffle" << YAML::Value << d.shuffle;
  out << YAML::Key << "train_on" << YAML::Value << d.train_on;
  out << YAML::Key << "max_bad_fraction" << YAML::Value << d.max_bad_fraction;
  out << YAML::EndMap;

  const trainer::TrainOptions& t = c.train;
  out << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "seed" << YAML::Value << t.seed;
  out << YAML::Key << "micro_batch_size" << YAML::Value << t.micro_batch_size;
  out << YAML::Key << "grad_accum_steps" << YAML::Value << t.grad_accum_steps;
  out << YAML::Key << "max_steps" << YAML::Value;
  if (t.max_steps) out << *t.max_steps; else out << YAML::Null;
  out << YAML::Key << "epochs" << YAML::Value;
  if (t.epochs) out << *t.epochs; else out << YAML::Null;
  out << YAML::Key << "lr" << YAML::Value << t.lr;
  out << YAML::Key << "betas" << YAML::Value << YAML::Flow << YAML::BeginSeq << t.betas[0] << t.betas[1] << YAML::EndSeq;
  out << YAML::Key << "eps" << YAML::Value << t.eps;
  out << YAML::Key << "weight_decay" << YAML::Value << t.weight_decay;
  out << YAML::Key << "loraplus_lr_ratio" << YAML::Value;
  if (t.loraplus_lr_ratio) out << *t.loraplus_lr_ratio; else out << YAML::Null;
  out << YAML::Key << "lr_schedule" << YAML::Value << std::string(trainer::lr_schedule_name(t.lr_schedule));
  out << YAML::Key << "warmup_steps" << YAML::Value << t.warmup_steps;
  out << YAML::Key << "min_lr_ratio" << YAML::Value << t.min_lr_ratio;
  out << YAML::Key << "max_grad_norm" << YAML::Value << t.max_grad_norm;
  out << YAML::Key << "precision" << YAML::Value << dtype(t.precision);
  out << YAML::Key << "device" << YAML::Value << std::string(trainer::device_choice_name(t.device));
  out << YAML::Key << "eval_every" << YAML::Value << t.eval_every;
  out << YAML::Key << "eval_batches" << YAML::Value << t.eval_batches;
  out << YAML::Key << "nonfinite" << YAML::Value << std::string(trainer::nonfinite_policy_name(t.nonfinite));
  out << YAML::Key << "max_consecutive_nonfinite" << YAML::Value << t.max_consecutive_nonfinite;
  out << YAML::EndMap;

  const trainer::OutputOptions& o = c.output;
  out << YAML::Key << "output" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "dir" << YAML::Value << o.dir;
  out << YAML::Key << "log_every" << YAML::Value << o.log_every;
  out << YAML::Key << "save_every" << YAML::Value << o.save_every;
  out << YAML::Key << "keep_last" << YAML::Value << o.keep_last;
  out << YAML::Key << "export" << YAML::Value << std::string(trainer::export_kind_name(o.export_kind));
  out << YAML::Key << "export_dtype" << YAML::Value << dtype(o.export_dtype);
  out << YAML::Key << "tensorboard" << YAML::Value << o.tensorboard;
  out << YAML::EndMap;

  out << YAML::Key << "resume" << YAML::Value
      << (c.resume.mode == ResumeOptions::Mode::kAuto    ? std::string("auto")
          : c.resume.mode == ResumeOptions::Mode::kNever ? std::string("never")
                                                         : c.resume.path);
  out << YAML::Key << "dist" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "backend" << YAML::Value << std::string(dist::backend_name(c.dist.backend));
  out << YAML::Key << "timeout_s" << YAML::Value << c.dist.timeout_s;
  out << YAML::Key << "bucket_mb" << YAML::Value << c.dist.bucket_mb;
  out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace freehold::launch
