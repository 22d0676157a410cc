// base::WriteFileAtomic: the file is written whole or not at all, and no
// temporary is left behind, whichever step fails. Runs without root: the
// failures are a missing directory and a rename onto a directory, which
// fail for root too.
#include "base/fsutil.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "base/status.h"
#include "gtest/gtest.h"
#include "tests/support/scratch_dir.h"

namespace {

namespace fs = std::filesystem;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::set<std::string> Names(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

TEST(WriteFileAtomic, WritesWholeAndReplaces) {
  testsupport::ScratchDir dir("write-atomic");
  const std::string path = dir.Sub("f");
  std::string big(300000, 'x');  // more than one pipe-sized write
  for (size_t i = 0; i < big.size(); i += 4097) big[i] = static_cast<char>('a' + i % 26);
  ASSERT_TRUE(base::WriteFileAtomic(path, big, /*durable=*/true).ok());
  EXPECT_EQ(ReadAll(path), big);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << "the default mode";
  ASSERT_TRUE(base::WriteFileAtomic(path, "short\n", /*durable=*/false, 0644).ok());
  EXPECT_EQ(ReadAll(path), "short\n");
  ASSERT_TRUE(base::WriteFileAtomic(path, "", /*durable=*/true).ok());
  EXPECT_EQ(ReadAll(path), "");
  EXPECT_EQ(Names(dir.path()), std::set<std::string>{"f"}) << "no temporary left";
}

// A symlink at the path is replaced by the file, its target untouched.
TEST(WriteFileAtomic, ReplacesASymlinkWithoutFollowingIt) {
  testsupport::ScratchDir dir("write-atomic");
  const std::string target = dir.Sub("target");
  ASSERT_TRUE(base::WriteFileAtomic(target, "kept", /*durable=*/false).ok());
  ASSERT_EQ(::symlink(target.c_str(), dir.Sub("link").c_str()), 0);
  ASSERT_TRUE(base::WriteFileAtomic(dir.Sub("link"), "new", /*durable=*/true).ok());
  EXPECT_FALSE(fs::is_symlink(dir.Sub("link")));
  EXPECT_EQ(ReadAll(dir.Sub("link")), "new");
  EXPECT_EQ(ReadAll(target), "kept");
}

TEST(WriteFileAtomic, FailureLeavesNoTemporaryAndNamesThePath) {
  testsupport::ScratchDir dir("write-atomic");
  // The directory is missing: nothing can be made.
  absl::Status missing = base::WriteFileAtomic(dir.Sub("no/such/f"), "data", /*durable=*/true);
  EXPECT_TRUE(base::HasErrno(missing, ENOENT)) << missing;
  EXPECT_NE(missing.message().find(dir.Sub("no/such/")), absl::string_view::npos) << missing;
  // The rename fails (a non-empty directory holds the name): the temporary
  // was written and must go; the directory is as it was.
  ASSERT_TRUE(fs::create_directory(dir.Sub("busy")));
  ASSERT_TRUE(base::WriteFileAtomic(dir.Sub("busy/inside"), "x", /*durable=*/false).ok());
  absl::Status onto_dir = base::WriteFileAtomic(dir.Sub("busy"), "data", /*durable=*/true);
  EXPECT_FALSE(onto_dir.ok());
  EXPECT_TRUE(base::GetErrno(onto_dir).has_value()) << onto_dir;
  EXPECT_NE(onto_dir.message().find("renaming"), absl::string_view::npos) << onto_dir;
  EXPECT_NE(onto_dir.message().find(dir.Sub("busy")), absl::string_view::npos) << onto_dir;
  EXPECT_EQ(Names(dir.path()), std::set<std::string>{"busy"}) << "no temporary left";
  EXPECT_EQ(Names(dir.Sub("busy")), std::set<std::string>{"inside"});
  // A relative path works from the current directory.
  const fs::path cwd = fs::current_path();
  fs::current_path(dir.path());
  absl::Status relative = base::WriteFileAtomic("rel", "r", /*durable=*/true);
  fs::current_path(cwd);
  ASSERT_TRUE(relative.ok()) << relative;
  EXPECT_EQ(ReadAll(dir.Sub("rel")), "r");
  EXPECT_EQ(Names(dir.path()), (std::set<std::string>{"busy", "rel"}));
}

}  // namespace
