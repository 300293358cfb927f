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
// How long SpinWait spins before it also yields the core at each check: far
// longer than a decode stage's waits when every thread has a core (a few us).
constexpr auto kSpinYieldAfter = std::chrono::microseconds(50);

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

// Two kinds of jobs. A strict job (run_on_all) runs fn(i) exactly once on every
// thread i and waits for all of them. An elastic job (parallel_for) shares its
// work through a counter, so a worker that has not started by the time the
// caller has finished its own share is not waited for: on a busy device a
// preempted worker delays nothing instead of stalling every matrix product.
//
// `generation` is 2 * (dispatch count) + (1 if elastic); `elastic_state` is
// (dispatch count, 32 bits) << 32 | kClosed | (workers inside the job), so a
// worker enters an elastic job only while it is the current one and open.
constexpr uint64_t kClosed = uint64_t{1} << 31;
constexpr uint64_t kActiveMask = kClosed - 1;

struct ThreadPool::Impl {
  std::vector<std::thread> workers;
  const FunctionRef<void(int)>* job = nullptr;
  uint64_t dispatches = 0;                 // caller side only (under dispatch_mutex)
  std::atomic<uint64_t> generation{0};     // see above
  std::atomic<uint64_t> elastic_state{0};  // see above
  std::atomic<int> pending{0};             // strict jobs: workers still running
  std::atomic<int> sleepers{0};            // threads blocked (or about to block) on a cv
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::condition_variable wake_cv;  // workers wait here for a new generation
  std::condition_variable done_cv;  // the caller waits here for the job's end
  std::mutex dispatch_mutex;        // serializes callers from different threads
  std::mutex error_mutex;
  std::exception_ptr error;

  void record_error() {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (!error) error = std::current_exception();
  }

  void notify_done() {
    if (sleepers.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mutex);
      done_cv.notify_all();
    }
  }

  void run_job(int index) {
    t_inside_pool = true;
    try {
      (*job)(index);
    } catch (...) {
      record_error();
    }
    t_inside_pool = false;
  }

  void worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      auto has_work = [&] {
        // seq_cst pairs with the dispatcher's generation store / sleepers check.
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
      seen = generation.load(std::memory_order_seq_cst);
      if ((seen & 1) == 0) {
        run_job(index);
        if (pending.fetch_sub(1, std::memory_order_seq_cst) == 1) notify_done();
        continue;
      }
      const uint64_t tag = (seen >> 1) & 0xffffffffu;
      uint64_t state = elastic_state.load(std::memory_order_seq_cst);
      bool entered = false;
      while ((state >> 32) == tag && (state & kClosed) == 0) {
        if (elastic_state.compare_exchange_weak(state, state + 1, std::memory_order_seq_cst)) {
          entered = true;
          break;
        }
      }
      if (!entered) continue;  // that job is over (or a newer one began)
      run_job(index);
      const uint64_t after = elastic_state.fetch_sub(1, std::memory_order_seq_cst) - 1;
      if ((after & kActiveMask) == 0 && (after & kClosed) != 0) notify_done();
    }
  }

  // Runs fn here as thread 0 after publishing it; returns when the job is over.
  void dispatch(const FunctionRef<void(int)>& fn, int n_threads, bool elastic) {
    error = nullptr;
    job = &fn;
    ++dispatches;
    if (elastic) {
      elastic_state.store((dispatches & 0xffffffffu) << 32, std::memory_order_seq_cst);
    } else {
      pending.store(n_threads - 1, std::memory_order_relaxed);
    }
    generation.store(2 * dispatches + (elastic ? 1 : 0), std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) > 0) {
      // Taking the mutex orders this with a worker between its check and its wait.
      std::lock_guard<std::mutex> lock(mutex);
      wake_cv.notify_all();
    }
    run_job(0);
    auto done = [&] {
      if (elastic) return (elastic_state.load(std::memory_order_seq_cst) & kActiveMask) == 0;
      return pending.load(std::memory_order_seq_cst) == 0;
    };
    if (elastic) elastic_state.fetch_or(kClosed, std::memory_order_seq_cst);
    if (!spin_until(done)) {
      std::unique_lock<std::mutex> lock(mutex);
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      done_cv.wait(lock, done);
      sleepers.fetch_sub(1, std::memory_order_relaxed);
    }
    job = nullptr;
    if (error) {
      std::exception_ptr e = error;
      error = nullptr;
      std::rethrow_exception(e);
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
  std::lock_guard<std::mutex> dispatch_lock(impl_->dispatch_mutex);
  impl_->dispatch(fn, n_threads_, /*elastic=*/false);
}

void ThreadPool::run_shared(FunctionRef<void(int thread_index)> fn) {
  if (n_threads_ == 1 || t_inside_pool) {
    fn(0);
    return;
  }
  std::lock_guard<std::mutex> dispatch_lock(impl_->dispatch_mutex);
  impl_->dispatch(fn, n_threads_, /*elastic=*/true);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              FunctionRef<void(int64_t begin, int64_t end)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  // Two chunks per thread, handed out from a shared counter: if the OS
  // preempts one worker (other programs on a small device), the others take
  // over its remaining chunks instead of waiting for it. More chunks balance
  // better but every claim moves the counter's cache line between cores: on
  // SmolLM2-sized matrices (a few microseconds each) 2 decoded 6-13% faster
  // than 4 at 2 threads.
  constexpr int64_t kChunksPerThread = 2;
  const int64_t chunks =
      std::min<int64_t>(n_threads_ * kChunksPerThread, std::max<int64_t>(1, n / grain));
  if (chunks <= 1 || n_threads_ == 1 || t_inside_pool) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  run_shared([&](int) {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
         c = next.fetch_add(1, std::memory_order_relaxed)) {
      const int64_t begin = n * c / chunks;
      const int64_t end = n * (c + 1) / chunks;
      if (begin < end) fn(begin, end);
    }
  });
}

void SpinWait::pause() {
  cpu_relax();
  // The clock is read every 64 checks, as in spin_until().
  if ((++checks_ & 63) != 0) return;
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  if (deadline_ns_ == 0) {
    deadline_ns_ =
        now + std::chrono::duration_cast<std::chrono::nanoseconds>(kSpinYieldAfter).count();
  } else if (now >= deadline_ns_) {
    std::this_thread::yield();
  }
}

}  // namespace edgelm
