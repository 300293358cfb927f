// Prometheus text-format metrics for /metrics. Thread-safe; cheap enough to
// update once per request (never per token).
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace edgelm::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // Appends the _bucket/_sum/_count lines of metric `name`.
  void render(const std::string& name, std::string& out) const;

 private:
  std::vector<double> upper_bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct Gauges {
  int queue_depth = 0;
  int busy_slots = 0;
  int slots = 0;
};

class Metrics {
 public:
  Metrics();
  void count_request(const std::string& route, int status);
  void count_error(const std::string& type);  // e.g. "invalid_request_error", "server_error"
  void count_cancelled();                     // client went away or shutdown
  // One finished generation: token counts and timings in seconds.
  void observe_generation(int prompt_tokens, int completion_tokens, double time_to_first_token,
                          double decode_seconds, double request_seconds);
  void observe_embedding(int prompt_tokens, double request_seconds);
  std::string render(const Gauges& gauges) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, uint64_t> errors_;
  uint64_t cancelled_ = 0;
  uint64_t prompt_tokens_ = 0, completion_tokens_ = 0;
  double decode_seconds_ = 0;
  Histogram time_to_first_token_, request_duration_, decode_tokens_per_second_;
};

}  // namespace edgelm::server
