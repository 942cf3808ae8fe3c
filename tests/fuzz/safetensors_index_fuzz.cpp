// libFuzzer target: the whole input is a model.safetensors.index.json. The parser must accept it or throw
// SafetensorsError; what it accepts must name only plain shard file names.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "io/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  freehold::io::SafetensorsIndex index;
  try {
    index = freehold::io::parse_safetensors_index(bytes, "fuzz");
  } catch (const freehold::io::SafetensorsError&) {
    return 0;
  }
  if (index.weight_map.empty()) {
    std::fprintf(stderr, "invariant violated: an accepted index has tensors\n");
    std::abort();
  }
  try {
    for (const auto& [tensor, shard] : index.weight_map) freehold::io::validate_shard_file_name(shard, "fuzz");
  } catch (const freehold::io::SafetensorsError& e) {
    std::fprintf(stderr, "invariant violated: an accepted index names a bad shard: %s\n", e.what());
    std::abort();
  }
  return 0;
}
