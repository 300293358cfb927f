// Type selection: schemes, llama.cpp's mixing rules, fallbacks and overrides.
#include "compression/quant_plan.h"

#include <gtest/gtest.h>

#include "compression/quantize.h"
#include "compression/test_helpers.h"

namespace edgelm::compression {
namespace {

using testing::error_of;

DType pick(const std::string& scheme, const std::string& name, int64_t cols, ModelShape shape = {},
           bool imatrix = false, bool pure = false) {
  std::vector<TypeOverride> none;
  return choose_tensor_type(parse_scheme(scheme), name, cols, shape, imatrix, pure, none).type;
}

TEST(QuantPlan, ParsesEverySchemeAndRejectsUnknownNames) {
  for (const std::string& name : scheme_names()) {
    const QuantScheme s = parse_scheme(name);
    EXPECT_EQ(s.name, name);
    EXPECT_TRUE(is_writable_type(s.base)) << name;
  }
  EXPECT_EQ(parse_scheme("Q4_K_M").base, DType::Q4_K);
  EXPECT_EQ(parse_scheme("q4_k_m").file_type, 15u);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  EXPECT_EQ(parse_scheme("f16").file_type, 1u);
  EXPECT_EQ(parse_scheme("bf16").file_type, 32u);
  const std::string e = error_of([] { parse_scheme("q4_x"); });
  EXPECT_NE(e.find("unknown quantization type 'q4_x'"), std::string::npos) << e;
  EXPECT_NE(e.find("q4_k_m"), std::string::npos) << e;
  EXPECT_NE(error_of([] { parse_scheme("iq2_xxs"); }).find("unknown"), std::string::npos);
}

TEST(QuantPlan, OutputHeadAndTiedEmbeddingGetMoreBitsLikeLlamaCpp) {
  ModelShape untied{8, 1, false}, tied{8, 1, true};
  EXPECT_EQ(pick("q4_0", "output.weight", 512, untied), DType::Q6_K);
  EXPECT_EQ(pick("q4_0", "token_embd.weight", 512, untied), DType::Q4_0);
  EXPECT_EQ(pick("q4_0", "token_embd.weight", 512, tied), DType::Q6_K);
  EXPECT_EQ(pick("q8_0", "output.weight", 512, untied), DType::Q8_0);
  EXPECT_EQ(pick("q4_k", "output.weight", 512, untied), DType::Q6_K);
  // Rows the base type cannot hold go to Q8_0 directly (llama.cpp's nx % qk_k rule).
  EXPECT_EQ(pick("q4_k", "output.weight", 64, untied), DType::Q8_0);
  // --pure and the float types do not mix.
  EXPECT_EQ(pick("q4_0", "output.weight", 512, untied, false, true), DType::Q4_0);
  EXPECT_EQ(pick("f16", "output.weight", 512, untied), DType::F16);
  EXPECT_EQ(pick("fp8_e4m3", "output.weight", 512, untied), DType::FP8_E4M3);
}

TEST(QuantPlan, MixesFollowLlamaTensorGetType) {
  const ModelShape s{8, 1, false};
  // use_more_bits(i, 8): layers 0, 3, 6, 7.
  const DType q4km_v[8] = {DType::Q6_K, DType::Q4_K, DType::Q4_K, DType::Q6_K,
                           DType::Q4_K, DType::Q4_K, DType::Q6_K, DType::Q6_K};
  for (int l = 0; l < 8; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    EXPECT_EQ(pick("q4_k_m", p + "attn_v.weight", 256, s), q4km_v[l]) << l;
    EXPECT_EQ(pick("q4_k_m", p + "ffn_down.weight", 256, s), q4km_v[l]) << l;
    EXPECT_EQ(pick("q5_k_m", p + "attn_v.weight", 256, s),
              q4km_v[l] == DType::Q6_K ? DType::Q6_K : DType::Q5_K);
    EXPECT_EQ(pick("q4_k_m", p + "attn_q.weight", 256, s), DType::Q4_K);
    EXPECT_EQ(pick("q4_k_s", p + "attn_v.weight", 256, s), l < 4 ? DType::Q5_K : DType::Q4_K);
    EXPECT_EQ(pick("q4_k_s", p + "ffn_down.weight", 256, s), l < 1 ? DType::Q5_K : DType::Q4_K);
    EXPECT_EQ(pick("q3_k_m", p + "attn_v.weight", 256, s), l < 2 ? DType::Q5_K : DType::Q4_K);
    EXPECT_EQ(pick("q3_k_m", p + "attn_output.weight", 256, s), DType::Q4_K);
    EXPECT_EQ(pick("q3_k_m", p + "ffn_up.weight", 256, s), DType::Q3_K);
    EXPECT_EQ(pick("q3_k_l", p + "ffn_down.weight", 256, s), DType::Q5_K);
    EXPECT_EQ(pick("q3_k_s", p + "ffn_down.weight", 256, s), DType::Q3_K);
    // Plain types do not mix, except q4_0/q5_0 ffn_down of the first eighth with an imatrix.
    EXPECT_EQ(pick("q4_k", p + "attn_v.weight", 256, s), DType::Q4_K);
    EXPECT_EQ(pick("q4_0", p + "ffn_down.weight", 256, s, true), l < 1 ? DType::Q4_1 : DType::Q4_0);
    EXPECT_EQ(pick("q4_0", p + "ffn_down.weight", 256, s, false), DType::Q4_0);
  }
  EXPECT_EQ(pick("q2_k_s", "blk.0.attn_v.weight", 256, ModelShape{8, 4, false}), DType::Q4_K);
  EXPECT_EQ(pick("q2_k_s", "blk.0.attn_v.weight", 256, ModelShape{8, 2, false}), DType::Q2_K);
}

TEST(QuantPlan, FallbacksForRowsThatAreNotWholeBlocks) {
  EXPECT_EQ(fallback_type(DType::Q2_K, 64), DType::Q4_0);
  EXPECT_EQ(fallback_type(DType::Q3_K, 64), DType::Q4_0);
  EXPECT_EQ(fallback_type(DType::Q4_K, 64), DType::Q5_0);
  EXPECT_EQ(fallback_type(DType::Q5_K, 64), DType::Q5_1);
  EXPECT_EQ(fallback_type(DType::Q6_K, 64), DType::Q8_0);
  EXPECT_EQ(fallback_type(DType::Q4_K, 172), DType::F16);
  EXPECT_EQ(fallback_type(DType::Q4_0, 172), DType::F16);
  EXPECT_EQ(fallback_type(DType::FP8_E4M3, 172), DType::F16);

  std::vector<TypeOverride> none;
  const TypeChoice c = choose_tensor_type(parse_scheme("q4_k"), "blk.0.attn_q.weight", 64,
                                          ModelShape{}, false, false, none);
  EXPECT_EQ(c.wanted, DType::Q4_K);
  EXPECT_EQ(c.type, DType::Q5_0);
  EXPECT_NE(c.fallback.find("not a multiple of the q4_K block size (256)"), std::string::npos);
  const TypeChoice fits = choose_tensor_type(parse_scheme("q4_k"), "blk.0.attn_q.weight", 512,
                                             ModelShape{}, false, false, none);
  EXPECT_EQ(fits.type, DType::Q4_K);
  EXPECT_TRUE(fits.fallback.empty());
}

TEST(QuantPlan, OverridesWinAndMustFit) {
  std::vector<TypeOverride> rules = parse_overrides({"attn_v=q8_0", "ffn_.*=f16"});
  const QuantScheme s = parse_scheme("q4_k_m");
  EXPECT_EQ(choose_tensor_type(s, "blk.0.attn_v.weight", 256, {}, false, false, rules).type,
            DType::Q8_0);
  EXPECT_EQ(choose_tensor_type(s, "blk.0.ffn_up.weight", 256, {}, false, false, rules).type,
            DType::F16);
  EXPECT_EQ(choose_tensor_type(s, "blk.0.attn_q.weight", 256, {}, false, false, rules).type,
            DType::Q4_K);
  EXPECT_EQ(rules[0].matches, 1);
  EXPECT_EQ(rules[1].matches, 1);
  std::vector<TypeOverride> k = parse_overrides({"attn_q=q4_k"});
  const std::string e =
      error_of([&] { choose_tensor_type(s, "blk.0.attn_q.weight", 64, {}, false, false, k); });
  EXPECT_NE(e.find("blk.0.attn_q.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("block size (256)"), std::string::npos) << e;

  EXPECT_NE(error_of([] { parse_overrides({"attn_v"}); }).find("PATTERN=TYPE"), std::string::npos);
  EXPECT_NE(error_of([] { parse_overrides({"=q8_0"}); }).find("PATTERN=TYPE"), std::string::npos);
  EXPECT_NE(error_of([] { parse_overrides({"attn_v=q9_0"}); }).find("unknown type 'q9_0'"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_overrides({"(attn=q8_0"}); }).find("invalid regular expression"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_overrides({"attn=q8_K"}); }).find("cannot be written"),
            std::string::npos);
}

TEST(QuantPlan, LayerIndexFromName) {
  EXPECT_EQ(layer_of("blk.0.attn_q.weight"), 0);
  EXPECT_EQ(layer_of("blk.27.ffn_down.weight"), 27);
  EXPECT_EQ(layer_of("output.weight"), -1);
  EXPECT_EQ(layer_of("blk.x.attn_q.weight"), -1);
  EXPECT_EQ(layer_of("blk.3"), -1);
}

TEST(QuantPlan, InterleavedRopePermutationIsLlamaCpps) {
  // One head of 8 rows: HF rotate-half pairs (i, i+4) become adjacent (2i, 2i+1).
  const int64_t expected[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  for (int r = 0; r < 8; ++r) EXPECT_EQ(source_row_for_interleaved(r, 8, 1), expected[r]);
  // Two heads of 4 rows: each head permuted on its own.
  const int64_t two[8] = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int r = 0; r < 8; ++r) EXPECT_EQ(source_row_for_interleaved(r, 8, 2), two[r]);
}

}  // namespace
}  // namespace edgelm::compression
