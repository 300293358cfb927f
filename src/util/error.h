// Errors: every failure a user can cause (bad file, bad flag, bad request) is
// reported by throwing edgelm::Error with a message that names the problem.
#pragma once

#include <sstream>
#include <string>

#include "edgelm/error.h"

namespace edgelm {

// Concatenates any streamable values: str_cat("tensor ", name, " has ", n, " dims").
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(str_cat(args...));
}

}  // namespace edgelm
