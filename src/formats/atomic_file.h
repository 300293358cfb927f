// Writes a file atomically: everything goes to PATH.tmp, and commit() flushes,
// fsyncs and renames it over PATH. If commit() is never reached (an exception),
// the destructor removes the temporary, so PATH is either old or complete.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>

namespace edgelm {

class AtomicFile {
 public:
  // Throws edgelm::Error naming the path if PATH.tmp cannot be created.
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void write_zeros(size_t count);
  size_t written() const { return written_; }
  void commit();

 private:
  std::string path_;
  std::string tmp_path_;
  std::FILE* file_ = nullptr;
  size_t written_ = 0;
};

}  // namespace edgelm
