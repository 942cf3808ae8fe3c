// libFuzzer target: the whole input is a safetensors file. The parser must accept it or throw SafetensorsError;
// anything else (a crash, a sanitizer report, an InternalError from FH_CHECK, another exception) is a bug. What it
// accepts must hold the invariants the loader relies on, and must survive a serialize → parse round trip.
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <string_view>

#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors_header.h"

namespace {

using freehold::io::SafetensorsError;
using freehold::io::SafetensorsHeader;
using freehold::io::TensorInfo;

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "invariant violated: %s\n", what);
  std::abort();
}

void check_invariants(const SafetensorsHeader& h, uint64_t file_size) {
  if (h.data_offset() + h.data_size != file_size) violated("data_offset + data_size == file size");
  if (h.header_length > freehold::io::kMaxSafetensorsHeaderBytes) violated("header length within the cap");
  uint64_t expected = 0;
  for (const TensorInfo& t : h.tensors) {
    if (t.begin != expected || t.end < t.begin) violated("contiguous from 0");
    if (t.shape.size() > static_cast<size_t>(freehold::io::kMaxTensorRank)) violated("rank within the maximum");
    unsigned __int128 bytes = static_cast<unsigned>(freehold::core::dtype_size(t.dtype));
    for (int64_t d : t.shape) {
      if (d < 0) violated("dimensions non-negative");
      // Clamped at 2^64 after each factor, so the 128-bit product cannot overflow; the real one must be < 2^63.
      bytes *= static_cast<uint64_t>(d);
      if (bytes > (static_cast<unsigned __int128>(1) << 64)) bytes = static_cast<unsigned __int128>(1) << 64;
    }
    if (bytes != t.num_bytes()) violated("shape x dtype size == end - begin");
    freehold::io::validate_tensor_name(t.name, "fuzz");  // throws SafetensorsError: reported as a crash below
    expected = t.end;
  }
  if (expected != h.data_size) violated("the last tensor ends at the end of the file");
}

void check_round_trip(const SafetensorsHeader& h) {
  const std::string header = freehold::io::serialize_safetensors_header(h.tensors, h.metadata, "fuzz");
  const SafetensorsHeader again = freehold::io::parse_safetensors_header(header, header.size() + h.data_size, "fuzz");
  if (again.metadata != h.metadata) violated("metadata round-trips");
  if (again.tensors.size() != h.tensors.size()) violated("tensor count round-trips");
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const TensorInfo& a = h.tensors[i];
    const TensorInfo& b = again.tensors[i];
    if (a.name != b.name || a.dtype != b.dtype || a.shape != b.shape || a.begin != b.begin || a.end != b.end) {
      violated("tensors round-trip");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  SafetensorsHeader header;
  try {
    header = freehold::io::parse_safetensors_header(bytes, size, "fuzz");
  } catch (const SafetensorsError&) {
    return 0;  // rejected: fine
  }
  try {
    check_invariants(header, size);
    check_round_trip(header);
  } catch (const SafetensorsError& e) {
    std::fprintf(stderr, "an accepted header failed to round-trip: %s\n", e.what());
    std::abort();
  }
  return 0;
}
