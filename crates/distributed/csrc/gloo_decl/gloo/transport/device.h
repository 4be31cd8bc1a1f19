// Declaration-only stand-in (see csrc/gloo_decl/gloo/README.md).
// ProcessGroupGloo.hpp only holds these through smart pointers.
#pragma once

namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport
} // namespace gloo
