// Where SIGUSR1 and SIGTERM land: one thread of their own, never a thread that computes.
//
// The kernel writes a signal's frame (with the AVX-512 register state, about 3.5 KB) below the stack pointer of the
// thread it interrupts. oneDNN's generated f32 GEMM kernels (jit_avx512_common_gemm_f32, jit_avx_gemm_f32, as bundled
// in torch 2.11's oneDNN 3.10) point rsp at a heap workspace while they run, so a handled signal that interrupts one
// writes its frame into the heap: "corrupted size vs. prev_size" at a later free, or a crash inside oneDNN
// (uxlfoundation/oneDNN#4845, fixed in oneDNN 3.11.2). The stop signals are handled (trainer/trainer.h), so they must
// reach a thread that runs no such code.
//
// route_stop_signals_to_own_thread() blocks both in the calling thread, which every thread started afterwards
// inherits (OpenMP's pool, MPI's progress threads, torch's), and starts one thread with both unblocked that only
// waits. A signal sent to the process (kill, srun --signal, scancel) is then delivered to that thread, and its
// handler, or the default action when none is installed, runs there. Call it first in main, before any thread starts.
#pragma once

namespace freehold::core {

// Idempotent; thread-safe. Logs nothing. Throws core::Error when the thread cannot be started.
void route_stop_signals_to_own_thread();

}  // namespace freehold::core
