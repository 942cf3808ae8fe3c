// The stop signals' own thread; see stop_signals.h.
#include "core/stop_signals.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/error.h"

namespace freehold::core {
namespace {

sigset_t stop_signal_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGTERM);
  return set;
}

// The thread's whole life: take the stop signals, then sleep; pause() returns after each handled signal.
void receive_stop_signals() {
  const sigset_t set = stop_signal_set();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  for (;;) pause();
}

}  // namespace

void route_stop_signals_to_own_thread() {
  static std::once_flag once;
  std::call_once(once, [] {
    const sigset_t set = stop_signal_set();
    const int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr);
    FH_CHECK(rc == 0, "pthread_sigmask(SIG_BLOCK, {SIGUSR1, SIGTERM}): ", std::strerror(rc));
    try {
      std::thread(receive_stop_signals).detach();
    } catch (const std::system_error& e) {
      // Without the thread the signals would stay blocked and a stop request would be lost: undo and say so.
      pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
      throw Error(absl::StrCat("cannot start the thread that receives SIGUSR1/SIGTERM: ", e.what()));
    }
  });
}

}  // namespace freehold::core
