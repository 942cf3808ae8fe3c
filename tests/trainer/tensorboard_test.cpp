// The event file: CRC-32C against its check value, and a written file read back record by record (framing, both
// CRCs, the file_version record, a scalar's tag, step and value decoded from the wire format).
#include "trainer/tensorboard.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "core/file.h"
#include "tests/model/tiny_checkpoint.h"

namespace freehold::trainer {
namespace {

TEST(TensorBoardTest, Crc32cCheckValue) {
  EXPECT_EQ(crc32c("123456789", 9), 0xe3069283u);  // the CRC-32C catalogue's check value
  EXPECT_EQ(crc32c("", 0), 0u);
}

struct Reader {
  std::string bytes;
  size_t pos = 0;
  std::string next() {
    uint64_t length;
    std::memcpy(&length, bytes.data() + pos, 8);
    uint32_t length_crc, data_crc;
    std::memcpy(&length_crc, bytes.data() + pos + 8, 4);
    EXPECT_EQ(length_crc, masked_crc32c(bytes.data() + pos, 8));
    std::string data = bytes.substr(pos + 12, length);
    std::memcpy(&data_crc, bytes.data() + pos + 12 + length, 4);
    EXPECT_EQ(data_crc, masked_crc32c(data.data(), data.size()));
    pos += 16 + length;
    return data;
  }
};

TEST(TensorBoardTest, RecordsReadBack) {
  const std::string dir = model::testing::make_temp_dir("tensorboard");
  std::string path;
  {
    TensorBoardWriter w(dir);
    path = w.path();
    w.add_scalar("train/loss", 2.5, 7);
    w.flush();
  }
  EXPECT_NE(std::filesystem::path(path).filename().string().find("events.out.tfevents."), std::string::npos);
  Reader r{core::read_file(path)};
  std::string first = r.next();
  EXPECT_NE(first.find("brain.Event:2"), std::string::npos);
  std::string scalar = r.next();
  EXPECT_EQ(r.pos, r.bytes.size());
  // wall_time (9 bytes), step: tag 0x10 then varint 7, summary: tag 0x2a ...
  ASSERT_EQ(static_cast<uint8_t>(scalar[0]), 0x09);
  ASSERT_EQ(static_cast<uint8_t>(scalar[9]), 0x10);
  ASSERT_EQ(static_cast<uint8_t>(scalar[10]), 7);
  ASSERT_EQ(static_cast<uint8_t>(scalar[11]), 0x2a);
  const size_t tag_at = scalar.find("train/loss");
  ASSERT_NE(tag_at, std::string::npos);
  ASSERT_EQ(static_cast<uint8_t>(scalar[tag_at + 10]), 0x15);
  float value;
  std::memcpy(&value, scalar.data() + tag_at + 11, 4);
  EXPECT_EQ(value, 2.5f);
  EXPECT_EQ(scalar, scalar_event("train/loss", 2.5f, 7, [&] {
              double t;
              std::memcpy(&t, scalar.data() + 1, 8);
              return t;
            }()));
}

}  // namespace
}  // namespace freehold::trainer
