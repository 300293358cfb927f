#include "formats/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "util/error.h"

namespace edgelm {

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_path_(path + ".tmp") {
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  if (file_ == nullptr) fail("cannot create '", tmp_path_, "': ", std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::remove(tmp_path_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t size) {
  if (size == 0) return;
  if (std::fwrite(data, 1, size, file_) != size) {
    fail("error writing '", tmp_path_, "': ", std::strerror(errno));
  }
  written_ += size;
}

void AtomicFile::write_zeros(size_t count) {
  static const char kZeros[256] = {};
  while (count > 0) {
    const size_t n = count < sizeof(kZeros) ? count : sizeof(kZeros);
    write(kZeros, n);
    count -= n;
  }
}

void AtomicFile::commit() {
  if (file_ == nullptr) fail("'", path_, "' was already committed");
  const bool flushed = std::fflush(file_) == 0 && ::fsync(fileno(file_)) == 0;
  const int err = errno;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) {
    std::remove(tmp_path_.c_str());
    fail("error writing '", tmp_path_, "': ", std::strerror(err));
  }
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const int rename_err = errno;
    std::remove(tmp_path_.c_str());
    fail("cannot rename '", tmp_path_, "' to '", path_, "': ", std::strerror(rename_err));
  }
}

}  // namespace edgelm
