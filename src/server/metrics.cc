#include "server/metrics.h"

#include <cstdio>

namespace edgelm::server {
namespace {

std::string number(double value) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", value);
  return buf;
}

// Label values are route names and error types we choose, but escape anyway.
std::string label_value(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), counts_(upper_bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t bucket = 0;
  while (bucket < upper_bounds_.size() && value > upper_bounds_[bucket]) ++bucket;
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, std::string& out) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < upper_bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(upper_bounds_[i]) + "\"} " + std::to_string(cumulative) +
           "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : time_to_first_token_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      request_duration_({0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}),
      decode_tokens_per_second_(
          {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000}) {}

void Metrics::count_request(const std::string& route, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
}

void Metrics::count_error(const std::string& type) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++errors_[type];
}

void Metrics::count_cancelled() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++cancelled_;
}

void Metrics::observe_generation(int prompt_tokens, int completion_tokens,
                                 double time_to_first_token, double decode_seconds,
                                 double request_seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  prompt_tokens_ += uint64_t(prompt_tokens);
  completion_tokens_ += uint64_t(completion_tokens);
  decode_seconds_ += decode_seconds;
  if (completion_tokens > 0) time_to_first_token_.observe(time_to_first_token);
  if (completion_tokens > 1 && decode_seconds > 0) {
    decode_tokens_per_second_.observe(completion_tokens / decode_seconds);
  }
  request_duration_.observe(request_seconds);
}

void Metrics::observe_embedding(int prompt_tokens, double request_seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  prompt_tokens_ += uint64_t(prompt_tokens);
  request_duration_.observe(request_seconds);
}

std::string Metrics::render(const Gauges& gauges) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  header(out, "edgelm_requests_total", "counter", "HTTP requests by route and status.");
  for (const auto& [key, count] : requests_) {
    out += "edgelm_requests_total{route=\"" + label_value(key.first) + "\",status=\"" +
           std::to_string(key.second) + "\"} " + std::to_string(count) + "\n";
  }
  header(out, "edgelm_errors_total", "counter", "Error responses by OpenAI error type.");
  for (const auto& [type, count] : errors_) {
    out +=
        "edgelm_errors_total{type=\"" + label_value(type) + "\"} " + std::to_string(count) + "\n";
  }
  header(out, "edgelm_requests_cancelled_total", "counter",
         "Generations stopped because the client disconnected or the server shut down.");
  out += "edgelm_requests_cancelled_total " + std::to_string(cancelled_) + "\n";
  header(out, "edgelm_prompt_tokens_total", "counter", "Prompt tokens processed.");
  out += "edgelm_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  header(out, "edgelm_completion_tokens_total", "counter", "Tokens generated.");
  out += "edgelm_completion_tokens_total " + std::to_string(completion_tokens_) + "\n";
  header(out, "edgelm_decode_seconds_total", "counter",
         "Seconds spent generating tokens (after the first), summed over requests.");
  out += "edgelm_decode_seconds_total " + number(decode_seconds_) + "\n";
  header(out, "edgelm_time_to_first_token_seconds", "histogram",
         "Time from request admission to the first generated token (queue wait included).");
  time_to_first_token_.render("edgelm_time_to_first_token_seconds", out);
  header(out, "edgelm_decode_tokens_per_second", "histogram",
         "Per-request decode speed in tokens per second.");
  decode_tokens_per_second_.render("edgelm_decode_tokens_per_second", out);
  header(out, "edgelm_request_duration_seconds", "histogram",
         "Time from admission to the end of a generation or embedding request.");
  request_duration_.render("edgelm_request_duration_seconds", out);
  header(out, "edgelm_queue_depth", "gauge", "Requests waiting for a slot.");
  out += "edgelm_queue_depth " + std::to_string(gauges.queue_depth) + "\n";
  header(out, "edgelm_slots_busy", "gauge", "Slots generating now.");
  out += "edgelm_slots_busy " + std::to_string(gauges.busy_slots) + "\n";
  header(out, "edgelm_slots", "gauge", "Configured slots (--parallel).");
  out += "edgelm_slots " + std::to_string(gauges.slots) + "\n";
  return out;
}

}  // namespace edgelm::server
