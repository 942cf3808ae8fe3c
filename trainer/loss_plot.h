// The loss curve of a run as a self-contained SVG image: train loss, eval loss and learning rate against the step,
// read from the run's metrics.jsonl. Hand-written SVG (no plotting dependency) so that `freehold train` can leave
// runs/NAME/loss_curve.svg behind and `freehold plot RUN_DIR` can redraw it at any time, also mid-run.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace freehold::trainer {

// (step, value) points in file order.
using PlotSeries = std::vector<std::pair<int64_t, double>>;

struct RunCurves {
  PlotSeries train_loss;  // records with a finite "loss" (a skipped step logs null and is left out)
  PlotSeries eval_loss;   // records with "eval_loss"
  PlotSeries lr;          // records with "lr"
};

// The file name that `freehold train` writes into the run directory.
inline constexpr const char* kLossCurveFile = "loss_curve.svg";

// Reads metrics.jsonl. Every line must be one JSON object with an integer "step"; a blank, corrupt or non-object
// line, or a file without any record, throws a DataError naming the file and line.
RunCurves read_run_curves(const std::string& metrics_path);

// The SVG document: one <polyline> (or a single <circle> for one point) per non-empty series with ids
// "train-loss", "eval-loss" and "lr"; loss on the left axis, learning rate on the right one. `title` is escaped.
std::string render_loss_curve_svg(const RunCurves& curves, const std::string& title);

// Reads RUN_DIR/metrics.jsonl and writes the SVG atomically to out_path (RUN_DIR/loss_curve.svg when empty).
// Returns the path written. A missing directory or metrics file throws a UsageError naming it.
std::string write_loss_curve(const std::string& run_dir, const std::string& out_path = "");

}  // namespace freehold::trainer
