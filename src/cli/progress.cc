#include <chrono>
#include <cstdio>

#include "cli/commands.h"

namespace edgelm::cli {
namespace {

double now_seconds() {
  using Clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

}  // namespace

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", bytes, units[u]);
  return buf;
}

ProgressBar::ProgressBar(std::string label, int64_t total)
    : label_(std::move(label)), total_(total > 0 ? total : 1), start_(now_seconds()) {}

void ProgressBar::update(int64_t done, const std::string& note) {
  const double t = now_seconds();
  last_done_ = done;
  if (done < total_ && t - last_draw_ < 0.1) return;  // at most 10 redraws a second
  last_draw_ = t;
  const double frac = static_cast<double>(done) / total_;
  const double elapsed = t - start_;
  const double rate = elapsed > 0 ? done / elapsed : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : 0;
  constexpr int kWidth = 30;
  char bar[kWidth + 1];
  const int filled = static_cast<int>(frac * kWidth);
  for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
  bar[kWidth] = '\0';
  std::fprintf(stderr, "\r%s [%s] %3.0f%% %lld/%lld %.1f it/s ETA %.0fs %s ", label_.c_str(), bar,
               frac * 100, static_cast<long long>(done), static_cast<long long>(total_), rate, eta,
               note.c_str());
  std::fflush(stderr);
}

void ProgressBar::finish() {
  // Redraw only if the last update did not already show the end (keeps its note).
  if (last_done_ < total_) {
    last_draw_ = -1;
    update(total_);
  }
  std::fprintf(stderr, "\n");
}

}  // namespace edgelm::cli
