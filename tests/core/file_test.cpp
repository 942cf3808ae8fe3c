#include "core/file.h"

#include <dirent.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace freehold::core {
namespace {

std::string make_temp_dir() {
  std::string pattern = ::testing::TempDir() + "freehold_file_test_XXXXXX";
  char* dir = ::mkdtemp(pattern.data());
  EXPECT_NE(dir, nullptr);
  return pattern;
}

int count_entries(const std::string& dir) {
  int n = 0;
  DIR* d = ::opendir(dir.c_str());
  while (dirent* e = ::readdir(d)) {
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") ++n;
  }
  ::closedir(d);
  return n;
}

TEST(AtomicFileTest, CommitReplacesAndAbandonLeavesOldFile) {
  std::string dir = make_temp_dir();
  std::string path = dir + "/f.txt";
  write_file_atomic(path, "old");
  {
    AtomicFile file(path);
    file.write("new-but-abandoned");
    // no commit: destructor removes the temp file
  }
  EXPECT_EQ(read_file(path), "old");
  EXPECT_EQ(count_entries(dir), 1);
  write_file_atomic(path, "new");
  EXPECT_EQ(read_file(path), "new");
  EXPECT_EQ(count_entries(dir), 1);
}

TEST(ReadFileTest, RefusesFilesOverTheLimitAndNamesMissingOnes) {
  std::string dir = make_temp_dir();
  write_file_atomic(dir + "/big", std::string(100, 'x'));
  EXPECT_THROW(read_file(dir + "/big", 99), FormatError);
  EXPECT_EQ(read_file(dir + "/big", 100).size(), 100u);
  try {
    read_file(dir + "/missing");
    FAIL();
  } catch (const SystemError& e) {
    EXPECT_NE(std::string(e.what()).find("/missing"), std::string::npos);
  }
}

}  // namespace
}  // namespace freehold::core
