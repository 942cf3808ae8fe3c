// `freehold plot RUN_DIR [--out FILE]`: draws the loss curve (train loss, eval loss, learning rate) of a run from
// its metrics.jsonl as an SVG image. Works during a run as well as after it; `freehold train` writes the same
// image into the run directory when it ends.
#include <cstdio>
#include <string>
#include <vector>

#include "core/log.h"
#include "launch/command_line.h"
#include "launch/commands.h"
#include "trainer/loss_plot.h"

namespace freehold::launch {
namespace {

const std::vector<FlagSpec>& plot_flags() {
  static const std::vector<FlagSpec> flags = {
      {"out", "FILE", "the SVG file to write (default: RUN_DIR/loss_curve.svg)"},
      {"help", "", "show this help"},
  };
  return flags;
}

}  // namespace

int run_plot(const std::vector<std::string>& args) {
  ParsedArgs flags = parse_command_line("plot", plot_flags(), args, 1, 1);
  if (flags.has("help")) {
    std::printf("usage: freehold plot RUN_DIR [--out FILE]\n\nDraws train loss, eval loss and the learning rate of a "
                "run from RUN_DIR/metrics.jsonl as an SVG image.\n\n%s",
                describe_flags(plot_flags()).c_str());
    return 0;
  }
  const std::string written = trainer::write_loss_curve(flags.positionals()[0], flags.get_or("out", ""));
  core::log_info("loss curve written to ", written);
  return 0;
}

}  // namespace freehold::launch
