// Bit-exactness against ggml's own quantizers.
//
// How the golden hashes below were made (offline, not part of the build):
// ggml's libggml-base.so as shipped in the npm package
// @node-llama-cpp/linux-x64 3.22.1 (llama.cpp build "v0.5.0", which has the
// same quantize_row_*_ref / quantize_row_*_impl as ggml-org/llama.cpp master of
// early 2026) was loaded with Python ctypes and called as
//   quantize_<type>(x, dst, nrow=2, n_per_row=512, imatrix)   (imatrix NULL or
//   the importance vector below), quantize_row_q8_K_ref(x, dst, 1024), and
//   dequantize_row_<type>(dst, y, 1024);
// with exactly the inputs MakeInput/MakeImportance produce (all values are
// integers times powers of two, so NumPy float32 and C++ float agree exactly).
// Each hash is FNV-1a 64 over the output bytes (blocks, or the float32 values
// of the dequantized row).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/quant_formats.h"

namespace edgelm {
namespace {

struct Lcg {
  uint32_t state;
  uint32_t next() {
    state = state * 1664525u + 1013904223u;
    return state;
  }
};

// kind 0: bell-shaped in (-1, 1); 1: same with every 37th value x16
// (outliers); 2: shifted to mostly positive (exercises the mins); 3: scaled
// by 2^-30 (f16 scales underflow to subnormals/zero); 4: sparse (1 in 41
// nonzero, many all-zero groups); 5: few distinct levels (multiples of 1/4).
std::vector<float> MakeInput(int kind, int64_t n, uint32_t seed) {
  Lcg g{seed};
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int32_t k = 0;
    for (int r = 0; r < 4; ++r) k += static_cast<int32_t>(g.next() >> 10) - (1 << 21);
    float v = static_cast<float>(k) * 0x1p-23f;
    if (kind == 1 && i % 37 == 5) v = v * 16.0f;
    if (kind == 2) v = v * 0.5f + 0.25f;
    if (kind == 3) v = v * 0x1p-30f;
    if (kind == 4 && i % 41 != 3) v = 0.0f;
    if (kind == 5) v = static_cast<float>(k >> 21) * 0.25f;
    out[static_cast<size_t>(i)] = v;
  }
  return out;
}

// Importance in [1/64, 1000/64], with about 1 in 29 entries zero.
std::vector<float> MakeImportance(int64_t n, uint32_t seed) {
  Lcg g{seed};
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = g.next() >> 16;
    out[static_cast<size_t>(i)] =
        u % 29 == 0 ? 0.0f : static_cast<float>(u % 1000 + 1) * (1.0f / 64);
  }
  return out;
}

uint64_t Fnv1a(const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

struct Golden {
  DType type;
  int kind;
  uint64_t reference;    // quantized bytes, no importance
  uint64_t dequantized;  // dequantize_row of those bytes
  uint64_t weighted;     // quantized bytes with importance (0: type takes none)
};

constexpr Golden kGolden[] = {
    {DType::Q4_0, 0, 0xedaf8019788912cfull, 0x5bb9ef70873ac1f9ull, 0xf833e061b2609342ull},
    {DType::Q4_0, 1, 0x82fc6934299e5645ull, 0xa28541384908c6d7ull, 0x9b273dbb32c7e5c5ull},
    {DType::Q4_0, 2, 0x4e9a20f05357d112ull, 0x179d683b074facddull, 0xb45d3790cc85c781ull},
    {DType::Q4_0, 3, 0x324f684b2e78e180ull, 0x028df28d85504f25ull, 0xed20050bd1252dd9ull},
    {DType::Q4_0, 4, 0x240fe7ccdab48871ull, 0xa9aeb4e2e5fa6066ull, 0x59a37f3ce400a8c5ull},
    {DType::Q4_0, 5, 0x25eab1bf357470d6ull, 0x34aa767e01679758ull, 0x95e206775934b190ull},
    {DType::Q4_1, 0, 0x97d88c49cf9685f5ull, 0xb2b9c934cda5feefull, 0x1be2baed0586882aull},
    {DType::Q4_1, 1, 0x77bb038173190203ull, 0xed7b8f2596b8095cull, 0x5c669bd05ec09f22ull},
    {DType::Q4_1, 2, 0xea1d98a691b83e4bull, 0x853858a2e56397e7ull, 0x32033feaf96345f1ull},
    {DType::Q4_1, 3, 0xa8ec2a87e4b8445aull, 0xb93a0c83ce3b6325ull, 0x554d64b9046a91fcull},
    {DType::Q4_1, 4, 0xe11007ea56ee0e9cull, 0xdb594976cb5c08e9ull, 0x0826df3cff79af35ull},
    {DType::Q4_1, 5, 0xf7b84d6302b18be4ull, 0x05b287d5efb40caaull, 0x78e7fbd7ffa4153aull},
    {DType::Q5_0, 0, 0x6db7ac7cd475f53eull, 0x0444c56483ecfd07ull, 0xba196ddbc5b9cacbull},
    {DType::Q5_0, 1, 0x8353170fd10699caull, 0x28ab70b3fc7e9ef8ull, 0xe6f8bab099e14b63ull},
    {DType::Q5_0, 2, 0xd813745264e78513ull, 0x0ca45378641bc46cull, 0xa920de3c12e8fba0ull},
    {DType::Q5_0, 3, 0xacd7f42c547df059ull, 0xbe5f1883441a8f25ull, 0xecb60ae9487c9dbbull},
    {DType::Q5_0, 4, 0xa0aee678bc635e6cull, 0xa9aeb4e2e5fa6066ull, 0x312665f784fbc724ull},
    {DType::Q5_0, 5, 0x9948ca7e71a1bb26ull, 0x72f1a084a8ef5798ull, 0x72b17261e295a755ull},
    {DType::Q5_1, 0, 0x18b7d3bfa7c0b861ull, 0x708e02151e4bb43dull, 0x31dd8b6a03bf28d4ull},
    {DType::Q5_1, 1, 0xcd42b0b75257a142ull, 0xd30fff991d51f07cull, 0x5478d99d927ab6faull},
    {DType::Q5_1, 2, 0x47ab69f450944b49ull, 0x8602383b7a193cdeull, 0xfaa4dfff105618b7ull},
    {DType::Q5_1, 3, 0x7c9a06c22443655bull, 0xb93a0c83ce3b6325ull, 0x2dc7cea6b2285f34ull},
    {DType::Q5_1, 4, 0x297a21d6ac0d8ea7ull, 0xca75823c5a24c1b0ull, 0xae8890794c3bb9bdull},
    {DType::Q5_1, 5, 0xdd914eb0f08ddebfull, 0x7a43a2758c6326e1ull, 0x9736bb12d09f0582ull},
    {DType::Q8_0, 0, 0xc1769a688d2a2e27ull, 0x99726a58defd7065ull, 0},
    {DType::Q8_0, 1, 0xb41c25c97f4f7659ull, 0x4aa85d9860d3f8b2ull, 0},
    {DType::Q8_0, 2, 0xa84728b52436dc47ull, 0x68e82e39a9dad703ull, 0},
    {DType::Q8_0, 3, 0x0aeff9dfa069bc4cull, 0x80b3b0d4a1893825ull, 0},
    {DType::Q8_0, 4, 0x3f31127de29f37bdull, 0xf7a88432d854c042ull, 0},
    {DType::Q8_0, 5, 0x8e7b94fd6de51216ull, 0x63edfbfce0069cefull, 0},
    {DType::Q2_K, 0, 0xeb50d7e3e4492da2ull, 0x607cc33882a6e9bcull, 0xe8c4583720a5c933ull},
    {DType::Q2_K, 1, 0x53847bc59353d323ull, 0x5bc395ffccd23ff7ull, 0xdb8175b6529b2e16ull},
    {DType::Q2_K, 2, 0xbc91f8f06b899ac3ull, 0x7b683281d7305be5ull, 0x83e8b9c2c64c7af3ull},
    {DType::Q2_K, 3, 0xf52e9dc8ee01f4cdull, 0xb93a0c83ce3b6325ull, 0xe9c954756f30dc60ull},
    {DType::Q2_K, 4, 0x2311dfaeb96abf5full, 0x53538068b0aefb31ull, 0x6c834eb31276632bull},
    {DType::Q2_K, 5, 0x6a00b423091375e6ull, 0x36eb08c7fb719474ull, 0x77865b14dcf37cc9ull},
    {DType::Q3_K, 0, 0xd8c0abd67e10378bull, 0x946cde7a49be318aull, 0x1e1114b274b9883eull},
    {DType::Q3_K, 1, 0xa46ae9ecf231b893ull, 0x94e91d1863499fc5ull, 0x869ade5f9b0bdbe8ull},
    {DType::Q3_K, 2, 0xed6f3053e76bf988ull, 0x24fc49b4574bafe8ull, 0x91e5b7e90f60148aull},
    {DType::Q3_K, 3, 0xe248767a0a16f974ull, 0x0ec3c5b99e5b92a5ull, 0x3c36f4f42a93181cull},
    {DType::Q3_K, 4, 0xffaa94eb5ead0279ull, 0xdabd86ef9fc714ddull, 0x640f8f33ce8f0ab3ull},
    {DType::Q3_K, 5, 0x33dd8ad163bd48e9ull, 0x0ff142933c15053aull, 0xe51b7d217808128bull},
    {DType::Q4_K, 0, 0xbdca9496581a6ad4ull, 0xd475cab683ff52ecull, 0xa532912ac0d0a375ull},
    {DType::Q4_K, 1, 0x13a167a8a868a004ull, 0x668d684dcea16be7ull, 0x18d63b96da404dbdull},
    {DType::Q4_K, 2, 0x29dd9766edea043eull, 0x984eaf90671ba279ull, 0x03cbec224d18994bull},
    {DType::Q4_K, 3, 0xcecce6c7f6e7ca23ull, 0xb93a0c83ce3b6325ull, 0xb28045a11d118742ull},
    {DType::Q4_K, 4, 0x3b3bb48724d2c378ull, 0xd95344bf10b0071eull, 0xce31337070e25e0dull},
    {DType::Q4_K, 5, 0x16321954ee76daa5ull, 0xd7ee908d0d846e49ull, 0x82bac5ce6c9b0ff5ull},
    {DType::Q5_K, 0, 0xdb23ed027f97958bull, 0xb2814feb1eb2aab6ull, 0x2bd49d4b0cd663e8ull},
    {DType::Q5_K, 1, 0x634e190c7effd006ull, 0xd9f000b987383b98ull, 0xfb58139db0c13f23ull},
    {DType::Q5_K, 2, 0x98a7ea7f1f1a4a42ull, 0x814af5e3ea269fcdull, 0x07daec42c1264b2dull},
    {DType::Q5_K, 3, 0xd18dbc6f5c1a6c03ull, 0xb93a0c83ce3b6325ull, 0xce9c28c26d5de618ull},
    {DType::Q5_K, 4, 0x4822c07d1bcae6c1ull, 0xba8e60e79c79be25ull, 0xa738d22328d96dd5ull},
    {DType::Q5_K, 5, 0xad85a86e50aa469dull, 0x6019da6b83d6d619ull, 0xb7095c897381257dull},
    {DType::Q6_K, 0, 0x5ce49ff95efcb311ull, 0x9f9cd9f4bd03b7ceull, 0x7033565162842d01ull},
    {DType::Q6_K, 1, 0x04d134116e12d65cull, 0x3c9aa29b9fcdb6beull, 0xda0bbe614bcd2367ull},
    {DType::Q6_K, 2, 0x89cee6ee2dfbc7ceull, 0x3f63f1e07b550d75ull, 0x268fee3da8807cfcull},
    {DType::Q6_K, 3, 0x57f8c1cf888f45a3ull, 0x3bdd6de0b48c71a5ull, 0x4288ce4a8406809cull},
    {DType::Q6_K, 4, 0x9ad5c03bc6378a26ull, 0x8ff7ac5ddc154dc5ull, 0x3d824f19a665228bull},
    {DType::Q6_K, 5, 0x36aa61ab3fe75bfcull, 0x566c412e5733822bull, 0x8fe8c1bad676bad5ull},
    {DType::Q8_K, 0, 0xc31e5095a6992ddbull, 0xb371a16f2e208bb8ull, 0},
    {DType::Q8_K, 1, 0x75edb9a729925049ull, 0x2e771eb2e9e21480ull, 0},
    {DType::Q8_K, 2, 0x905f6734c7f7031eull, 0x4c5ae0d675b00280ull, 0},
    {DType::Q8_K, 3, 0x625dc29a0075d310ull, 0x8afd20787da92fcdull, 0},
    {DType::Q8_K, 4, 0x14d302f6fa2f5709ull, 0x76fc702ef7104668ull, 0},
    {DType::Q8_K, 5, 0x7304cf105fe2cac6ull, 0x08a9e25625048e62ull, 0},
};

constexpr int64_t kRows = 2;
constexpr int64_t kPerRow = 512;

std::vector<uint8_t> QuantizeRows(DType type, const std::vector<float>& x,
                                  const float* importance) {
  const size_t row_bytes = dtype_row_bytes(type, kPerRow);
  std::vector<uint8_t> out(row_bytes * kRows);
  for (int64_t r = 0; r < kRows; ++r) {
    // An imatrix has one weight per column, shared by every row.
    quantize_row(type, x.data() + r * kPerRow, out.data() + r * row_bytes, kPerRow, importance);
  }
  return out;
}

TEST(QuantGolden, MatchesGgmlBitForBit) {
  for (const Golden& g : kGolden) {
    SCOPED_TRACE(std::string(dtype_name(g.type)) + " input kind " + std::to_string(g.kind));
    const std::vector<float> x = MakeInput(g.kind, kRows * kPerRow, 1234u + g.kind);
    const std::vector<uint8_t> q = QuantizeRows(g.type, x, nullptr);
    EXPECT_EQ(Fnv1a(q.data(), q.size()), g.reference) << "reference quantization differs";

    std::vector<float> y(x.size());
    dequantize_row_quant(g.type, q.data(), y.data(), static_cast<int64_t>(y.size()));
    EXPECT_EQ(Fnv1a(y.data(), y.size() * sizeof(float)), g.dequantized) << "dequantization differs";

    if (g.weighted != 0) {
      const std::vector<float> imp = MakeImportance(kPerRow, 99u + g.kind);
      const std::vector<uint8_t> qw = QuantizeRows(g.type, x, imp.data());
      EXPECT_EQ(Fnv1a(qw.data(), qw.size()), g.weighted) << "weighted quantization differs";
    }
  }
}

// One whole super-block per K-quant, byte for byte, for a small exact input
// (x[j] = ((37 j) mod 64 - 32) / 16, importance 1 + j mod 5), from the same
// ggml library: readable when something breaks, unlike the hashes above.
struct GoldenBlock {
  DType type;
  bool weighted;
  const char* hex;
};

constexpr GoldenBlock kGoldenBlocks[] = {
    {DType::Q2_K, false,
     "efefffffefefffffefefffffefefffff88228866dd77dd88228866dd77228822"
     "9977ddbb228866dd77dd88228866dd7788228866dd77dd88228866dd77228822"
     "9977ddbb228866dd77dd88228866dd77b62c672f"},
    {DType::Q2_K, true,
     "dfcececdfeceefcdfeefeeacdeeedcde84228872dd77ed88229876dd77218822"
     "cc77dd77228822dd77dd88228866dd7788228867dd77de8822c977dd77228822"
     "9977dd77228822dd77dd84228872dd77ca2cc62f"},
    {DType::Q3_K, false,
     "aa55aa55aa55ffaa55aa55aaff55aa5555aa55aaff55aa55aa55ffaa55aa55aa"
     "005555aabbffcc1155aaaaff33005599aa555500ccffaa66550033ffaaaa5555"
     "005555aabbffcc1155aaaaff33005599aa555500ccffaa66550033ffaaaa5555"
     "00ee00cc00ee00cc00ff00ff49a4"},
    {DType::Q3_K, true,
     "aa55aa55aa55ffaa55aa55aa5f55aa5555aa55aafa55aa55aa55ffaa55aa55aa"
     "005556aabbffcc1159a6aefb33045559aa555500ffffaaaa554433ffffaa9544"
     "101165aaffffcc1155aaaaffff005555aa565500ccffaaaa554433ffeeaa9555"
     "53b880cc25a886ed00ff00ff00a5"},
    {DType::Q4_K, false,
     "4d1cfc27fffcfffcfffdfffdffdcffdc8019a23bd56df78129b34cd57e08912a"
     "c45ce67f18a23bc46df78019b34bd56e8019a23bd56df78129b34cd57e08912a"
     "c45ce67f18a23bc46df78019b34bd56e8019a23bd56df78129b34cd57e08912a"
     "c45ce67f18a23bc46df78019b34bd56e8019a23bd56df78129b34cd57e08912a"
     "c45ce67f18a23bc46df78019b34bd56e"},
    {DType::Q4_K, true,
     "321cec27fffdfefdfffbfffeeeedffed7019a23bc56ef78119b34cd56e08912a"
     "b45de67f09a23bc45df78019a34cd56e8019a23bd56ef7812ab34cd57f08912a"
     "c45de67f19a23bc46ef78019b34cd56e8019a23bd56ef7802ab34cd57e08912a"
     "c45de67f19a23bc46df78019b34cd56e8019a23bd56ef78129b34cd57e08912a"
     "c45de67f19a23bc46df78019b34cd56e"},
    {DType::Q5_K, false,
     "16180628fffefffefffefffeffeeffeeaa55aa55aa55aaaa55aa55aa5555aa55"
     "aa55aa5555aa55aa55aaaa55aa55aa5500225577aaccff11446699bbee003355"
     "88aaddff22447799ccee11336688bbdd00225577aaccff11446699bbee003355"
     "88aaddff22447799ccee11336688bbdd00225577aaccff11446699bbee003355"
     "88aaddff22447799ccee11336688bbdd00225577aaccff11446699bbee003355"
     "88aaddff22447799ccee11336688bbdd"},
    {DType::Q5_K, true,
     "16180628fffffffffffdfffdffdfffdf0055aa55aa55aaaa55aa55aa5555aa55"
     "aa55aa5555aa55aa55aaaa55aa55aa55f02245779accef11346689bbde002355"
     "78aacdff12446799bcee01335688abddf02245779accef11346689bbde002355"
     "78aacdff12446799bcee01335688abddf02245779accef11346689bbde002355"
     "78aacdff12446799bcee01335688abddf02245779accef11346689bbde002355"
     "78aacdff12446799bcee01335688abdd"},
    {DType::Q6_K, false,
     "0055aaff4499ee3388dd2277cc1166bb00bb6611cc7722dd8833ee9944ffaa55"
     "0055aaff4499ee3388dd2277cc1166bbeecc3311ff6644bb9900eecc33118866"
     "0055aaff4499ee3388dd2277cc1166bb00bb6611cc7722dd8833ee9944ffaa55"
     "0055aaff4499ee3388dd2277cc1166bbeecc3311ff6644bb9900eecc33118866"
     "88228822dd77dd88228877dd7722882233882288dd77dd22882277dd77cc2288"
     "88228822dd77dd88228877dd7722882233882288dd77dd22882277dd77cc2288"
     "807f8073807f8073807f8073807f80730090"},
    {DType::Q6_K, true,
     "0055aaff4499ee3388dd2277cc1166bb00bb6611cc7722dd8833ee9944ffaa55"
     "0055aaff4499ee3388dd2277cc1166bbeecc3311ff6644bb9900eecc33118866"
     "0055aaff4499ee3388dd2277cc1166bb00bb6611cc7722dd8833ee9944ffaa55"
     "0055aaff4499ee3388dd2277cc1166bbeecc3311ff6644bb9900eecc33118866"
     "88228822dd77dd88228877dd7722882233882288dd77dd22882277dd77cc2288"
     "88228822dd77dd88228877dd7722882233882288dd77dd22882277dd77cc2288"
     "807f8073807f8073807f8073807f80740090"},

};

std::string ToHex(const std::vector<uint8_t>& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  for (uint8_t b : bytes) {
    s += kDigits[b >> 4];
    s += kDigits[b & 15];
  }
  return s;
}

TEST(QuantGolden, KQuantBlocksMatchGgmlBytes) {
  std::vector<float> x(kQK_K), imp(kQK_K);
  for (int j = 0; j < kQK_K; ++j) {
    x[j] = static_cast<float>((j * 37) % 64 - 32) / 16.0f;
    imp[j] = 1.0f + static_cast<float>(j % 5);
  }
  for (const GoldenBlock& g : kGoldenBlocks) {
    SCOPED_TRACE(std::string(dtype_name(g.type)) + (g.weighted ? " weighted" : " reference"));
    std::vector<uint8_t> q(dtype_row_bytes(g.type, kQK_K));
    quantize_row(g.type, x.data(), q.data(), kQK_K, g.weighted ? imp.data() : nullptr);
    EXPECT_EQ(ToHex(q), g.hex);
  }
}

}  // namespace
}  // namespace edgelm
