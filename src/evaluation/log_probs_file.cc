#include "evaluation/log_probs_file.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "formats/atomic_file.h"
#include "util/error.h"

namespace edgelm::evaluation {
namespace {

static_assert(std::endian::native == std::endian::little, "the file format is little-endian");

constexpr char kMagic[8] = {'E', 'D', 'G', 'E', 'L', 'M', 'L', 'P'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 8 + 6 * 4 + 8;
constexpr uint32_t kMaxVocab = 1u << 24;
constexpr uint32_t kMaxContext = 1u << 24;

struct Header {
  uint32_t version, vocab_size, context, n_chunks, top_k;
  int32_t bos;
  uint64_t n_tokens;
};

template <typename T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

size_t record_bytes(int top_k) {
  return 4 + 8 * static_cast<size_t>(top_k);
}

}  // namespace

// ------------------------------------------------------------------ writer

LogProbsWriter::LogProbsWriter(const std::string& path, const ChunkPlan& plan, int vocab_size,
                               int top_k, const std::vector<int32_t>& tokens)
    : file_(std::make_unique<AtomicFile>(path)), plan_(plan), top_k_(top_k) {
  const uint64_t n_tokens = static_cast<uint64_t>(plan.n_chunks) * plan.context;
  if (tokens.size() < n_tokens) fail("log-probs file '", path, "': too few tokens");
  const uint32_t fields[5] = {kVersion, static_cast<uint32_t>(vocab_size),
                              static_cast<uint32_t>(plan.context),
                              static_cast<uint32_t>(plan.n_chunks), static_cast<uint32_t>(top_k)};
  file_->write(kMagic, sizeof(kMagic));
  file_->write(fields, sizeof(fields));
  file_->write(&plan.bos, sizeof(plan.bos));
  file_->write(&n_tokens, sizeof(n_tokens));
  file_->write(tokens.data(), n_tokens * sizeof(int32_t));
}

LogProbsWriter::~LogProbsWriter() = default;

void LogProbsWriter::write_chunk(const LogProbsChunk& chunk) {
  const size_t rows = static_cast<size_t>(plan_.scored_per_chunk);
  if (chunk.nll.size() != rows || chunk.ids.size() != rows * top_k_ ||
      chunk.log_probs.size() != rows * top_k_ || chunks_written_ >= plan_.n_chunks) {
    fail("log-probs writer: chunk ", chunks_written_, " has the wrong shape");
  }
  for (size_t r = 0; r < rows; ++r) {
    file_->write(&chunk.nll[r], sizeof(float));
    file_->write(chunk.ids.data() + r * top_k_, top_k_ * sizeof(int32_t));
    file_->write(chunk.log_probs.data() + r * top_k_, top_k_ * sizeof(float));
  }
  ++chunks_written_;
}

void LogProbsWriter::commit() {
  if (chunks_written_ != plan_.n_chunks) {
    fail("log-probs writer: ", chunks_written_, " of ", plan_.n_chunks, " chunks written");
  }
  file_->commit();
}

// ------------------------------------------------------------------ reader

LogProbsReader::LogProbsReader(const std::string& path) : path_(path) {
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) fail("cannot read base log-probs file '", path, "': ", ec.message());
  in_.open(path, std::ios::binary);
  if (!in_) fail("cannot open base log-probs file '", path, "'");
  char raw[kHeaderBytes];
  if (file_size < kHeaderBytes || !in_.read(raw, kHeaderBytes)) {
    fail("'", path, "' is too short to be an edgelm log-probs file");
  }
  if (std::memcmp(raw, kMagic, sizeof(kMagic)) != 0) {
    fail("'", path, "' is not an edgelm log-probs file (written by perplexity --save-logits)");
  }
  Header h;
  h.version = load<uint32_t>(raw + 8);
  h.vocab_size = load<uint32_t>(raw + 12);
  h.context = load<uint32_t>(raw + 16);
  h.n_chunks = load<uint32_t>(raw + 20);
  h.top_k = load<uint32_t>(raw + 24);
  h.bos = load<int32_t>(raw + 28);
  h.n_tokens = load<uint64_t>(raw + 32);
  if (h.version != kVersion) fail("'", path, "': unsupported version ", h.version);
  if (h.vocab_size < 2 || h.vocab_size > kMaxVocab) {
    fail("'", path, "': vocab_size ", h.vocab_size, " is out of range");
  }
  if (h.context < 4 || h.context > kMaxContext) {
    fail("'", path, "': context ", h.context, " is out of range");
  }
  if (h.top_k < 1 || h.top_k > h.vocab_size) {
    fail("'", path, "': top_k ", h.top_k, " is out of range for a vocabulary of ", h.vocab_size);
  }
  if (h.bos < -1 || h.bos >= static_cast<int32_t>(h.vocab_size)) {
    fail("'", path, "': BOS token ", h.bos, " is outside the vocabulary");
  }
  if (h.n_chunks < 1 || h.n_tokens != static_cast<uint64_t>(h.n_chunks) * h.context) {
    fail("'", path, "': ", h.n_tokens, " tokens do not make ", h.n_chunks, " chunks of ",
         h.context);
  }
  // All factors are bounded (n_tokens <= 2^32 * 2^24), so this cannot overflow.
  const uint64_t scored = static_cast<uint64_t>(h.n_chunks) * (h.context - 1 - h.context / 2);
  const long double expected = static_cast<long double>(kHeaderBytes) + 4.0L * h.n_tokens +
                               static_cast<long double>(scored) * record_bytes(h.top_k);
  if (expected != static_cast<long double>(file_size)) {
    fail("'", path, "': file size ", file_size, " does not match its header (expected ",
         static_cast<uint64_t>(expected), " bytes; truncated or corrupt)");
  }
  vocab_size_ = static_cast<int>(h.vocab_size);
  top_k_ = static_cast<int>(h.top_k);
  tokens_.resize(h.n_tokens);  // <= file size / 4
  if (!in_.read(reinterpret_cast<char*>(tokens_.data()),
                static_cast<std::streamsize>(h.n_tokens * sizeof(int32_t)))) {
    fail("'", path, "': cannot read the tokens");
  }
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (tokens_[i] < 0 || tokens_[i] >= vocab_size_) {
      fail("'", path, "': token ", i, " has id ", tokens_[i], ", outside the vocabulary");
    }
  }
  plan_.text_tokens = static_cast<int64_t>(h.n_tokens);
  plan_.context = static_cast<int>(h.context);
  plan_.n_chunks = static_cast<int>(h.n_chunks);
  plan_.first_scored = plan_.context / 2;
  plan_.scored_per_chunk = plan_.context - 1 - plan_.first_scored;
  plan_.bos = h.bos;
}

void LogProbsReader::read_chunk(LogProbsChunk& chunk) {
  if (chunks_read_ >= plan_.n_chunks) fail("'", path_, "': no more chunks");
  const size_t rows = static_cast<size_t>(plan_.scored_per_chunk);
  const size_t k = static_cast<size_t>(top_k_);
  const size_t bytes = rows * record_bytes(top_k_);  // validated against the file size
  buffer_.resize(bytes);
  if (!in_.read(buffer_.data(), static_cast<std::streamsize>(bytes))) {
    fail("'", path_, "': cannot read chunk ", chunks_read_);
  }
  chunk.nll.resize(rows);
  chunk.ids.resize(rows * k);
  chunk.log_probs.resize(rows * k);
  const char* p = buffer_.data();
  for (size_t r = 0; r < rows; ++r) {
    chunk.nll[r] = load<float>(p);
    if (!std::isfinite(chunk.nll[r]) || chunk.nll[r] < -1e-3f) {
      fail("'", path_, "': chunk ", chunks_read_, " row ", r, " has an invalid NLL ", chunk.nll[r]);
    }
    std::memcpy(chunk.ids.data() + r * k, p + 4, k * sizeof(int32_t));
    std::memcpy(chunk.log_probs.data() + r * k, p + 4 + 4 * k, k * sizeof(float));
    for (size_t i = 0; i < k; ++i) {
      const int32_t id = chunk.ids[r * k + i];
      const float lp = chunk.log_probs[r * k + i];
      if (id < 0 || id >= vocab_size_ || !std::isfinite(lp) || lp > 1e-3f) {
        fail("'", path_, "': chunk ", chunks_read_, " row ", r, " has an invalid entry (id ", id,
             ", log-prob ", lp, ")");
      }
    }
    p += record_bytes(top_k_);
  }
  ++chunks_read_;
}

}  // namespace edgelm::evaluation
