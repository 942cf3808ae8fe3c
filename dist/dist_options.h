// The `dist:` section of a run config (DESIGN.md §4) as a plain struct.
#pragma once

#include <cstdint>
#include <string_view>

namespace freehold::dist {

// auto: NCCL for GPU tensors, MPI for CPU tensors; a process started alone is world size 1 either way.
enum class Backend { kAuto, kMpi, kNccl };

struct DistOptions {
  Backend backend = Backend::kAuto;
  int64_t timeout_s = 600;  // deadline of every collective; a lost peer ends every rank with exit code 4
  int64_t bucket_mb = 25;   // gradient bucket size (dist/grad_buckets.h): one all-reduce per bucket
};

inline std::string_view backend_name(Backend backend) {
  return backend == Backend::kAuto ? "auto" : backend == Backend::kMpi ? "mpi" : "nccl";
}

}  // namespace freehold::dist
