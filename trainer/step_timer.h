// Where an optimizer step's wall time goes: data, forward, backward, communication and optimizer phases, written
// to metrics.jsonl as "time_s" (wall seconds, and under "cpu" the CPU time of the process: all its threads) with
// every logged step (issue 9; bench/train_bench.py reads them). The trainer switches phases at its boundaries; time between two
// phases (none is open) counts as "other". On a machine shared with other jobs the wall times stretch with the
// load while the CPU times do not (with several threads they include OpenMP's spin-waiting, though).
//
// CPU ops run synchronously, so a phase's wall time is its compute time. On a GPU, kernels are queued: pass a
// `sync` callback (a device synchronize) or the phases measure launch time and the wait lands in whatever phase
// blocks next (usually optimizer, at the grad-norm read).
#pragma once

#include <array>
#include <chrono>
#include <functional>
#include <string_view>

#include "nlohmann/json.hpp"

namespace freehold::trainer {

enum class StepPhase { kData = 0, kForward, kBackward, kComm, kOptimizer };
inline constexpr int kNumStepPhases = 5;

// "data", "forward", "backward", "comm", "optimizer": the keys of the metrics record.
std::string_view step_phase_name(StepPhase phase);

// One step's times in seconds. Micro-batches of a step add up in their phases.
struct StepTimes {
  std::array<double, kNumStepPhases> phase_s{};      // wall seconds, indexed by StepPhase
  double step_s = 0;                                 // start() to stop(); the phases plus "other"
  std::array<double, kNumStepPhases> phase_cpu_s{};  // process CPU seconds, indexed by StepPhase
  double step_cpu_s = 0;

  double of(StepPhase phase) const { return phase_s[static_cast<int>(phase)]; }
  double other_s() const;  // step_s minus the phases (never negative)
};

class StepTimer {
 public:
  explicit StepTimer(std::function<void()> sync = {}) : sync_(std::move(sync)) {}

  // Starts a step: all phases at zero, none open.
  void start();
  // Closes the open phase, if any, and opens `phase`. A phase may be entered many times in a step.
  void enter(StepPhase phase);
  // Closes the open phase, if any; later time is "other" until the next enter().
  void leave();
  // Closes the open phase and returns the step's times.
  StepTimes stop();

 private:
  using Clock = std::chrono::steady_clock;
  void close_open_phase(Clock::time_point now, double cpu_now);

  std::function<void()> sync_;
  StepTimes times_;
  Clock::time_point step_start_, phase_start_;
  double step_start_cpu_ = 0, phase_start_cpu_ = 0;
  int open_ = -1;  // the open StepPhase, or -1
};

// {"data": s, "forward": s, "backward": s, "comm": s, "optimizer": s, "other": s, "step": s, "cpu": {the same keys}}:
// wall seconds, and under "cpu" the process CPU seconds of the same phases.
nlohmann::ordered_json step_times_json(const StepTimes& times);

// CPU time of this process (every thread), in seconds.
double process_cpu_seconds();

}  // namespace freehold::trainer
