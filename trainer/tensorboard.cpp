// TFRecord framing and the Event / Summary protos in protobuf's wire format; see tensorboard.h.
#include "trainer/tensorboard.h"

#include <unistd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/file.h"

namespace freehold::trainer {
namespace {

std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;  // reflected Castagnoli polynomial
    table[i] = c;
  }
  return table;
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_fixed(std::string& out, const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }  // LE host
void put_bytes_field(std::string& out, int field, std::string_view bytes) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | 2);
  put_varint(out, bytes.size());
  out.append(bytes);
}
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
std::string event_header(double wall_time) {
  std::string e;
  put_varint(e, (1 << 3) | 1);  // wall_time, fixed64
  put_fixed(e, &wall_time, 8);
  return e;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  static const std::array<uint32_t, 256> table = make_crc32c_table();
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord(std::string_view data) {
  static_assert(std::endian::native == std::endian::little, "TFRecord lengths and CRCs are little-endian");
  std::string out;
  const uint64_t length = data.size();
  put_fixed(out, &length, 8);
  const uint32_t length_crc = masked_crc32c(&length, 8);
  put_fixed(out, &length_crc, 4);
  out.append(data);
  const uint32_t data_crc = masked_crc32c(data.data(), data.size());
  put_fixed(out, &data_crc, 4);
  return out;
}

std::string scalar_event(const std::string& tag, float value, int64_t step, double wall_time) {
  std::string summary_value;
  put_bytes_field(summary_value, 1, tag);
  put_varint(summary_value, (2 << 3) | 5);  // simple_value, fixed32
  put_fixed(summary_value, &value, 4);
  std::string summary;
  put_bytes_field(summary, 1, summary_value);
  std::string e = event_header(wall_time);
  put_varint(e, 2 << 3);  // step, varint
  put_varint(e, static_cast<uint64_t>(step));
  put_bytes_field(e, 5, summary);
  return e;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  path_ = absl::StrCat(dir, "/events.out.tfevents.", static_cast<int64_t>(now_seconds()), ".", host, ".", ::getpid(),
                       ".0");
  core::create_file_if_missing(path_);  // owner-only, as every run output
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) throw core::SystemError("open " + path_, errno);
  std::string e = event_header(now_seconds());
  put_bytes_field(e, 3, "brain.Event:2");
  write_record(e);
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  write_record(scalar_event(tag, static_cast<float>(value), step, now_seconds()));
}

void TensorBoardWriter::write_record(std::string_view data) {
  const std::string record = tfrecord(data);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size()) {
    throw core::SystemError("write " + path_, errno);
  }
}

void TensorBoardWriter::flush() {
  if (std::fflush(file_) != 0) throw core::SystemError("flush " + path_, errno);
}

}  // namespace freehold::trainer
