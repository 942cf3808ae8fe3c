#include "launch/command_line.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/error.h"

namespace freehold::launch {
namespace {

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

const FlagSpec* find_spec(const std::vector<FlagSpec>& specs, std::string_view name) {
  for (const FlagSpec& spec : specs) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

}  // namespace

std::optional<std::string> closest_match(std::string_view word, const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (const std::string& candidate : candidates) {
    size_t d = edit_distance(word, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

bool ParsedArgs::has(std::string_view name) const { return values_.find(name) != values_.end(); }

std::optional<std::string> ParsedArgs::get(std::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::string ParsedArgs::get_or(std::string_view name, std::string fallback) const {
  return get(name).value_or(std::move(fallback));
}

std::vector<std::string> ParsedArgs::get_all(std::string_view name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

int64_t ParsedArgs::get_int(std::string_view name_view, int64_t fallback, int64_t min_value, int64_t max_value) const {
  const std::string name(name_view);
  auto text = get(name);
  if (!text) return fallback;
  int64_t value = 0;
  if (!absl::SimpleAtoi(*text, &value) || value < min_value || value > max_value) {
    throw core::UsageError(absl::StrCat(command_, ": --", name, " is \"", *text, "\"; expected an integer from ",
                                        min_value, " to ", max_value));
  }
  return value;
}

double ParsedArgs::get_double(std::string_view name_view, double fallback) const {
  const std::string name(name_view);
  auto text = get(name);
  if (!text) return fallback;
  double value = 0;
  if (!absl::SimpleAtod(*text, &value) || !std::isfinite(value)) {
    throw core::UsageError(absl::StrCat(command_, ": --", name, " is \"", *text, "\"; expected a number"));
  }
  return value;
}

ParsedArgs parse_command_line(std::string_view command_view, const std::vector<FlagSpec>& specs,
                              const std::vector<std::string>& args, int min_positionals, int max_positionals) {
  const std::string command(command_view);  // Debian's Abseil has its own string_view: StrCat takes std::string
  ParsedArgs parsed;
  parsed.command_ = std::string(command);
  std::vector<std::string> names;
  for (const FlagSpec& spec : specs) names.push_back("--" + spec.name);

  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.size() > 2 && arg.rfind("--", 0) == 0) {
      std::string name = arg.substr(2);
      std::optional<std::string> inline_value;
      if (size_t eq = name.find('='); eq != std::string::npos) {
        inline_value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      const FlagSpec* spec = find_spec(specs, name);
      if (spec == nullptr) {
        std::string hint;
        if (auto close = closest_match("--" + name, names)) hint = absl::StrCat(" (did you mean ", *close, "?)");
        throw core::UsageError(absl::StrCat(command, ": unknown option --", name, hint, "; run `freehold ", command,
                                            " --help` for the options"));
      }
      auto& slot = parsed.values_[spec->name];
      if (!slot.empty() && !spec->repeated) {
        throw core::UsageError(absl::StrCat(command, ": --", name, " given twice"));
      }
      if (spec->value_name.empty()) {
        if (inline_value) throw core::UsageError(absl::StrCat(command, ": --", name, " takes no value"));
        slot.push_back("true");
        continue;
      }
      if (inline_value) {
        slot.push_back(*inline_value);
        continue;
      }
      if (i + 1 >= args.size() || (args[i + 1].rfind("--", 0) == 0 && args[i + 1].size() > 2)) {
        throw core::UsageError(absl::StrCat(command, ": --", name, " needs a value (", spec->value_name, ")"));
      }
      slot.push_back(args[++i]);
      // A repeated flag takes every value up to the next flag: `--input a.jsonl b.jsonl`.
      while (spec->repeated && i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) slot.push_back(args[++i]);
      continue;
    }
    parsed.positionals_.push_back(arg);
  }
  // `--help` asks for the options: it is answered even when required flags or positionals are missing.
  if (parsed.has("help")) return parsed;
  for (const FlagSpec& spec : specs) {
    if (spec.required && !parsed.has(spec.name)) {
      throw core::UsageError(absl::StrCat(command, ": --", spec.name, " ", spec.value_name,
                                          " is required; run `freehold ", command, " --help` for the options"));
    }
  }
  const int n = static_cast<int>(parsed.positionals_.size());
  if (n < min_positionals || n > max_positionals) {
    throw core::UsageError(absl::StrCat(command, ": expected ",
                                        min_positionals == max_positionals
                                            ? absl::StrCat(min_positionals)
                                            : absl::StrCat(min_positionals, " to ", max_positionals),
                                        " positional argument(s), got ", n,
                                        n > 0 ? absl::StrCat(" (first: \"", parsed.positionals_[0], "\")") : ""));
  }
  return parsed;
}

std::string describe_flags(const std::vector<FlagSpec>& specs) {
  std::string out;
  for (const FlagSpec& spec : specs) {
    std::string left = absl::StrCat("  --", spec.name, spec.value_name.empty() ? "" : " ", spec.value_name);
    if (left.size() < 28) left.resize(28, ' ');
    // Every flag states its default: the help text names it, or it is required, off, or unset.
    std::string suffix;
    if (spec.required) {
      suffix = " (required)";
    } else if (spec.value_name.empty()) {
      if (spec.name != "help") suffix = " (default: off)";
    } else if (spec.help.find("default") == std::string::npos) {
      suffix = " (default: none)";
    }
    absl::StrAppend(&out, left, " ", spec.help, suffix, "\n");
  }
  return out;
}

}  // namespace freehold::launch
