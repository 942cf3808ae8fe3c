// Per-phase wall time of an optimizer step; see step_timer.h.
#include "trainer/step_timer.h"

#include <algorithm>

namespace freehold::trainer {

std::string_view step_phase_name(StepPhase phase) {
  switch (phase) {
    case StepPhase::kData: return "data";
    case StepPhase::kForward: return "forward";
    case StepPhase::kBackward: return "backward";
    case StepPhase::kComm: return "comm";
    case StepPhase::kOptimizer: return "optimizer";
  }
  return "?";
}

double StepTimes::other_s() const {
  double phases = 0;
  for (double s : phase_s) phases += s;
  return std::max(0.0, step_s - phases);
}

void StepTimer::start() {
  if (sync_) sync_();
  times_ = StepTimes{};
  open_ = -1;
  step_start_ = Clock::now();
}

void StepTimer::close_open_phase(Clock::time_point now) {
  if (open_ >= 0) times_.phase_s[open_] += std::chrono::duration<double>(now - phase_start_).count();
  open_ = -1;
}

void StepTimer::enter(StepPhase phase) {
  if (sync_) sync_();
  const Clock::time_point now = Clock::now();
  close_open_phase(now);
  open_ = static_cast<int>(phase);
  phase_start_ = now;
}

void StepTimer::leave() {
  if (sync_) sync_();
  close_open_phase(Clock::now());
}

StepTimes StepTimer::stop() {
  if (sync_) sync_();
  const Clock::time_point now = Clock::now();
  close_open_phase(now);
  times_.step_s = std::chrono::duration<double>(now - step_start_).count();
  return times_;
}

nlohmann::ordered_json step_times_json(const StepTimes& times) {
  nlohmann::ordered_json j;
  for (int i = 0; i < kNumStepPhases; ++i) j[std::string(step_phase_name(static_cast<StepPhase>(i)))] = times.phase_s[i];
  j["other"] = times.other_s();
  j["step"] = times.step_s;
  return j;
}

}  // namespace freehold::trainer
