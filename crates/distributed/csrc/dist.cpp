// dino-distributed shim: the few pieces of libtorch's c10d (the engine behind torch.distributed) that
// data-parallel training needs, behind a C interface (dist.h) that Rust calls.
//
// What it builds, per process, mirroring `torch.distributed.init_process_group("gloo",
// init_method="env://")`:
//   1. a c10d::TCPStore at MASTER_ADDR:MASTER_PORT: rank 0 hosts the server and waits for the
//      other ranks to connect, every rank is a client;
//   2. a c10d::ProcessGroupGloo over that store, which uses it only to exchange addresses and then
//      connects every pair of ranks directly over TCP.
//
// CUDA tensors (cargo feature `nccl`, which defines DINO_DIST_NCCL): like torch.distributed's
// "cpu:gloo,cuda:nccl" default group, collectives on CUDA tensors go to a c10d::ProcessGroupNCCL
// sharing the same store (under the prefix "nccl/"), created by the first such collective; every
// rank reaches it at the same point because all ranks issue the same collectives in order.
// NCCL's own communicator set-up happens inside that first collective. Barriers stay on Gloo.
// Without the feature, CUDA tensors go to Gloo, whose c10d backend copies them through host
// memory (not tested: no GPU where this was written).
//
// Timeouts: one value bounds the store connection, the Gloo rendezvous and every collective
// (Gloo's context timeout, plus the collective's own option). A peer that died closes its sockets
// and the collective fails at once; a peer that is alive but never joins makes it fail when the
// timeout expires. Nothing here waits forever.
//
// Errors: every entry point catches every exception; none crosses the C boundary. c10::Error is
// reported without its C++ backtrace (the Rust side adds its own context).
//
// Why there are Gloo headers in gloo_decl/: the include folder of PyPI's libtorch ships
// ProcessGroupGloo.hpp, but not the <gloo/...> headers it includes, and hides the class behind
// USE_C10D_GLOO. The class itself (and all of Gloo) is compiled into, and exported by,
// libtorch_cpu.so. ProcessGroupGloo.hpp only needs Gloo's types to be declared: it holds them
// through smart pointers, and its inline `GlooStore` adapter overrides four virtual members of
// gloo::rendezvous::Store. gloo_decl/ declares exactly that, nothing more, and this file never
// touches a Gloo type itself. The alternative, Debian's libgloo-dev, is a 2022 snapshot that is
// not the Gloo libtorch was built with (its Store interface differs) and would add a system
// package to every build; the declarations here have no dependency and only need revisiting if a
// new libtorch's ProcessGroupGloo.hpp starts using more of Gloo inline (a compile error, never a
// silent mismatch: the class layout and all code come from libtorch's own header and library).

#include "dist.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef DINO_DIST_NCCL
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#ifndef USE_C10D_GLOO
#error "build.rs must define USE_C10D_GLOO (ProcessGroupGloo.hpp is empty without it)"
#endif

struct dino_dist_group {
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#ifdef DINO_DIST_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  int32_t rank;
  int32_t world_size;
  std::chrono::milliseconds timeout;
};

namespace {

char* copy_message(const std::string& message) {
  char* out = static_cast<char*>(std::malloc(message.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, message.c_str(), message.size() + 1);
  }
  return out;
}

// Runs `body`, turning any exception into an owned error message prefixed with `what`.
template <typename F>
char* guarded(const char* what, F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return copy_message(std::string(what) + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return copy_message(std::string(what) + ": " + e.what());
  } catch (...) {
    return copy_message(std::string(what) + ": unknown C++ exception");
  }
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// The Gloo transport device, chosen as torch.distributed does: GLOO_SOCKET_IFNAME names the
// interface when set; otherwise a loopback master means a single machine (bind loopback), and
// anything else lets Gloo resolve this machine's hostname (falling back to loopback itself).
std::shared_ptr<gloo::transport::Device> make_device(const std::string& master_addr) {
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && ifname[0] != '\0') {
    std::string first(ifname);
    first = first.substr(0, first.find(','));
    return c10d::ProcessGroupGloo::createDeviceForInterface(first);
  }
  if (is_loopback(master_addr)) {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// Waits for `work`, bounded by the group's timeout as well as by Gloo's own.
void wait(const c10::intrusive_ptr<c10d::Work>& work, std::chrono::milliseconds timeout) {
  work->wait(timeout);
}

// The backend that runs collectives on `t`: NCCL for CUDA tensors when built with it, else Gloo.
c10d::Backend& backend_for(dino_dist_group* group, const at::Tensor& t) {
#ifdef DINO_DIST_NCCL
  if (t.is_cuda()) {
    if (!group->nccl) {
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = group->timeout;
      auto store = c10::make_intrusive<c10d::PrefixStore>(
          "nccl", c10::static_intrusive_pointer_cast<c10d::Store>(group->store));
      group->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::static_intrusive_pointer_cast<c10d::Store>(store),
          group->rank,
          group->world_size,
          opts);
    }
    return *group->nccl;
  }
#else
  (void)t;
#endif
  return *group->gloo;
}

at::Tensor& as_tensor(void* tensor) {
  TORCH_CHECK(tensor != nullptr, "null tensor");
  return *static_cast<at::Tensor*>(tensor);
}

} // namespace

extern "C" {

char* dino_dist_init(
    const char* master_addr,
    uint16_t master_port,
    int32_t rank,
    int32_t world_size,
    int64_t timeout_ms,
    dino_dist_group** out) {
  return guarded("init_process_group", [&] {
    TORCH_CHECK(out != nullptr && master_addr != nullptr, "null argument");
    *out = nullptr;
    TORCH_CHECK(world_size >= 1, "world size must be at least 1, got ", world_size);
    TORCH_CHECK(
        rank >= 0 && rank < world_size,
        "rank ", rank, " is outside 0..", world_size);
    TORCH_CHECK(timeout_ms > 0, "timeout must be positive, got ", timeout_ms, " ms");
    const std::chrono::milliseconds timeout(timeout_ms);
    const std::string host(master_addr);

    c10d::TCPStoreOptions store_opts;
    store_opts.port = master_port;
    store_opts.isServer = rank == 0;
    store_opts.numWorkers = static_cast<std::size_t>(world_size);
    store_opts.waitWorkers = true;
    store_opts.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(host, store_opts);

    auto gloo_opts = c10d::ProcessGroupGloo::Options::create(timeout);
    gloo_opts->devices.push_back(make_device(host));
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::static_intrusive_pointer_cast<c10d::Store>(store), rank, world_size, gloo_opts);

    auto group = std::make_unique<dino_dist_group>();
    group->store = std::move(store);
    group->gloo = std::move(gloo);
    group->rank = rank;
    group->world_size = world_size;
    group->timeout = timeout;
    *out = group.release();
  });
}

int32_t dino_dist_rank(const dino_dist_group* group) {
  return group == nullptr ? -1 : group->rank;
}

int32_t dino_dist_world_size(const dino_dist_group* group) {
  return group == nullptr ? -1 : group->world_size;
}

char* dino_dist_all_reduce(dino_dist_group* group, void* tensor, int32_t op) {
  return guarded("all_reduce", [&] {
    TORCH_CHECK(group != nullptr, "null process group");
    at::Tensor& t = as_tensor(tensor);
    TORCH_CHECK(op == DINO_DIST_SUM || op == DINO_DIST_AVG, "unknown reduce op ", op);
    // Gloo has no AVG (c10d rejects ReduceOp::AVG for it): sum, then divide, as NCCL's
    // ncclAvg would. Integer division is not what anyone averaging gradients wants: refuse it.
    TORCH_CHECK(
        op == DINO_DIST_SUM || at::isFloatingType(t.scalar_type()) ||
            at::isComplexType(t.scalar_type()),
        "AVG needs a floating-point tensor, got ", t.scalar_type());
    // The collective writes through the tensor's storage; autograd never sees it (as in
    // torch.distributed). The fix-ups below must not be recorded either.
    at::NoGradGuard no_grad;
    // Gloo works on dense, contiguous memory: reduce a contiguous copy and write it back.
    at::Tensor work_tensor = t.is_contiguous() ? t : t.contiguous();
    std::vector<at::Tensor> tensors{work_tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = group->timeout;
    wait(backend_for(group, t).allreduce(tensors, opts), group->timeout);
    if (op == DINO_DIST_AVG) {
      work_tensor.div_(group->world_size);
    }
    if (!work_tensor.is_same(t)) {
      t.copy_(work_tensor);
    }
  });
}

char* dino_dist_broadcast(dino_dist_group* group, void* tensor, int32_t root) {
  return guarded("broadcast", [&] {
    TORCH_CHECK(group != nullptr, "null process group");
    at::Tensor& t = as_tensor(tensor);
    TORCH_CHECK(
        root >= 0 && root < group->world_size,
        "root rank ", root, " is outside 0..", group->world_size);
    at::NoGradGuard no_grad;
    at::Tensor work_tensor = t.is_contiguous() ? t : t.contiguous();
    std::vector<at::Tensor> tensors{work_tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    opts.timeout = group->timeout;
    wait(backend_for(group, t).broadcast(tensors, opts), group->timeout);
    if (!work_tensor.is_same(t)) {
      t.copy_(work_tensor);
    }
  });
}

char* dino_dist_barrier(dino_dist_group* group) {
  return guarded("barrier", [&] {
    TORCH_CHECK(group != nullptr, "null process group");
    c10d::BarrierOptions opts;
    opts.timeout = group->timeout;
    wait(group->gloo->barrier(opts), group->timeout);
  });
}

void dino_dist_destroy(dino_dist_group* group) {
  // Destructors may still throw from deep inside c10d (e.g. a store socket error): swallow, the
  // process is tearing the group down anyway.
  try {
    if (group != nullptr) {
#ifdef DINO_DIST_NCCL
      // What torch.distributed.destroy_process_group() does: stop the watchdog and abort the
      // communicators before the object goes, rather than leaving it to the destructor.
      if (group->nccl) {
        group->nccl->shutdown();
      }
      group->nccl.reset();
#endif
      group->gloo.reset();
      group->store.reset();
    }
  } catch (...) {
  }
  delete group;
}

void dino_dist_free_error(char* message) {
  std::free(message);
}

} // extern "C"
