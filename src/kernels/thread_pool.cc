#include "kernels/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace edgelm {
namespace {

// How long an idle thread spins before sleeping. A decode step dispatches a few
// times per layer with short gaps, so a brief spin avoids futex wake-ups there,
// while a longer pause (waiting for user input) costs no CPU.
constexpr auto kSpinTime = std::chrono::microseconds(100);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

// Spins until pred() holds or kSpinTime passes; returns pred().
template <typename Pred>
bool spin_until(Pred pred) {
  if (pred()) return true;
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return pred();
  }
}

// Set while a thread runs pool work, so a nested call runs inline instead of
// waiting on workers that are busy with the outer call.
thread_local bool t_inside_pool = false;

}  // namespace

struct ThreadPool::Impl {
  std::vector<std::thread> workers;
  const FunctionRef<void(int)>* job = nullptr;
  std::atomic<uint64_t> generation{0};  // bumped once per dispatch
  std::atomic<int> pending{0};          // workers still running the current job
  std::atomic<int> sleepers{0};         // threads blocked (or about to block) on cv
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::condition_variable wake_cv;  // workers wait here for a new generation
  std::condition_variable done_cv;  // the caller waits here for pending == 0
  std::mutex dispatch_mutex;        // serializes callers from different threads
  std::mutex error_mutex;
  std::exception_ptr error;

  void record_error() {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (!error) error = std::current_exception();
  }

  void worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      auto has_work = [&] {
        // seq_cst pairs with the dispatcher's generation bump / sleepers check.
        return generation.load(std::memory_order_seq_cst) != seen ||
               stop.load(std::memory_order_seq_cst);
      };
      if (!spin_until(has_work)) {
        std::unique_lock<std::mutex> lock(mutex);
        sleepers.fetch_add(1, std::memory_order_seq_cst);
        wake_cv.wait(lock, has_work);
        sleepers.fetch_sub(1, std::memory_order_relaxed);
      }
      if (stop.load(std::memory_order_acquire)) return;
      seen = generation.load(std::memory_order_acquire);
      t_inside_pool = true;
      try {
        (*job)(index);
      } catch (...) {
        record_error();
      }
      t_inside_pool = false;
      if (pending.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
          sleepers.load(std::memory_order_seq_cst) > 0) {
        std::lock_guard<std::mutex> lock(mutex);
        done_cv.notify_all();
      }
    }
  }
};

ThreadPool::ThreadPool(int n_threads) : impl_(std::make_unique<Impl>()) {
  if (n_threads <= 0)
    n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  n_threads_ = n_threads;
  impl_->workers.reserve(n_threads - 1);
  for (int i = 1; i < n_threads; ++i) {
    impl_->workers.emplace_back([this, i] { impl_->worker_loop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop.store(true, std::memory_order_seq_cst);
    impl_->wake_cv.notify_all();
  }
  for (std::thread& t : impl_->workers) t.join();
}

void ThreadPool::run_on_all(FunctionRef<void(int thread_index)> fn) {
  if (n_threads_ == 1 || t_inside_pool) {
    // No workers, or a nested call from pool work: run every index here.
    for (int i = 0; i < n_threads_; ++i) fn(i);
    return;
  }
  Impl& p = *impl_;
  std::lock_guard<std::mutex> dispatch_lock(p.dispatch_mutex);
  p.error = nullptr;
  p.job = &fn;
  p.pending.store(n_threads_ - 1, std::memory_order_relaxed);
  p.generation.fetch_add(1, std::memory_order_seq_cst);
  if (p.sleepers.load(std::memory_order_seq_cst) > 0) {
    // Taking the mutex orders this with a worker between its check and its wait.
    std::lock_guard<std::mutex> lock(p.mutex);
    p.wake_cv.notify_all();
  }

  t_inside_pool = true;
  try {
    fn(0);
  } catch (...) {
    p.record_error();
  }
  t_inside_pool = false;

  auto all_done = [&] { return p.pending.load(std::memory_order_seq_cst) == 0; };
  if (!spin_until(all_done)) {
    std::unique_lock<std::mutex> lock(p.mutex);
    p.sleepers.fetch_add(1, std::memory_order_seq_cst);
    p.done_cv.wait(lock, all_done);
    p.sleepers.fetch_sub(1, std::memory_order_relaxed);
  }
  p.job = nullptr;
  if (p.error) {
    std::exception_ptr error = p.error;
    p.error = nullptr;
    std::rethrow_exception(error);
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              FunctionRef<void(int64_t begin, int64_t end)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  // A few chunks per thread, handed out from a shared counter: if the OS
  // preempts one worker (other programs on a small device), the others take
  // over its remaining chunks instead of waiting for it.
  constexpr int64_t kChunksPerThread = 4;
  const int64_t chunks =
      std::min<int64_t>(n_threads_ * kChunksPerThread, std::max<int64_t>(1, n / grain));
  if (chunks <= 1 || n_threads_ == 1 || t_inside_pool) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  run_on_all([&](int) {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
         c = next.fetch_add(1, std::memory_order_relaxed)) {
      const int64_t begin = n * c / chunks;
      const int64_t end = n * (c + 1) / chunks;
      if (begin < end) fn(begin, end);
    }
  });
}

}  // namespace edgelm
