// Declaration-only stand-in (see csrc/gloo_decl/gloo/README.md): nothing from it is needed.
#pragma once
