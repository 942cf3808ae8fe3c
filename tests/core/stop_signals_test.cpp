// core/stop_signals.h: after route_stop_signals_to_own_thread(), a process-directed SIGUSR1 is handled on a thread
// that is neither the caller nor a thread started later, and SIGTERM without a handler still ends the process. Each
// case runs in a forked child, so this test binary's own signal mask stays as it was.
#include "core/stop_signals.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

namespace freehold::core {
namespace {

std::atomic<pthread_t> g_handler_thread{};
std::atomic<int> g_handled{0};
extern "C" void record_handler_thread(int) {
  g_handler_thread.store(pthread_self());
  g_handled.fetch_add(1);
}

bool blocks_stop_signals() {
  sigset_t mask;
  pthread_sigmask(SIG_BLOCK, nullptr, &mask);
  return sigismember(&mask, SIGUSR1) == 1 && sigismember(&mask, SIGTERM) == 1;
}

// Runs `body` in a child process and returns its wait status.
template <typename Body>
int in_child(Body body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

TEST(StopSignalsTest, SigusrIsHandledOnItsOwnThreadNeverOnTheCallerOrLaterThreads) {
  const int status = in_child([] {
    if (blocks_stop_signals()) return 10;  // the child starts with them unblocked, as a process does
    struct sigaction action;
    std::memset(&action, 0, sizeof(action));
    action.sa_handler = record_handler_thread;
    sigemptyset(&action.sa_mask);
    sigaction(SIGUSR1, &action, nullptr);
    route_stop_signals_to_own_thread();
    route_stop_signals_to_own_thread();  // idempotent: still one thread
    if (!blocks_stop_signals()) return 11;
    std::atomic<bool> worker_blocks{false}, stop{false};
    std::thread worker([&] {
      worker_blocks = blocks_stop_signals();
      while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
    const pthread_t worker_id = worker.native_handle();
    for (int i = 0; i < 20; ++i) kill(getpid(), SIGUSR1);  // the process, as kill(1) and srun --signal send it
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (g_handled.load() == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    stop = true;
    worker.join();
    if (!worker_blocks) return 12;
    if (g_handled.load() == 0) return 13;
    const pthread_t handler = g_handler_thread.load();
    if (pthread_equal(handler, pthread_self()) || pthread_equal(handler, worker_id)) return 14;
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: blocked before the call; 11: the caller does not block them; 12: a later "
                                       "thread does not block them; 13: never handled; 14: handled on the caller "
                                       "or a later thread";
}

TEST(StopSignalsTest, SigtermWithoutAHandlerStillEndsTheProcess) {
  const int status = in_child([] {
    signal(SIGTERM, SIG_DFL);
    route_stop_signals_to_own_thread();
    kill(getpid(), SIGTERM);
    std::this_thread::sleep_for(std::chrono::seconds(10));
    return 0;  // reached only if the signal was lost
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "the child exited with status " << status << " instead of dying by SIGTERM";
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
}

}  // namespace
}  // namespace freehold::core
