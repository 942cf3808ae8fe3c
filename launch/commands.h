// The subcommands of the `freehold` binary (DESIGN.md §3). Each takes the arguments after its name and returns
// the process exit code; errors are thrown and mapped to exit codes by main().
#pragma once

#include <string>
#include <vector>

namespace freehold::launch {

struct Command {
  std::string name;
  std::string summary;
  int (*run)(const std::vector<std::string>& args);
};

int run_train(const std::vector<std::string>& args);
int run_validate(const std::vector<std::string>& args);
int run_score(const std::vector<std::string>& args);
int run_inspect(const std::vector<std::string>& args);
int run_tokenize(const std::vector<std::string>& args);
int run_prepare(const std::vector<std::string>& args);
int run_adapter(const std::vector<std::string>& args);
int run_export(const std::vector<std::string>& args);
int run_generate(const std::vector<std::string>& args);
int run_plot(const std::vector<std::string>& args);

const std::vector<Command>& all_commands();

}  // namespace freehold::launch
