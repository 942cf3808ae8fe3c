#include "adapters/lora_options.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "adapters/lora_init.h"
#include "adapters/targeting.h"
#include "core/error.h"

namespace freehold::adapters {
namespace {

constexpr char kRegexPrefix[] = "re:";

bool is_regex_entry(const std::string& s) { return absl::StartsWith(s, kRegexPrefix); }

void check_selector(const std::vector<std::string>& entries, const char* key, bool allow_all_linear,
                    std::vector<std::string>& problems) {
  for (const std::string& e : entries) {
    if (e.empty()) problems.push_back(absl::StrCat("adapter.", key, ": an empty module name"));
    if ((is_regex_entry(e) || (allow_all_linear && e == "all-linear")) && entries.size() != 1) {
      problems.push_back(absl::StrCat("adapter.", key, ": \"", e, "\" must be the only entry (it is not a module name)"));
    }
    if (is_regex_entry(e) && e.size() == 3) problems.push_back(absl::StrCat("adapter.", key, ": \"re:\" needs a regex after it"));
  }
}

io::ModuleSelector to_selector(const std::vector<std::string>& entries) {
  if (entries.empty()) return io::ModuleSelector::none();
  if (entries.size() == 1 && is_regex_entry(entries[0])) return io::ModuleSelector::of_regex(entries[0].substr(3));
  return io::ModuleSelector::of_names(entries);
}

}  // namespace

std::vector<std::string> validate_lora_options(const LoraOptions& o) {
  std::vector<std::string> problems;
  if (o.type != "lora") {
    problems.push_back(absl::StrCat("adapter.type: \"", o.type, "\"; expected lora (DoRA is adapter.use_dora: true)"));
  }
  if (o.r <= 0) problems.push_back(absl::StrCat("adapter.r: ", o.r, "; expected a positive integer"));
  if (!std::isfinite(o.alpha) || o.alpha <= 0) problems.push_back(absl::StrCat("adapter.alpha: ", o.alpha, "; expected a positive number"));
  if (!(o.dropout >= 0 && o.dropout < 1)) problems.push_back(absl::StrCat("adapter.dropout: ", o.dropout, "; expected a probability in [0, 1)"));
  if (o.target_modules.empty()) {
    problems.push_back("adapter.target_modules: empty; expected module names (e.g. [q_proj, v_proj]), all-linear, or \"re:<regex>\"");
  }
  check_selector(o.target_modules, "target_modules", true, problems);
  check_selector(o.exclude_modules, "exclude_modules", false, problems);
  if (!o.layers.empty() && o.target_modules.size() == 1 && is_regex_entry(o.target_modules[0])) {
    problems.push_back("adapter.layers: cannot be combined with a \"re:\" target_modules (as in PEFT); put the layer "
                       "numbers into the regex instead");
  }
  std::set<int64_t> layers;
  for (int64_t l : o.layers) {
    if (l < 0) problems.push_back(absl::StrCat("adapter.layers: ", l, " is not a layer index"));
    if (!layers.insert(l).second) problems.push_back(absl::StrCat("adapter.layers: ", l, " appears twice"));
  }
  for (const auto& [key, r] : o.rank_pattern) {
    if (key.empty()) problems.push_back("adapter.rank_pattern: an empty key");
    if (r <= 0) problems.push_back(absl::StrCat("adapter.rank_pattern.", key, ": ", r, "; expected a positive integer"));
  }
  for (const auto& [key, alpha] : o.alpha_pattern) {
    if (key.empty()) problems.push_back("adapter.alpha_pattern: an empty key");
    if (!std::isfinite(alpha) || alpha <= 0) {
      problems.push_back(absl::StrCat("adapter.alpha_pattern.", key, ": ", alpha, "; expected a positive number"));
    }
  }
  if (!parse_lora_init(o.init)) {
    problems.push_back(absl::StrCat("adapter.init: \"", o.init, "\"; expected default, gaussian, pissa, pissa_niter_N or olora"));
  }
  if (o.init_from && o.init_from->empty()) problems.push_back("adapter.init_from: empty path");
  return problems;
}

io::PeftAdapterConfig to_peft_config(const LoraOptions& o, const std::vector<std::string>& linear_modules,
                                     const std::string& base_model_name_or_path) {
  std::vector<std::string> problems = validate_lora_options(o);
  if (!problems.empty()) throw core::UsageError(absl::StrJoin(problems, "\n"));
  io::PeftAdapterConfig c;
  c.r = o.r;
  c.lora_alpha = o.alpha;
  c.lora_dropout = o.dropout;
  c.use_rslora = o.use_rslora;
  c.use_dora = o.use_dora;
  c.rank_pattern = o.rank_pattern;
  c.alpha_pattern = o.alpha_pattern;
  c.layers_to_transform = o.layers;
  c.exclude_modules = to_selector(o.exclude_modules);
  if (o.target_modules.size() == 1 && o.target_modules[0] == "all-linear") {
    // Names whose every module is excluded are left out, so each listed name targets something.
    std::set<std::string> last_names;
    for (const std::string& name : linear_modules) {
      const io::ModuleSelector& ex = c.exclude_modules;
      bool excluded = ex.kind == io::ModuleSelector::Kind::kRegex
                          ? regex_fullmatch(ex.regex, name, "adapter.exclude_modules")
                          : std::any_of(ex.names.begin(), ex.names.end(), [&](const std::string& e) {
                              return name == e || absl::EndsWith(name, absl::StrCat(".", e));
                            });
      if (!excluded) last_names.insert(name.substr(name.rfind('.') + 1));
    }
    if (last_names.empty()) throw core::UsageError("adapter.exclude_modules: excludes every linear module; nothing is left to adapt");
    c.target_modules = io::ModuleSelector::of_names({last_names.begin(), last_names.end()});
  } else {
    c.target_modules = to_selector(o.target_modules);
  }
  // What PEFT should do if it ever created this adapter afresh; the saved weights are what count (see
  // io::PeftAdapterConfig::init_lora_weights).
  c.init_lora_weights = "true";
  c.base_model_name_or_path = base_model_name_or_path;
  c.inference_mode = true;
  return c;
}

}  // namespace freehold::adapters
