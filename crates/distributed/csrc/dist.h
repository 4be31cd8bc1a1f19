// C interface of the dino-distributed shim over libtorch's c10d (TCPStore + ProcessGroupGloo).
//
// Conventions, for every function returning `char*`:
//   - NULL means success;
//   - otherwise the return value is a heap-allocated, NUL-terminated error message that the
//     caller owns and must release with `dino_dist_free_error`.
// No function lets a C++ exception escape. Tensors are passed as `at::Tensor*`, which is what
// tch's `Tensor::as_mut_ptr()` returns (torch-sys's `C_tensor`).
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Opaque handle: the store and the process group of one process.
typedef struct dino_dist_group dino_dist_group;

// Reduction operators (torch.distributed.ReduceOp subset).
enum { DINO_DIST_SUM = 0, DINO_DIST_AVG = 1 };

// Rendezvous at master_addr:master_port (rank 0 hosts the TCPStore server), then builds a Gloo
// process group of `world_size` processes. `timeout_ms` bounds the store connection, the
// rendezvous and, later, every collective. On success `*out` is the new handle.
char* dino_dist_init(
    const char* master_addr,
    uint16_t master_port,
    int32_t rank,
    int32_t world_size,
    int64_t timeout_ms,
    dino_dist_group** out);

int32_t dino_dist_rank(const dino_dist_group* group);
int32_t dino_dist_world_size(const dino_dist_group* group);

// In-place all-reduce of `tensor` (an at::Tensor*) with op DINO_DIST_SUM or DINO_DIST_AVG.
char* dino_dist_all_reduce(dino_dist_group* group, void* tensor, int32_t op);

// In-place broadcast of `tensor` from rank `root` to every other rank.
char* dino_dist_broadcast(dino_dist_group* group, void* tensor, int32_t root);

// Blocks until every rank has entered the barrier.
char* dino_dist_barrier(dino_dist_group* group);

// Destroys the process group and the store. NULL is accepted.
void dino_dist_destroy(dino_dist_group* group);

// Releases an error message returned by one of the functions above. NULL is accepted.
void dino_dist_free_error(char* message);

#ifdef __cplusplus
}
#endif
