// The command line of one subcommand: `--flag VALUE`, `--flag=VALUE`, boolean `--flag`, and positionals.
// Unknown flags, missing values and missing required flags are UsageErrors (exit code 2) with a suggestion.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace freehold::launch {

struct FlagSpec {
  std::string name;        // without the dashes: "model"
  std::string value_name;  // "DIR"; empty for a boolean flag
  std::string help;
  bool required = false;
  bool repeated = false;   // may be given several times, or with several values up to the next flag
};

class ParsedArgs {
 public:
  bool has(std::string_view name) const;
  std::optional<std::string> get(std::string_view name) const;
  std::string get_or(std::string_view name, std::string fallback) const;
  std::vector<std::string> get_all(std::string_view name) const;
  // Integer or number flags, with the flag named in the error.
  int64_t get_int(std::string_view name, int64_t fallback, int64_t min_value, int64_t max_value) const;
  double get_double(std::string_view name, double fallback) const;
  const std::vector<std::string>& positionals() const { return positionals_; }

 private:
  friend ParsedArgs parse_command_line(std::string_view, const std::vector<FlagSpec>&, const std::vector<std::string>&,
                                       int, int);
  std::string command_;
  std::map<std::string, std::vector<std::string>, std::less<>> values_;
  std::vector<std::string> positionals_;
};

// Parses `args` for `command`; requires between min_positionals and max_positionals positional arguments.
ParsedArgs parse_command_line(std::string_view command, const std::vector<FlagSpec>& specs,
                              const std::vector<std::string>& args, int min_positionals, int max_positionals);

// "  --model DIR   the model directory (required)" lines for help texts. Every line states the flag's default:
// the help text names it ("default ..."), or the flag is required, a switch that is off, or has no value unless given.
std::string describe_flags(const std::vector<FlagSpec>& specs);

// The closest of `candidates` to `word` by edit distance, when it is close enough to be a likely typo.
std::optional<std::string> closest_match(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace freehold::launch
