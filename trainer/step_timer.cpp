// Per-phase wall and CPU time of an optimizer step; see step_timer.h.
#include "trainer/step_timer.h"

#include <time.h>

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

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
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
  step_start_cpu_ = process_cpu_seconds();
}

void StepTimer::close_open_phase(Clock::time_point now, double cpu_now) {
  if (open_ >= 0) {
    times_.phase_s[open_] += std::chrono::duration<double>(now - phase_start_).count();
    times_.phase_cpu_s[open_] += cpu_now - phase_start_cpu_;
  }
  open_ = -1;
}

void StepTimer::enter(StepPhase phase) {
  if (sync_) sync_();
  const Clock::time_point now = Clock::now();
  const double cpu_now = process_cpu_seconds();
  close_open_phase(now, cpu_now);
  open_ = static_cast<int>(phase);
  phase_start_ = now;
  phase_start_cpu_ = cpu_now;
}

void StepTimer::leave() {
  if (sync_) sync_();
  close_open_phase(Clock::now(), process_cpu_seconds());
}

StepTimes StepTimer::stop() {
  if (sync_) sync_();
  const Clock::time_point now = Clock::now();
  const double cpu_now = process_cpu_seconds();
  close_open_phase(now, cpu_now);
  times_.step_s = std::chrono::duration<double>(now - step_start_).count();
  times_.step_cpu_s = cpu_now - step_start_cpu_;
  return times_;
}

namespace {
nlohmann::ordered_json phases_json(const std::array<double, kNumStepPhases>& phases, double step) {
  nlohmann::ordered_json j;
  double sum = 0;
  for (int i = 0; i < kNumStepPhases; ++i) {
    j[std::string(step_phase_name(static_cast<StepPhase>(i)))] = phases[i];
    sum += phases[i];
  }
  j["other"] = std::max(0.0, step - sum);
  j["step"] = step;
  return j;
}
}  // namespace

nlohmann::ordered_json step_times_json(const StepTimes& times) {
  nlohmann::ordered_json j = phases_json(times.phase_s, times.step_s);
  j["cpu"] = phases_json(times.phase_cpu_s, times.step_cpu_s);
  return j;
}

}  // namespace freehold::trainer
