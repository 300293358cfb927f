#include "server/scheduler.h"

#include <gtest/gtest.h>

#include <atomic>

namespace edgelm::server {
namespace {

using namespace std::chrono_literals;

// A fake executor: emits `n` tokens "t" unless cancelled; jobs wait for a
// release signal first so tests control when slots are busy.
struct FakeEngine {
  std::mutex mutex;
  std::condition_variable cv;
  bool released = false;
  std::atomic<int> started{0};
  std::atomic<int> max_concurrent{0};
  std::atomic<int> running{0};

  void release() {
    std::lock_guard<std::mutex> lock(mutex);
    released = true;
    cv.notify_all();
  }

  void run(int, Job& job) {
    int now = ++running;
    int seen = max_concurrent.load();
    while (now > seen && !max_concurrent.compare_exchange_weak(seen, now)) {
    }
    ++started;
    {
      std::unique_lock<std::mutex> lock(mutex);
      // Polls: cancellation only sets a flag, it does not notify this fake.
      while (!released && !job.cancelled) cv.wait_for(lock, 1ms);
    }
    GenerateResult result;
    result.finish_reason = FinishReason::kLength;
    for (int i = 0; i < job.options.max_tokens; ++i) {
      if (job.cancelled) {
        result.finish_reason = FinishReason::kCancelled;
        break;
      }
      job.append_text("t");
      result.text += "t";
      ++result.completion_tokens;
    }
    --running;
    job.finish(result);
  }
};

std::shared_ptr<Job> make_job(int max_tokens) {
  auto job = std::make_shared<Job>();
  job->options.max_tokens = max_tokens;
  return job;
}

// Drains a job's channel until it finishes; returns the streamed text.
std::string drain(Job& job) {
  std::string text;
  while (!job.wait(1000ms, text)) {
  }
  return text;
}

void wait_until(const std::function<bool()>& condition) {
  for (int i = 0; i < 2000 && !condition(); ++i) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(condition());
}

TEST(Scheduler, RunsJobsAndStreamsText) {
  FakeEngine engine;
  engine.release();
  Scheduler scheduler(2, 4, [&](int slot, Job& job) { engine.run(slot, job); });
  auto job = make_job(5);
  ASSERT_EQ(scheduler.submit(job), Scheduler::Admission::kAccepted);
  EXPECT_EQ(drain(*job), "ttttt");
  EXPECT_EQ(job->result.completion_tokens, 5);
  EXPECT_EQ(job->generated_tokens, 5);
  EXPECT_EQ(job->error_status, 0);
}

TEST(Scheduler, QueueLimitGives429AndNeverExceedsSlots) {
  FakeEngine engine;
  Scheduler scheduler(2, 3, [&](int slot, Job& job) { engine.run(slot, job); });
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 5; ++i) {  // 2 running + 3 queued
    jobs.push_back(make_job(2));
    ASSERT_EQ(scheduler.submit(jobs.back()), Scheduler::Admission::kAccepted) << i;
  }
  wait_until([&] { return engine.started == 2; });
  EXPECT_EQ(scheduler.busy_slots(), 2);
  EXPECT_EQ(scheduler.queue_depth(), 3);
  EXPECT_EQ(scheduler.submit(make_job(2)), Scheduler::Admission::kQueueFull);
  engine.release();
  for (auto& job : jobs) EXPECT_EQ(drain(*job), "tt");
  EXPECT_EQ(engine.max_concurrent, 2);
  EXPECT_TRUE(scheduler.wait_idle(Clock::now() + 5s));
  EXPECT_EQ(scheduler.submit(make_job(1)), Scheduler::Admission::kAccepted);
}

TEST(Scheduler, CancelQueuedJobFinishesItWithoutRunning) {
  FakeEngine engine;
  Scheduler scheduler(1, 2, [&](int slot, Job& job) { engine.run(slot, job); });
  auto running = make_job(3), queued = make_job(3);
  scheduler.submit(running);
  scheduler.submit(queued);
  wait_until([&] { return engine.started == 1; });
  scheduler.cancel(queued);
  std::string text;
  ASSERT_TRUE(queued->wait(1000ms, text));
  EXPECT_EQ(queued->result.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(scheduler.queue_depth(), 0);
  engine.release();
  EXPECT_EQ(drain(*running), "ttt");
  EXPECT_EQ(engine.started, 1);
}

TEST(Scheduler, CancelRunningJobFreesTheSlot) {
  FakeEngine engine;
  Scheduler scheduler(1, 1, [&](int slot, Job& job) { engine.run(slot, job); });
  auto job = make_job(1000000);
  scheduler.submit(job);
  wait_until([&] { return engine.started == 1; });
  scheduler.cancel(job);  // wakes the fake engine, which then stops at once
  drain(*job);
  EXPECT_EQ(job->result.finish_reason, FinishReason::kCancelled);
  EXPECT_TRUE(scheduler.wait_idle(Clock::now() + 5s));
  engine.release();
  auto next = make_job(2);
  scheduler.submit(next);
  EXPECT_EQ(drain(*next), "tt");
}

TEST(Scheduler, StopAcceptingAndCancelAll) {
  FakeEngine engine;
  Scheduler scheduler(1, 4, [&](int slot, Job& job) { engine.run(slot, job); });
  auto a = make_job(1000000), b = make_job(5);
  scheduler.submit(a);
  scheduler.submit(b);
  scheduler.stop_accepting();
  EXPECT_EQ(scheduler.submit(make_job(1)), Scheduler::Admission::kShuttingDown);
  EXPECT_FALSE(scheduler.wait_idle(Clock::now() + 20ms));
  scheduler.cancel_all();
  drain(*a);
  drain(*b);
  EXPECT_EQ(b->result.finish_reason, FinishReason::kCancelled);
  EXPECT_TRUE(scheduler.wait_idle(Clock::now() + 5s));
}

TEST(Scheduler, ExecutorExceptionsBecomeErrors) {
  Scheduler scheduler(1, 1, [](int, Job&) { throw std::runtime_error("boom"); });
  auto job = make_job(1);
  scheduler.submit(job);
  drain(*job);
  EXPECT_EQ(job->error_status, 500);
  EXPECT_EQ(job->error_message, "boom");
  Scheduler lazy(1, 1, [](int, Job&) {});  // forgets to finish: still answered
  auto other = make_job(1);
  lazy.submit(other);
  drain(*other);
  EXPECT_EQ(other->error_status, 500);
}

TEST(Scheduler, DestructorCancelsRunningWork) {
  FakeEngine engine;
  auto job = make_job(1000000);
  {
    Scheduler scheduler(1, 1, [&](int slot, Job& j) { engine.run(slot, j); });
    scheduler.submit(job);
    wait_until([&] { return engine.started == 1; });
  }
  std::string text;
  EXPECT_TRUE(job->wait(0ms, text));
}

}  // namespace
}  // namespace edgelm::server
