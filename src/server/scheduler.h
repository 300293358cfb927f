// Slots and the wait queue: HTTP threads submit Jobs; `slots` worker threads
// run them (each worker owns one Session through the executor) and stream
// results back through the Job. HTTP threads never touch a Session, so a
// later continuous-batching scheduler can replace the workers without
// changing the HTTP side.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "edgelm/edgelm.h"

namespace edgelm::server {

using Clock = std::chrono::steady_clock;

enum class JobKind { kGenerate, kEmbed };

// One request's work and its result channel (worker -> HTTP thread).
struct Job {
  JobKind kind = JobKind::kGenerate;
  // kGenerate input.
  std::vector<int32_t> prompt;
  GenerateOptions options;
  // kEmbed input.
  std::vector<std::vector<int32_t>> embed_inputs;

  // Set by the HTTP side when the client is gone or the server shuts down;
  // the worker's token callback returns false at the next token.
  std::atomic<bool> cancelled{false};

  Clock::time_point submitted_at = Clock::now();

  // Worker side.
  void append_text(const std::string& text);  // one token's text
  void finish(GenerateResult result);
  void finish_embeddings(std::vector<std::vector<float>> vectors);
  void fail(int status, std::string message);

  // HTTP side: waits up to `timeout` for news; moves new text into `text`.
  // Returns true once the job is finished (then result/error are final).
  bool wait(std::chrono::milliseconds timeout, std::string& text);
  bool finished();

  // Final state, valid after wait() returned true.
  GenerateResult result;
  std::vector<std::vector<float>> embeddings;
  int error_status = 0;  // 0: success
  std::string error_message;
  Clock::time_point started_at{}, first_token_at{}, finished_at{};
  int generated_tokens = 0;

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::string pending_text_;
  bool finished_ = false;
};

class Scheduler {
 public:
  // Runs one job on worker `slot` (0 .. slots-1); must finish the job (finish/fail).
  using Executor = std::function<void(int slot, Job& job)>;

  Scheduler(int slots, int queue_limit, Executor executor);
  ~Scheduler();  // cancels everything and joins the workers

  enum class Admission { kAccepted, kQueueFull, kShuttingDown };
  Admission submit(const std::shared_ptr<Job>& job);

  // Drops a queued job (finishing it as cancelled) or flags a running one.
  void cancel(const std::shared_ptr<Job>& job);
  void cancel_all();
  // New submissions are refused from now on; running and queued jobs go on.
  void stop_accepting();
  // Waits until nothing is queued or running, or until `deadline`; true if idle.
  bool wait_idle(Clock::time_point deadline);

  int slots() const { return int(workers_.size()); }
  int queue_depth() const;  // jobs waiting for a slot
  int busy_slots() const;   // jobs running

 private:
  void worker_loop(int slot);

  const int queue_limit_;
  Executor executor_;
  mutable std::mutex mutex_;
  std::condition_variable work_available_, became_idle_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::shared_ptr<Job>> running_;  // one entry per slot (null when idle)
  bool accepting_ = true;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace edgelm::server
