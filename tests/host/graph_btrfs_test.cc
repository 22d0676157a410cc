// btrfs subvolume primitives and the btrfs graph driver on a loop-mounted
// btrfs image (real kernel, no btrfs-progs in the code under test).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "base/status.h"
#include "base/btrfs.h"
#include "tests/support/graph_conformance.h"

namespace base::btrfs {
namespace {

using graph::testing::ScratchBtrfs;

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path);
  out << data;
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class BtrfsSubvolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mount)";
    auto fs = ScratchBtrfs::Create();
    if (!fs.ok()) GTEST_SKIP() << "no scratch btrfs: " << fs.status();
    fs_ = std::move(*fs);
  }
  std::string root() const { return fs_->path(); }
  std::unique_ptr<ScratchBtrfs> fs_;
};

TEST(BtrfsProbe, RejectsNonBtrfsWithTheFilesystemName) {
  absl::Status s = CheckOnBtrfs("/");
  if (s.ok()) GTEST_SKIP() << "/ is itself btrfs";
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("not btrfs"), absl::string_view::npos) << s;
}

TEST(BtrfsProbe, MissingPathCarriesErrno) {
  absl::Status s = CheckOnBtrfs("/nonexistent/graph-btrfs-probe");
  EXPECT_TRUE(base::HasErrno(s, ENOENT)) << s;
}

TEST_F(BtrfsSubvolTest, CreateSnapshotDelete) {
  ASSERT_TRUE(CheckOnBtrfs(root()).ok());
  ASSERT_TRUE(CreateSubvolume(root(), "a").ok());
  std::string a = root() + "/a";
  EXPECT_TRUE(*IsSubvolume(a));
  EXPECT_FALSE(*IsSubvolume(root() + "/..")) << "parent of mount is not btrfs";
  WriteFile(a + "/f", "one");

  ASSERT_TRUE(SnapshotSubvolume(a, root(), "b", false).ok());
  std::string b = root() + "/b";
  EXPECT_TRUE(*IsSubvolume(b));
  EXPECT_EQ(ReadFile(b + "/f"), "one");
  WriteFile(b + "/f", "two");
  EXPECT_EQ(ReadFile(a + "/f"), "one") << "snapshot writes must not reach the origin";
  EXPECT_FALSE(*IsReadOnly(b));

  ASSERT_TRUE(DeleteSubvolume(a).ok());
  struct stat st;
  EXPECT_NE(::lstat(a.c_str(), &st), 0);
  EXPECT_EQ(ReadFile(b + "/f"), "two") << "snapshot outlives its origin";
  ASSERT_TRUE(DeleteSubvolume(b).ok());
}

TEST_F(BtrfsSubvolTest, ReadOnlySnapshotRefusesWrites) {
  ASSERT_TRUE(CreateSubvolume(root(), "base").ok());
  WriteFile(root() + "/base/f", "x");
  ASSERT_TRUE(SnapshotSubvolume(root() + "/base", root(), "ro", true).ok());
  EXPECT_TRUE(*IsReadOnly(root() + "/ro"));
  int fd = ::open((root() + "/ro/g").c_str(), O_CREAT | O_WRONLY, 0644);
  EXPECT_LT(fd, 0);
  EXPECT_EQ(errno, EROFS);
  if (fd >= 0) ::close(fd);
  ASSERT_TRUE(SetReadOnly(root() + "/ro", false).ok());
  EXPECT_FALSE(*IsReadOnly(root() + "/ro"));
  ASSERT_TRUE(SetReadOnly(root() + "/ro", true).ok());
  // Deleting a read-only subvolume works.
  EXPECT_TRUE(DeleteSubvolume(root() + "/ro").ok());
}

TEST_F(BtrfsSubvolTest, DeleteRemovesNestedSubvolumes) {
  ASSERT_TRUE(CreateSubvolume(root(), "outer").ok());
  ASSERT_EQ(::mkdir((root() + "/outer/d").c_str(), 0755), 0);
  ASSERT_TRUE(CreateSubvolume(root() + "/outer/d", "inner").ok());
  ASSERT_TRUE(CreateSubvolume(root() + "/outer/d/inner", "innermost").ok());
  WriteFile(root() + "/outer/d/inner/innermost/f", "deep");
  ASSERT_TRUE(SetReadOnly(root() + "/outer/d/inner", true).ok());
  absl::Status s = DeleteSubvolume(root() + "/outer");
  ASSERT_TRUE(s.ok()) << s;
  struct stat st;
  EXPECT_NE(::lstat((root() + "/outer").c_str(), &st), 0);
}

TEST_F(BtrfsSubvolTest, ErrorsAreTyped) {
  EXPECT_EQ(CreateSubvolume(root(), "../x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateSubvolume(root(), "").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateSubvolume(root(), std::string(5000, 'a')).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(CreateSubvolume(root(), "dup").ok());
  EXPECT_TRUE(base::HasErrno(CreateSubvolume(root(), "dup"), EEXIST));
  EXPECT_TRUE(base::HasErrno(DeleteSubvolume(root() + "/missing"), ENOENT));
  ASSERT_EQ(::mkdir((root() + "/plain").c_str(), 0755), 0);
  EXPECT_EQ(DeleteSubvolume(root() + "/plain").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(base::HasErrno(SnapshotSubvolume(root() + "/missing", root(), "s", false), ENOENT));
}

}  // namespace
}  // namespace base::btrfs
