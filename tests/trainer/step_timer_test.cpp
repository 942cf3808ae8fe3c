// StepTimer: phases are attributed to the phase that was open, re-entered phases add up, time outside any phase
// is "other", and the metrics record has every key. Sleeps give lower bounds only (no upper-bound timing).
#include "trainer/step_timer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace freehold::trainer {
namespace {

using namespace std::chrono_literals;

TEST(StepTimerTest, AttributesTimeToTheOpenPhase) {
  StepTimer timer;
  timer.start();
  timer.enter(StepPhase::kForward);
  std::this_thread::sleep_for(30ms);
  timer.enter(StepPhase::kOptimizer);
  const StepTimes t = timer.stop();
  EXPECT_GE(t.of(StepPhase::kForward), 0.030);
  EXPECT_LT(t.of(StepPhase::kOptimizer), t.of(StepPhase::kForward));
  EXPECT_EQ(t.of(StepPhase::kData), 0.0);
  EXPECT_EQ(t.of(StepPhase::kBackward), 0.0);
  EXPECT_EQ(t.of(StepPhase::kComm), 0.0);
  EXPECT_GE(t.step_s, t.of(StepPhase::kForward) + t.of(StepPhase::kOptimizer));
}

TEST(StepTimerTest, ReenteredPhasesAddUpAndGapsAreOther) {
  StepTimer timer;
  timer.start();
  for (int micro = 0; micro < 3; ++micro) {
    timer.enter(StepPhase::kBackward);
    std::this_thread::sleep_for(10ms);
    timer.leave();
    std::this_thread::sleep_for(10ms);  // outside every phase
  }
  const StepTimes t = timer.stop();
  EXPECT_GE(t.of(StepPhase::kBackward), 0.030);
  EXPECT_GE(t.other_s(), 0.030);
}

TEST(StepTimerTest, StartResetsAndSyncRunsAtEveryBoundary) {
  int syncs = 0;
  StepTimer timer([&] { ++syncs; });
  timer.start();
  timer.enter(StepPhase::kData);
  std::this_thread::sleep_for(10ms);
  timer.stop();
  EXPECT_EQ(syncs, 3);  // start, enter, stop
  timer.start();
  timer.enter(StepPhase::kComm);
  const StepTimes t = timer.stop();
  EXPECT_EQ(t.of(StepPhase::kData), 0.0);
  EXPECT_EQ(syncs, 6);
}

TEST(StepTimerTest, CpuTimeCountsWorkNotSleep) {
  StepTimer timer;
  timer.start();
  timer.enter(StepPhase::kForward);
  const double until = process_cpu_seconds() + 0.02;
  volatile double sink = 0;
  while (process_cpu_seconds() < until) sink = sink + 1.0;  // 20 ms of CPU work
  timer.enter(StepPhase::kData);
  std::this_thread::sleep_for(30ms);  // wall time, next to no CPU time
  const StepTimes t = timer.stop();
  EXPECT_GE(t.phase_cpu_s[static_cast<int>(StepPhase::kForward)], 0.02);
  EXPECT_LT(t.phase_cpu_s[static_cast<int>(StepPhase::kData)], t.of(StepPhase::kData));
  EXPECT_GE(t.step_cpu_s, t.phase_cpu_s[static_cast<int>(StepPhase::kForward)]);
  EXPECT_EQ(step_times_json(t)["cpu"]["step"].get<double>(), t.step_cpu_s);
}

TEST(StepTimerTest, JsonHasEveryPhaseOtherAndStep) {
  StepTimes t;
  t.phase_s = {0.1, 0.2, 0.3, 0.0, 0.05};
  t.step_s = 0.7;
  const nlohmann::ordered_json j = step_times_json(t);
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"data", "forward", "backward", "comm", "optimizer", "other", "step", "cpu"}));
  EXPECT_EQ(j["cpu"].size(), 7u);
  EXPECT_DOUBLE_EQ(j["backward"].get<double>(), 0.3);
  EXPECT_NEAR(j["other"].get<double>(), 0.05, 1e-12);
  EXPECT_DOUBLE_EQ(j["step"].get<double>(), 0.7);
  t.step_s = 0.1;  // phases over the step (clock granularity): other is 0, never negative
  EXPECT_EQ(step_times_json(t)["other"].get<double>(), 0.0);
}

}  // namespace
}  // namespace freehold::trainer
