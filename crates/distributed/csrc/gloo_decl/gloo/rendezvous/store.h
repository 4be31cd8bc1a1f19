// Declaration-only stand-in (see csrc/gloo_decl/gloo/README.md).
// ProcessGroupGloo.hpp derives its inline `GlooStore` adapter from this interface and overrides
// these four members, so their signatures must be spelled out. The shim never constructs a
// `GlooStore` (libtorch does, with its own Gloo), so this class's layout is never relied on.
#pragma once
#include <chrono>
#include <string>
#include <vector>

namespace gloo {
namespace rendezvous {
class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(
      const std::vector<std::string>& keys,
      const std::chrono::milliseconds& timeout) = 0;
};
} // namespace rendezvous
} // namespace gloo
