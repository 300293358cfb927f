#include "kernels/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

namespace edgelm {
namespace {

TEST(ThreadPoolTest, ParallelForCoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 3, 7, 64, 1000, 4097}) {
      for (int64_t grain : {1, 3, 100}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.parallel_for(n, grain, [&](int64_t begin, int64_t end) {
          ASSERT_LE(0, begin);
          ASSERT_LT(begin, end);
          ASSERT_LE(end, n);
          for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[i].load(), 1) << "threads " << threads << " n " << n << " i " << i;
        }
      }
    }
  }
}

TEST(ThreadPoolTest, ChunksRespectGrain) {
  ThreadPool pool(3);
  std::atomic<int> calls{0};
  pool.parallel_for(10, 6, [&](int64_t begin, int64_t end) {
    calls.fetch_add(1);
    EXPECT_TRUE(begin == 0 && end == 10);  // 10 items < 2 grains: one chunk
  });
  EXPECT_EQ(calls.load(), 1);
}

TEST(ThreadPoolTest, RunOnAllCallsEachIndexOnceOnDistinctThreads) {
  ThreadPool pool(4);
  for (int round = 0; round < 200; ++round) {
    std::vector<std::atomic<int>> hits(4);
    std::vector<std::thread::id> ids(4);
    pool.run_on_all([&](int i) {
      hits[i].fetch_add(1);
      ids[i] = std::this_thread::get_id();
    });
    std::set<std::thread::id> distinct(ids.begin(), ids.end());
    ASSERT_EQ(distinct.size(), 4u);
    EXPECT_EQ(ids[0], std::this_thread::get_id());  // the caller takes part
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  }
}

TEST(ThreadPoolTest, SingleThreadRunsInline) {
  ThreadPool pool(1);
  std::thread::id seen;
  pool.run_on_all([&](int i) {
    EXPECT_EQ(i, 0);
    seen = std::this_thread::get_id();
  });
  EXPECT_EQ(seen, std::this_thread::get_id());
}

TEST(ThreadPoolTest, DefaultSizeIsPositive) {
  ThreadPool pool(0);
  EXPECT_GE(pool.size(), 1);
}

TEST(ThreadPoolTest, WorksAfterWorkersFallAsleep) {
  ThreadPool pool(3);
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // past the spin time
    std::atomic<int64_t> sum{0};
    pool.parallel_for(300, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum.fetch_add(i);
    });
    EXPECT_EQ(sum.load(), 299 * 300 / 2);
  }
}

TEST(ThreadPoolTest, ManyQuickDispatches) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  for (int i = 0; i < 20000; ++i) {
    pool.run_on_all([&](int t) { total.fetch_add(t + 1); });
  }
  EXPECT_EQ(total.load(), 20000 * 3);
}

TEST(ThreadPoolTest, ExceptionsReachTheCaller) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.run_on_all([](int i) {
    if (i == 2) throw std::runtime_error("boom");
  }),
               std::runtime_error);
  EXPECT_THROW(pool.run_on_all([](int i) {
    if (i == 0) throw std::runtime_error("boom");
  }),
               std::runtime_error);
  // Still usable afterwards.
  std::atomic<int> n{0};
  pool.run_on_all([&](int) { n.fetch_add(1); });
  EXPECT_EQ(n.load(), 3);
}

TEST(ThreadPoolTest, NestedCallsRunInline) {
  ThreadPool pool(2);
  std::atomic<int> inner{0};
  pool.run_on_all([&](int) {
    pool.parallel_for(10, 1, [&](int64_t b, int64_t e) { inner.fetch_add(int(e - b)); });
  });
  EXPECT_EQ(inner.load(), 20);
}

TEST(ThreadPoolTest, CallsFromTwoThreadsAreSerialized) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  auto work = [&] {
    for (int i = 0; i < 500; ++i) {
      pool.parallel_for(8, 1, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
    }
  };
  std::thread a(work), b(work);
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 2 * 500 * 8);
}

}  // namespace
}  // namespace edgelm

namespace edgelm {
namespace {

// run_shared: every item handed out through the counter is done exactly once,
// whichever workers join; mixed with strict run_on_all jobs and parallel_for on
// more threads than cores, so workers regularly start late or miss a job.
TEST(ThreadPoolTest, RunSharedMixedWithRunOnAllUnderOversubscription) {
  ThreadPool pool(4);
  std::vector<int> hits(97);
  for (int round = 0; round < 3000; ++round) {
    std::atomic<int64_t> next{0};
    std::fill(hits.begin(), hits.end(), 0);
    pool.run_shared([&](int thread) {
      EXPECT_GE(thread, 0);
      EXPECT_LT(thread, 4);
      for (int64_t i = next.fetch_add(1); i < 97; i = next.fetch_add(1)) ++hits[i];
    });
    for (int h : hits) ASSERT_EQ(h, 1) << "round " << round;
    std::atomic<int> calls{0};
    int seen[4] = {};
    pool.run_on_all([&](int thread) {
      ++seen[thread];
      calls.fetch_add(1);
    });
    ASSERT_EQ(calls.load(), 4);
    for (int c : seen) ASSERT_EQ(c, 1);
    std::atomic<int64_t> sum{0};
    pool.parallel_for(1000, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum.fetch_add(i);
    });
    ASSERT_EQ(sum.load(), 1000 * 999 / 2);
  }
}

TEST(ThreadPoolTest, RunSharedPropagatesExceptions) {
  ThreadPool pool(2);
  EXPECT_THROW(pool.run_shared([](int thread) {
    if (thread == 0) throw std::runtime_error("boom");
  }),
               std::runtime_error);
  // The pool still works afterwards.
  std::atomic<int> calls{0};
  pool.run_on_all([&](int) { calls.fetch_add(1); });
  EXPECT_EQ(calls.load(), 2);
}

}  // namespace
}  // namespace edgelm
