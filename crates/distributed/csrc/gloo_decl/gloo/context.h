// Declaration-only stand-in (see csrc/gloo_decl/gloo/README.md).
// ProcessGroupGloo.hpp holds contexts through std::shared_ptr and names one member function in an
// inline body (`setTimeout`), which this shim never calls.
#pragma once
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
