#include "server/scheduler.h"

#include <algorithm>

namespace edgelm::server {

void Job::append_text(const std::string& text) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (generated_tokens++ == 0) first_token_at = Clock::now();
  pending_text_ += text;
  changed_.notify_all();
}

void Job::finish(GenerateResult final_result) {
  std::lock_guard<std::mutex> lock(mutex_);
  result = std::move(final_result);
  finished_at = Clock::now();
  finished_ = true;
  changed_.notify_all();
}

void Job::finish_embeddings(std::vector<std::vector<float>> vectors) {
  std::lock_guard<std::mutex> lock(mutex_);
  embeddings = std::move(vectors);
  finished_at = Clock::now();
  finished_ = true;
  changed_.notify_all();
}

void Job::fail(int status, std::string message) {
  std::lock_guard<std::mutex> lock(mutex_);
  error_status = status;
  error_message = std::move(message);
  finished_at = Clock::now();
  finished_ = true;
  changed_.notify_all();
}

bool Job::wait(std::chrono::milliseconds timeout, std::string& text) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return finished_ || !pending_text_.empty(); });
  text += pending_text_;
  pending_text_.clear();
  return finished_;
}

Scheduler::Scheduler(int slots, int queue_limit, Executor executor)
    : queue_limit_(std::max(0, queue_limit)), executor_(std::move(executor)) {
  slots = std::max(1, slots);
  running_.resize(size_t(slots));
  for (int slot = 0; slot < slots; ++slot) {
    workers_.emplace_back([this, slot] { worker_loop(slot); });
  }
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    accepting_ = false;
    stopping_ = true;
  }
  cancel_all();
  work_available_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

Scheduler::Admission Scheduler::submit(const std::shared_ptr<Job>& job) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!accepting_) return Admission::kShuttingDown;
  int busy = int(std::count_if(running_.begin(), running_.end(), [](auto& j) { return !!j; }));
  int free_slots = int(running_.size()) - busy;
  // Jobs beyond the free slots wait; at most queue_limit_ of them.
  if (int(queue_.size()) + 1 - free_slots > queue_limit_) return Admission::kQueueFull;
  job->submitted_at = Clock::now();
  queue_.push_back(job);
  work_available_.notify_one();
  return Admission::kAccepted;
}

void Scheduler::cancel(const std::shared_ptr<Job>& job) {
  job->cancelled = true;
  bool was_queued = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = std::find(queue_.begin(), queue_.end(), job);
    if (it != queue_.end()) {
      queue_.erase(it);
      was_queued = true;
    }
    if (queue_.empty() &&
        std::none_of(running_.begin(), running_.end(), [](auto& j) { return !!j; })) {
      became_idle_.notify_all();
    }
  }
  if (was_queued) {
    GenerateResult cancelled;
    cancelled.finish_reason = FinishReason::kCancelled;
    job->finish(std::move(cancelled));
  }
}

void Scheduler::cancel_all() {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs.assign(queue_.begin(), queue_.end());
    for (auto& job : running_) {
      if (job) jobs.push_back(job);
    }
  }
  for (auto& job : jobs) cancel(job);
}

void Scheduler::stop_accepting() {
  std::lock_guard<std::mutex> lock(mutex_);
  accepting_ = false;
}

bool Scheduler::wait_idle(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  return became_idle_.wait_until(lock, deadline, [&] {
    return queue_.empty() &&
           std::none_of(running_.begin(), running_.end(), [](auto& j) { return !!j; });
  });
}

bool Job::finished() {
  std::lock_guard<std::mutex> lock(mutex_);
  return finished_;
}

int Scheduler::queue_depth() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return int(queue_.size());
}

int Scheduler::busy_slots() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return int(std::count_if(running_.begin(), running_.end(), [](auto& j) { return !!j; }));
}

void Scheduler::worker_loop(int slot) {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_available_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      running_[size_t(slot)] = job;
    }
    job->started_at = Clock::now();
    if (job->cancelled) {
      GenerateResult cancelled;
      cancelled.finish_reason = FinishReason::kCancelled;
      job->finish(std::move(cancelled));
    } else {
      try {
        executor_(slot, *job);
        if (!job->finished()) job->fail(500, "internal error: the job ended without a result");
      } catch (const std::exception& e) {
        job->fail(500, e.what());
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_[size_t(slot)] = nullptr;
      if (queue_.empty() &&
          std::none_of(running_.begin(), running_.end(), [](auto& j) { return !!j; })) {
        became_idle_.notify_all();
      }
    }
  }
}

}  // namespace edgelm::server
