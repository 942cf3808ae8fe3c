// Where an optimizer step's wall time goes: data, forward, backward, communication and optimizer phases, written
// to metrics.jsonl as "time_s" with every logged step (issue 9; bench/train_bench.py reads them). The trainer
// switches phases at its boundaries; time between two phases (none is open) counts as "other".
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
  std::array<double, kNumStepPhases> phase_s{};  // indexed by StepPhase
  double step_s = 0;                             // start() to stop(); the phases plus "other"

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
  void close_open_phase(Clock::time_point now);

  std::function<void()> sync_;
  StepTimes times_;
  Clock::time_point step_start_;
  Clock::time_point phase_start_;
  int open_ = -1;  // the open StepPhase, or -1
};

// {"data": s, "forward": s, "backward": s, "comm": s, "optimizer": s, "other": s, "step": s}
nlohmann::ordered_json step_times_json(const StepTimes& times);

}  // namespace freehold::trainer
