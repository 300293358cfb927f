// The one exception type edgelm throws for anything a user can cause.
#pragma once

#include <stdexcept>

namespace edgelm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace edgelm
