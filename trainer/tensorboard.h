// TensorBoard event files, written by hand (no protobuf or TensorFlow): a TFRecord stream of Event protos.
//
//   record = uint64 length (LE) · uint32 masked_crc32c(length bytes) · data · uint32 masked_crc32c(data)
//   masked_crc32c(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8,  crc = CRC-32C (Castagnoli)
//   Event   = { 1: double wall_time, 2: int64 step, 3: string file_version ("brain.Event:2", first record),
//               5: Summary summary }
//   Summary = { 1: repeated Value value },  Value = { 1: string tag, 2: float simple_value }
//
// `tensorboard --logdir runs/NAME` reads the events.out.tfevents.* files this writes (simple_value scalars are the
// format every TensorBoard release reads).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace freehold::trainer {

uint32_t crc32c(const void* data, size_t size);
uint32_t masked_crc32c(const void* data, size_t size);

// The bytes of one TFRecord holding `data`.
std::string tfrecord(std::string_view data);
// An Event proto with one scalar.
std::string scalar_event(const std::string& tag, float value, int64_t step, double wall_time);

class TensorBoardWriter {
 public:
  // Creates `dir`/events.out.tfevents.<seconds>.<host>.<pid>.0 and writes the file_version record.
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void add_scalar(const std::string& tag, double value, int64_t step);
  // fflush: TensorBoard sees every record written so far (called once per log step).
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(std::string_view data);
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace freehold::trainer
