// core/file.h creates what can hold private data readable by its owner only (issue #10): atomic files, directory
// trees and files opened later by other writers; explicit modes and existing files' modes are respected.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "core/error.h"
#include "core/file.h"

namespace freehold::core {
namespace {

// The umask of a user who shares everything: the owner-only default must not depend on a strict umask.
class FileModeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    old_mask_ = ::umask(0);
    std::string pattern = ::testing::TempDir() + "freehold_file_mode_test_XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    ::umask(old_mask_);
    std::string command = "rm -rf '" + dir_ + "'";
    EXPECT_EQ(std::system(command.c_str()), 0);
  }

  static mode_t mode_of(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  }

  mode_t old_mask_ = 0;
  std::string dir_;
};

TEST_F(FileModeTest, AtomicFilesAreOwnerOnlyByDefault) {
  write_file_atomic(dir_ + "/a.json", "{}");
  EXPECT_EQ(mode_of(dir_ + "/a.json"), 0600u);
  AtomicFile file(dir_ + "/b.safetensors");
  file.write("x");
  EXPECT_EQ(mode_of(file.temp_path()), 0600u) << "the temporary holds the same bytes and must be private too";
  file.commit();
  EXPECT_EQ(mode_of(dir_ + "/b.safetensors"), 0600u);
}

TEST_F(FileModeTest, AtomicFileTakesAnExplicitMode) {
  write_file_atomic(dir_ + "/shared.txt", "x", 0644);
  EXPECT_EQ(mode_of(dir_ + "/shared.txt"), 0644u);
}

TEST_F(FileModeTest, ReplacingAFileGivesTheNewMode) {
  write_file_atomic(dir_ + "/f", "old", 0644);
  write_file_atomic(dir_ + "/f", "new");
  EXPECT_EQ(mode_of(dir_ + "/f"), 0600u);
}

TEST_F(FileModeTest, CreateDirectoriesMakesEveryMissingLevelOwnerOnly) {
  const std::string deep = dir_ + "/runs/name/checkpoints";
  create_directories(deep);
  EXPECT_EQ(mode_of(dir_ + "/runs"), 0700u);
  EXPECT_EQ(mode_of(dir_ + "/runs/name"), 0700u);
  EXPECT_EQ(mode_of(deep), 0700u);
  // Existing directories keep their mode; a trailing slash and doubled slashes are fine.
  ASSERT_EQ(::chmod((dir_ + "/runs").c_str(), 0755), 0);
  create_directories(dir_ + "/runs//name/adapter/");
  EXPECT_EQ(mode_of(dir_ + "/runs"), 0755u);
  EXPECT_EQ(mode_of(dir_ + "/runs/name/adapter"), 0700u);
  create_directories(dir_ + "/shared", 0750);
  EXPECT_EQ(mode_of(dir_ + "/shared"), 0750u);
}

TEST_F(FileModeTest, CreateDirectoriesRelativePath) {
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof(cwd)), nullptr);
  ASSERT_EQ(::chdir(dir_.c_str()), 0);
  create_directories("rel/sub");
  EXPECT_EQ(mode_of(dir_ + "/rel"), 0700u);
  EXPECT_EQ(mode_of(dir_ + "/rel/sub"), 0700u);
  ASSERT_EQ(::chdir(cwd), 0);
}

TEST_F(FileModeTest, CreateDirectoriesNamesAFileInTheWay) {
  write_file_atomic(dir_ + "/file", "x");
  try {
    create_directories(dir_ + "/file/sub");
    FAIL() << "expected an error";
  } catch (const SystemError& e) {
    EXPECT_NE(std::string(e.what()).find(dir_ + "/file"), std::string::npos) << e.what();
  }
}

TEST_F(FileModeTest, CreateFileIfMissingThenOtherWritersKeepTheMode) {
  const std::string metrics = dir_ + "/metrics.jsonl";
  create_file_if_missing(metrics);
  { std::ofstream(metrics, std::ios::app) << "{}\n"; }
  EXPECT_EQ(mode_of(metrics), 0600u);
  const std::string rejects = dir_ + "/rejects.jsonl";
  create_file_if_missing(rejects);
  std::FILE* f = std::fopen(rejects.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  EXPECT_EQ(mode_of(rejects), 0600u);
}

TEST_F(FileModeTest, CreateFileIfMissingLeavesAnExistingFileAlone) {
  const std::string path = dir_ + "/kept";
  write_file_atomic(path, "contents", 0640);
  create_file_if_missing(path);
  EXPECT_EQ(mode_of(path), 0640u);
  EXPECT_EQ(read_file(path), "contents");
}

TEST_F(FileModeTest, CreateFileIfMissingNamesThePath) {
  try {
    create_file_if_missing(dir_ + "/no/such/dir/file");
    FAIL() << "expected an error";
  } catch (const SystemError& e) {
    EXPECT_NE(std::string(e.what()).find(dir_ + "/no/such/dir/file"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace freehold::core
