#include "server/metrics.h"

#include <gtest/gtest.h>

#include "server/static_assets.h"

namespace edgelm::server {
namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

TEST(Metrics, RendersPrometheusText) {
  Metrics metrics;
  metrics.count_request("/v1/completions", 200);
  metrics.count_request("/v1/completions", 200);
  metrics.count_request("/v1/completions", 429);
  metrics.count_error("rate_limit_error");
  metrics.count_cancelled();
  metrics.observe_generation(10, 20, 0.03, 0.5, 0.6);
  metrics.observe_embedding(4, 0.01);
  std::string text = metrics.render({3, 2, 2});
  EXPECT_TRUE(has_line(text, "edgelm_requests_total{route=\"/v1/completions\",status=\"200\"} 2"))
      << text;
  EXPECT_TRUE(has_line(text, "edgelm_requests_total{route=\"/v1/completions\",status=\"429\"} 1"));
  EXPECT_TRUE(has_line(text, "edgelm_errors_total{type=\"rate_limit_error\"} 1"));
  EXPECT_TRUE(has_line(text, "edgelm_requests_cancelled_total 1"));
  EXPECT_TRUE(has_line(text, "edgelm_prompt_tokens_total 14"));
  EXPECT_TRUE(has_line(text, "edgelm_completion_tokens_total 20"));
  EXPECT_TRUE(has_line(text, "edgelm_decode_seconds_total 0.5"));
  EXPECT_TRUE(has_line(text, "edgelm_time_to_first_token_seconds_bucket{le=\"0.025\"} 0"));
  EXPECT_TRUE(has_line(text, "edgelm_time_to_first_token_seconds_bucket{le=\"0.05\"} 1"));
  EXPECT_TRUE(has_line(text, "edgelm_time_to_first_token_seconds_bucket{le=\"+Inf\"} 1"));
  EXPECT_TRUE(has_line(text, "edgelm_time_to_first_token_seconds_count 1"));
  EXPECT_TRUE(has_line(text, "edgelm_decode_tokens_per_second_bucket{le=\"50\"} 1"));
  EXPECT_TRUE(has_line(text, "edgelm_request_duration_seconds_count 2"));
  EXPECT_TRUE(has_line(text, "edgelm_queue_depth 3"));
  EXPECT_TRUE(has_line(text, "edgelm_slots_busy 2"));
  EXPECT_TRUE(has_line(text, "edgelm_slots 2"));
  EXPECT_TRUE(has_line(text, "# TYPE edgelm_requests_total counter"));
}

TEST(Histogram, BucketsAreCumulative) {
  Histogram histogram({1, 2});
  histogram.observe(0.5);
  histogram.observe(1.5);
  histogram.observe(5);
  std::string text;
  histogram.render("h", text);
  EXPECT_EQ(text,
            "h_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 2\nh_bucket{le=\"+Inf\"} 3\n"
            "h_sum 7\nh_count 3\n");
}

TEST(StaticAssets, ChatPageIsEmbedded) {
  const StaticAsset* index = find_static_asset("/");
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(std::string(index->path), "/index.html");
  EXPECT_EQ(std::string(index->content_type), "text/html; charset=utf-8");
  std::string html(reinterpret_cast<const char*>(index->data), index->size);
  EXPECT_NE(html.find("<html"), std::string::npos);
  ASSERT_NE(find_static_asset("/app.js"), nullptr);
  EXPECT_EQ(find_static_asset("/../etc/passwd"), nullptr);
  EXPECT_EQ(find_static_asset("/missing.js"), nullptr);
}

}  // namespace
}  // namespace edgelm::server
