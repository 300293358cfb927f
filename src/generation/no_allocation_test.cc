// A decode step must not allocate: buffers are sized once per session.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "edgelm/edgelm.h"

// The replacement operator new/delete below are a matched malloc/free pair; GCC
// cannot see that across inlining in instrumented builds.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

namespace edgelm {
namespace {

TEST(NoAllocation, DecodeStepsDoNotAllocate) {
  LoadOptions options;
  options.threads = 2;
  auto model =
      Model::load(std::string(EDGELM_SOURCE_DIR) + "/models/stories260K/stories260K.bin", options);
  Session session(model);
  const float* logits = session.evaluate(model->tokenize("Once upon a time", true));
  std::vector<int32_t> batch(1);
  g_allocations = 0;
  g_counting = true;
  for (int step = 0; step < 32; ++step) {
    int32_t best = 0;
    for (int v = 1; v < model->vocab_size(); ++v) {
      if (logits[v] > logits[best]) best = v;
    }
    batch[0] = best;
    logits = session.evaluate(batch);
  }
  g_counting = false;
  EXPECT_EQ(g_allocations.load(), 0) << "heap allocations during 32 decode steps";
}

}  // namespace
}  // namespace edgelm
