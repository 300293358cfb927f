// A fixed pool of worker threads for data-parallel loops. The caller's thread
// takes part, so ThreadPool(1) runs everything inline with no threads at all.
#pragma once

#include <cstdint>
#include <memory>

#include "util/function_ref.h"

namespace edgelm {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads <= 0: hardware concurrency
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // Work is passed by reference, not copied: dispatch never allocates.
  // Calls fn(thread_index) once on each of the size() threads and waits for all.
  void run_on_all(FunctionRef<void(int thread_index)> fn);
  // For work that fn shares out itself (e.g. from an atomic counter): calls
  // fn(0) here and fn(i) on the workers that start before fn(0) returns; a
  // worker that has not started by then (preempted on a busy machine) is
  // skipped rather than waited for. Returns when every started call is done.
  void run_shared(FunctionRef<void(int thread_index)> fn);
  // Splits [0, n) into contiguous chunks of at least `grain` items and calls
  // fn(begin, end) for each, in parallel; returns when all are done.
  void parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t begin, int64_t end)> fn);

 private:
  struct Impl;
  int n_threads_;
  std::unique_ptr<Impl> impl_;
};

// For work that waits on another pool thread's progress inside the same job:
// call pause() once per check. It spins (x86 pause, ARM yield) for the first
// kSpinYieldAfter, then also yields the core at every check, so that a thread
// the OS preempted (more runnable threads than cores: two decoding processes
// on a 2-core device) runs instead of its waiter spinning through a time slice.
class SpinWait {
 public:
  void pause();

 private:
  uint32_t checks_ = 0;
  int64_t deadline_ns_ = 0;  // steady-clock time from which to yield; 0: not set yet
};

}  // namespace edgelm
