#include "adapters/targeting.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/error.h"
#include "core/log.h"

namespace freehold::adapters {
namespace {

// One compiled Python-syntax regular expression.
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& what) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), 0, &error_code,
                          &error_offset, nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      throw core::UsageError(absl::StrCat(what, ": \"", pattern, "\" is not a valid regular expression (",
                                          reinterpret_cast<const char*>(message), " at offset ", error_offset, ")"));
    }
    data_ = pcre2_match_data_create_from_pattern(code_, nullptr);
  }
  ~Regex() {
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // re.fullmatch when `full`, else re.match (anchored at the start only). Returns capture group 1 ("" when the
  // pattern has none or it did not take part), or nullopt without a match.
  std::optional<std::string> match(const std::string& text, bool full) const {
    uint32_t options = PCRE2_ANCHORED | (full ? PCRE2_ENDANCHORED : 0);
    int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, options, data_, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) return std::nullopt;
    FH_CHECK(rc >= 0, "pcre2_match failed with code ", rc);
    if (rc < 2) return std::string();
    PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data_);
    if (ovector[2] == PCRE2_UNSET) return std::string();
    return text.substr(ovector[2], ovector[3] - ovector[2]);
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
};

bool name_or_suffix(const std::string& name, const std::string& entry) {
  return name == entry || absl::EndsWith(name, absl::StrCat(".", entry));
}

bool is_all_linear(const io::ModuleSelector& s) {
  return s.kind == io::ModuleSelector::Kind::kRegex && absl::AsciiStrToLower(s.regex) == "all-linear";
}

std::string fold_layer_indices(const std::string& name) {
  std::vector<std::string> parts = absl::StrSplit(name, '.');
  for (std::string& p : parts) {
    if (!p.empty() && std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; })) p = "N";
  }
  return absl::StrJoin(parts, ".");
}

std::string selector_text(const io::ModuleSelector& s) {
  if (s.kind == io::ModuleSelector::Kind::kRegex) return absl::StrCat("\"", s.regex, "\"");
  return absl::StrCat("[", absl::StrJoin(s.names, ", "), "]");
}

// The layer index PEFT reads from a module name for layers_to_transform, or nullopt.
std::optional<int64_t> layer_index(const std::string& name, const std::vector<std::string>& layers_pattern,
                                   const std::string& what) {
  std::optional<std::string> idx;
  if (layers_pattern.empty()) {
    // Lazy: the first numbered segment, not a nested one such as an expert index.
    const Regex first(R"(.*?\.[^.]*\.(?P<idx>\d+)\.)", "layer index");
    idx = first.match(name, false);
  } else {
    for (const std::string& pattern : layers_pattern) {
      Regex re(absl::StrCat(R"((?:^|.*?\.))", pattern, R"(\.(?P<idx>\d+)\.)"), what);
      idx = re.match(name, false);
      if (idx) break;
    }
  }
  if (!idx || idx->empty() || idx->size() > 9) return std::nullopt;
  return std::stoll(*idx);
}

[[noreturn]] void fail(Strictness strictness, const std::string& message) {
  if (strictness == Strictness::kConfig) throw core::UsageError(message);
  throw core::FormatError(message);
}

}  // namespace

bool regex_fullmatch(const std::string& pattern, const std::string& text, const std::string& what) {
  return Regex(pattern, what).match(text, true).has_value();
}

int find_pattern_key(const std::vector<std::string>& keys, const std::string& name) {
  for (size_t i = 0; i < keys.size(); ++i) {
    Regex re(absl::StrCat(R"((.*\.)?()", keys[i], ")$"), absl::StrCat("pattern key \"", keys[i], "\""));
    if (re.match(name, false)) return static_cast<int>(i);
  }
  return -1;
}

std::vector<ModuleInfo> transformer_modules(const model::Transformer& model) {
  const io::ModelConfig& c = model.config();
  std::vector<ModuleInfo> out = {{"model", false}, {"model.embed_tokens", false}, {"model.layers", false}};
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string layer = absl::StrCat("model.layers.", i);
    out.push_back({layer, false});
    out.push_back({layer + ".self_attn", false});
    for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"}) out.push_back({absl::StrCat(layer, ".self_attn.", p), true});
    if (c.qk_norm) {
      out.push_back({layer + ".self_attn.q_norm", false});
      out.push_back({layer + ".self_attn.k_norm", false});
    }
    out.push_back({layer + ".mlp", false});
    for (const char* p : {"gate_proj", "up_proj", "down_proj"}) out.push_back({absl::StrCat(layer, ".mlp.", p), true});
    out.push_back({layer + ".mlp.act_fn", false});
    out.push_back({layer + ".input_layernorm", false});
    out.push_back({layer + ".post_attention_layernorm", false});
  }
  out.push_back({"model.norm", false});
  out.push_back({"model.rotary_emb", false});
  out.push_back({kLmHeadName, true});
  return out;
}

std::string describe_modules(const std::vector<ModuleInfo>& modules) {
  std::vector<std::string> linear, other;
  std::set<std::string> seen;
  for (const ModuleInfo& m : modules) {
    std::string folded = fold_layer_indices(m.name);
    if (!seen.insert(folded).second) continue;
    (m.is_linear ? linear : other).push_back(folded);
  }
  return absl::StrCat("linear modules: ", absl::StrJoin(linear, ", "), "; other modules: ", absl::StrJoin(other, ", "),
                      " (N: layer index)");
}

std::vector<TargetedModule> match_targets(const io::PeftAdapterConfig& config, const std::vector<ModuleInfo>& modules,
                                          Strictness strictness) {
  const std::string key_prefix = strictness == Strictness::kConfig ? "adapter." : "";
  const io::ModuleSelector& targets = config.target_modules;
  const io::ModuleSelector& exclude = config.exclude_modules;
  if (targets.empty()) {
    fail(strictness, absl::StrCat(key_prefix, "target_modules is empty; name the modules to adapt (e.g. q_proj, "
                                  "v_proj), or all-linear. The model has ", describe_modules(modules)));
  }
  const bool all_linear = is_all_linear(targets);
  std::optional<Regex> target_regex, exclude_regex;
  if (targets.kind == io::ModuleSelector::Kind::kRegex && !all_linear) target_regex.emplace(targets.regex, key_prefix + "target_modules");
  if (exclude.kind == io::ModuleSelector::Kind::kRegex) exclude_regex.emplace(exclude.regex, key_prefix + "exclude_modules");
  const std::string layers_what = key_prefix + "layers_pattern";

  std::vector<std::string> matched_names;
  std::vector<size_t> entry_hits(targets.names.size(), 0);
  size_t excluded = 0;
  for (const ModuleInfo& m : modules) {
    // exclude_modules first, as PEFT.
    if (exclude_regex ? exclude_regex->match(m.name, true).has_value()
                      : std::any_of(exclude.names.begin(), exclude.names.end(),
                                    [&](const std::string& e) { return name_or_suffix(m.name, e); })) {
      ++excluded;
      continue;
    }
    bool found = false;
    if (all_linear) {
      found = m.is_linear && m.name != kLmHeadName;  // PEFT turns all-linear into these full names
    } else if (target_regex) {
      found = target_regex->match(m.name, true).has_value();
    } else {
      for (size_t e = 0; e < targets.names.size(); ++e) {
        const std::string& entry = targets.names[e];
        bool hit = false;
        if (m.name == entry) {
          hit = true;  // an exact name is never filtered by layers_to_transform (PEFT)
        } else if (absl::EndsWith(m.name, absl::StrCat(".", entry))) {
          hit = true;
          if (!config.layers_to_transform.empty()) {
            std::optional<int64_t> index = layer_index(m.name, config.layers_pattern, layers_what);
            hit = index && std::find(config.layers_to_transform.begin(), config.layers_to_transform.end(), *index) !=
                               config.layers_to_transform.end();
          }
        }
        if (hit) {
          ++entry_hits[e];
          found = true;
        }
      }
    }
    if (!found) continue;
    if (!m.is_linear) {
      fail(strictness, absl::StrCat(key_prefix, "target_modules ", selector_text(targets), " matches \"", m.name,
                                    "\", which is not a Linear; LoRA adapts Linear layers only. The model has ",
                                    describe_modules(modules)));
    }
    if (m.name == kLmHeadName) {
      fail(strictness, absl::StrCat(key_prefix, "target_modules ", selector_text(targets),
                                    " matches the LM head (lm_head); freehold adapts the decoder's projections "
                                    "only (all-linear leaves lm_head out, as PEFT does)"));
    }
    matched_names.push_back(m.name);
  }

  std::string filters;
  if (!config.layers_to_transform.empty()) {
    absl::StrAppend(&filters, " with layers [", absl::StrJoin(config.layers_to_transform, ", "), "]");
  }
  if (excluded > 0) absl::StrAppend(&filters, " after exclude_modules ", selector_text(exclude));
  if (matched_names.empty()) {
    fail(strictness, absl::StrCat(key_prefix, "target_modules ", selector_text(targets), " matches no module",
                                  filters, ". The model has ", describe_modules(modules)));
  }
  for (size_t e = 0; e < targets.names.size(); ++e) {
    if (entry_hits[e] > 0) continue;
    std::string message = absl::StrCat(key_prefix, "target_modules entry \"", targets.names[e], "\" matches no module",
                                       filters, ". The model has ", describe_modules(modules));
    if (strictness == Strictness::kConfig) throw core::UsageError(message);
    core::log_warning(message);
  }
  if (!exclude.empty() && excluded == 0) {
    std::string message = absl::StrCat(key_prefix, "exclude_modules ", selector_text(exclude), " excludes nothing");
    if (strictness == Strictness::kConfig) throw core::UsageError(message);
    core::log_warning(message);
  }

  std::vector<std::string> rank_keys, alpha_keys;
  for (const auto& [k, v] : config.rank_pattern) rank_keys.push_back(k);
  for (const auto& [k, v] : config.alpha_pattern) alpha_keys.push_back(k);
  std::vector<size_t> rank_hits(rank_keys.size(), 0), alpha_hits(alpha_keys.size(), 0);
  std::vector<TargetedModule> out;
  for (const std::string& name : matched_names) {
    TargetedModule t{name, config.r, config.lora_alpha};
    if (int k = find_pattern_key(rank_keys, name); k >= 0) t.r = config.rank_pattern[k].second, ++rank_hits[k];
    if (int k = find_pattern_key(alpha_keys, name); k >= 0) t.alpha = config.alpha_pattern[k].second, ++alpha_hits[k];
    out.push_back(std::move(t));
  }
  for (const auto& [what, keys, hits] : {std::tuple{"rank_pattern", &rank_keys, &rank_hits},
                                          std::tuple{"alpha_pattern", &alpha_keys, &alpha_hits}}) {
    for (size_t k = 0; k < keys->size(); ++k) {
      if ((*hits)[k] > 0) continue;
      std::string message = absl::StrCat(key_prefix, what, " key \"", (*keys)[k], "\" matches no targeted module (keys match "
                                         "the end of a module name, e.g. \"self_attn.q_proj\" or \"layers\\.0\\..*\")");
      if (strictness == Strictness::kConfig) throw core::UsageError(message);
      core::log_warning(message);
    }
  }
  return out;
}

}  // namespace freehold::adapters
