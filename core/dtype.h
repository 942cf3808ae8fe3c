// Element types freehold reads and writes, named as safetensors names them. Torch-free so that the parsers of
// untrusted bytes can be fuzzed without LibTorch; io/ maps these to at::ScalarType.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace freehold::core {

enum class DType : uint8_t { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
int dtype_size(DType dtype);
// The safetensors spelling: "F32", "BF16", "BOOL", ...
std::string_view dtype_name(DType dtype);
// Parses the safetensors spelling exactly (case-sensitive); nullopt when it is not one freehold can use.
std::optional<DType> parse_dtype(std::string_view name);
// True for names that the safetensors format defines but freehold cannot compute with (F8_E4M3, U32, C64, ...),
// so that errors can say "valid safetensors, but unsupported" rather than "unknown".
bool is_known_unsupported_safetensors_dtype(std::string_view name);
// "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL" — for error messages.
std::string supported_dtype_names();
bool is_floating(DType dtype);

// User-facing precision names used on the command line and in configs: fp32, bf16, fp16.
std::optional<DType> parse_precision(std::string_view name);
std::string_view precision_name(DType dtype);

}  // namespace freehold::core
