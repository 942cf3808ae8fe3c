// SHA-256 (FIPS 180-4) of files and bytes, for checkpoint manifests: a bit flip in a committed checkpoint is
// found at load time (RELIABILITY.md C10). Written out here rather than pulling a crypto library into the build.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace freehold::trainer {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  // Lowercase hex of the digest; the object is spent afterwards.
  std::string hex_digest();

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t length_ = 0;
};

std::string sha256_hex(std::string_view bytes);
// Streams the file; throws core::SystemError naming the path.
std::string sha256_file(const std::string& path);

}  // namespace freehold::trainer
