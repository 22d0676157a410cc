// Host tests of the vfs driver (full copies) and of the generic naive diff,
// on the real filesystem under /tmp. Needs root (owners, device nodes).
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "base/unique_fd.h"
#include "graph/archive.h"
#include "graph/driver.h"
#include "graph/drivers/naive_diff.h"
#include "graph/fsutil.h"
#include "gtest/gtest.h"
#include "tests/support/graph_conformance.h"
#include "tests/support/graph_tar.h"
#include "tests/support/scratch_dir.h"

namespace graph {
namespace {

using testsupport::BuildTar;
using testsupport::ReadFileOrEmpty;
using testsupport::ScratchDir;
using testsupport::TarEntry;

class VfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    auto d = OpenDriver("vfs", base_.path());
    ASSERT_TRUE(d.ok()) << d.status();
    driver_ = std::move(*d);
  }

  ApplyDiffResult Apply(const std::string& id, const std::string& parent, const std::string& tar) {
    StringSource src(tar);
    auto r = driver_->ApplyDiff(id, parent, src);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ApplyDiffResult{};
  }

  std::string Path(const std::string& id, const std::string& rel) {
    auto m = driver_->Metadata(id);
    return (*m)["Dir"] + "/" + rel;
  }

  ScratchDir base_{"vfs"};
  std::unique_ptr<Driver> driver_;
};

TEST_F(VfsTest, StatusAndMetadata) {
  EXPECT_EQ(driver_->Name(), "vfs");
  auto st = driver_->Status();
  ASSERT_FALSE(st.empty());
  EXPECT_EQ(st[0].first, "Backing Filesystem");
  ASSERT_TRUE(driver_->Create("base", "", {}).ok());
  auto m = driver_->Metadata("base");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)["Dir"], base_.path() + "/vfs/dir/base");
  auto mounts = driver_->Mounts("base");
  ASSERT_TRUE(mounts.ok());
  ASSERT_EQ(mounts->size(), 1u);
  EXPECT_EQ((*mounts)[0].type, "bind");
  EXPECT_EQ((*mounts)[0].options[1], "ro");
}

TEST_F(VfsTest, CreateValidatesIdsParentsAndOptions) {
  EXPECT_EQ(driver_->Create("../x", "", {}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(driver_->Create("a", "missing", {}).code(), absl::StatusCode::kNotFound);
  CreateOptions o;
  o.storage_options["size"] = "10G";
  EXPECT_EQ(driver_->Create("a", "", o).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(driver_->Create("a", "", {}).ok());
  EXPECT_EQ(driver_->Create("a", "", {}).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(driver_->Remove("nope").code(), absl::StatusCode::kNotFound);
  auto list = driver_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, std::vector<std::string>{"a"});
}

TEST_F(VfsTest, LayersCopyParentsAndWhiteoutsDelete) {
  ASSERT_TRUE(driver_->Create("base", "", {}).ok());
  TarEntry cap{.path = "bin/ping", .data = "ELF", .mode = 0755, .uid = 0, .gid = 0};
  cap.xattrs["security.capability"] = std::string("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  auto r = Apply("base", "", BuildTar({
      {.path = "etc/", .type = '5', .mode = 0755},
      {.path = "etc/passwd", .data = "root:x:0:0\n", .mode = 0644},
      {.path = "etc/shadow", .data = "secret", .mode = 0640, .uid = 0, .gid = 42},
      {.path = "home/user/", .type = '5', .mode = 0700, .uid = 1000, .gid = 1000},
      {.path = "home/user/file", .data = "u", .uid = 1000, .gid = 1000},
      {.path = "dev/null", .type = '3', .mode = 0666, .major = 1, .minor = 3},
      {.path = "opt/a/x", .data = "ax"},
      {.path = "opt/a/y", .data = "ay"},
      {.path = "link1", .data = "shared"},
      {.path = "link2", .type = '1', .link = "link1"},
      cap,
  }));
  EXPECT_EQ(r.size, 11 + 6 + 1 + 4 + 6 + 3);
  struct stat st;
  ASSERT_EQ(::lstat(Path("base", "home/user/file").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  ASSERT_EQ(::lstat(Path("base", "dev/null").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(1, 3));

  ASSERT_TRUE(driver_->Create("child", "base", {}).ok());
  // The copy keeps owners, devices, hardlinks, xattrs.
  ASSERT_EQ(::lstat(Path("child", "etc/shadow").c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, 42u);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  struct stat l1, l2;
  ASSERT_EQ(::lstat(Path("child", "link1").c_str(), &l1), 0);
  ASSERT_EQ(::lstat(Path("child", "link2").c_str(), &l2), 0);
  EXPECT_EQ(l1.st_ino, l2.st_ino);
  char buf[64];
  EXPECT_EQ(::getxattr(Path("child", "bin/ping").c_str(), "security.capability", buf, sizeof buf), 20);

  Apply("child", "base", BuildTar({
      {.path = "etc/.wh.shadow", .data = ""},
      {.path = "opt/a/.wh..wh..opq", .data = ""},
      {.path = "opt/a/z", .data = "az"},
      {.path = "etc/hostname", .data = "box"},
      {.path = "etc/passwd", .data = "root:x:0:0\nuser:x:1000:1000\n"},
  }));
  bool ok = true;
  ReadFileOrEmpty(Path("child", "etc/shadow"), &ok);
  EXPECT_FALSE(ok);
  ReadFileOrEmpty(Path("child", "opt/a/x"), &ok);
  EXPECT_FALSE(ok);
  EXPECT_EQ(ReadFileOrEmpty(Path("child", "opt/a/z")), "az");
  // The parent is untouched.
  EXPECT_EQ(ReadFileOrEmpty(Path("base", "etc/shadow")), "secret");
  EXPECT_EQ(ReadFileOrEmpty(Path("base", "opt/a/x")), "ax");

  auto changes = driver_->Changes("child", "base");
  ASSERT_TRUE(changes.ok()) << changes.status();
  std::vector<Change> want = {
      {"/etc", ChangeKind::kModify},         {"/etc/hostname", ChangeKind::kAdd},
      {"/etc/passwd", ChangeKind::kModify},  {"/etc/shadow", ChangeKind::kDelete},
      {"/opt", ChangeKind::kModify},         {"/opt/a", ChangeKind::kModify},
      {"/opt/a/x", ChangeKind::kDelete},     {"/opt/a/y", ChangeKind::kDelete},
      {"/opt/a/z", ChangeKind::kAdd},
  };
  EXPECT_EQ(*changes, want);
  auto size = driver_->DiffSize("child", "base");
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 3 + 28 + 2);

  // Diff, then apply the diff on a fresh copy of the parent: same tree.
  std::string diff;
  StringSink sink(&diff);
  auto d = driver_->Diff("child", "base", sink);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->tar_bytes, diff.size());
  EXPECT_NE(diff.find(".wh.shadow"), std::string::npos);
  ASSERT_TRUE(driver_->Create("replay", "base", {}).ok());
  Apply("replay", "base", diff);
  EXPECT_EQ(testsupport::TreeFingerprint(Path("replay", "")), testsupport::TreeFingerprint(Path("child", "")));

  // A full diff of the base reproduces it.
  std::string full;
  StringSink fsink(&full);
  ASSERT_TRUE(driver_->Diff("base", "", fsink).ok());
  ASSERT_TRUE(driver_->Create("base2", "", {}).ok());
  Apply("base2", "", full);
  EXPECT_EQ(testsupport::TreeFingerprint(Path("base2", "")), testsupport::TreeFingerprint(Path("base", "")));
  ASSERT_EQ(::lstat(Path("base2", "link2").c_str(), &l2), 0);
  ASSERT_EQ(::lstat(Path("base2", "link1").c_str(), &l1), 0);
  EXPECT_EQ(l1.st_ino, l2.st_ino);
}

TEST_F(VfsTest, SparseFilesStaySparseInCopies) {
  ASSERT_TRUE(driver_->Create("base", "", {}).ok());
  TarEntry e{.path = "sparse", .data = "A"};
  e.sparse_size = 256 << 20;
  e.extents = {{128 << 20, 1}};
  Apply("base", "", BuildTar({e}));
  ASSERT_TRUE(driver_->Create("copy", "base", {}).ok());
  struct stat st;
  ASSERT_EQ(::stat(Path("copy", "sparse").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 256 << 20);
  EXPECT_LT(st.st_blocks * 512, 1 << 20);
}

TEST_F(VfsTest, GetPutAreCountedAcrossProcesses) {
  ASSERT_TRUE(driver_->Create("a", "", {}).ok());
  EXPECT_EQ(driver_->Put("a").code(), absl::StatusCode::kFailedPrecondition);
  auto dir = driver_->Get("a", "");
  ASSERT_TRUE(dir.ok());
  pid_t pid = fork();
  if (pid == 0) {
    auto d2 = OpenDriver("vfs", base_.path());
    if (!d2.ok()) _exit(1);
    _exit((*d2)->Get("a", "").ok() ? 0 : 2);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(driver_->Put("a").ok());
  EXPECT_TRUE(driver_->Put("a").ok()) << "the other process's reference";
  EXPECT_FALSE(driver_->Put("a").ok());
  EXPECT_TRUE(driver_->Remove("a").ok());
  EXPECT_FALSE(driver_->Exists("a"));
}

TEST_F(VfsTest, FailedApplyLeavesTheParentIntact) {
  ASSERT_TRUE(driver_->Create("base", "", {}).ok());
  Apply("base", "", BuildTar({{.path = "keep", .data = "k"}}));
  ASSERT_TRUE(driver_->Create("bad", "base", {}).ok());
  std::string tar = BuildTar({{.path = "x", .data = "1"}, {.path = "../escape", .data = "2"}});
  StringSource src(tar);
  auto r = driver_->ApplyDiff("bad", "base", src);
  EXPECT_FALSE(r.ok());
  // The store removes the failed layer; nothing else changed.
  EXPECT_TRUE(driver_->Remove("bad").ok());
  EXPECT_EQ(ReadFileOrEmpty(Path("base", "keep")), "k");
  bool ok = true;
  ReadFileOrEmpty(base_.path() + "/vfs/escape", &ok);
  EXPECT_FALSE(ok);
}

// True if the first extent of `path` is shared with another file.
bool FirstExtentShared(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  alignas(struct fiemap) char buf[sizeof(struct fiemap) + 4 * sizeof(struct fiemap_extent)] = {};
  auto* map = reinterpret_cast<struct fiemap*>(buf);
  map->fm_length = FIEMAP_MAX_OFFSET;
  map->fm_flags = FIEMAP_FLAG_SYNC;
  map->fm_extent_count = 4;
  if (::ioctl(fd.get(), FS_IOC_FIEMAP, map) != 0 || map->fm_mapped_extents == 0) return false;
  return (map->fm_extents[0].fe_flags & FIEMAP_EXTENT_SHARED) != 0;
}

TEST(VfsBtrfsTest, CopiesAreReflinksOnBtrfs) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  auto fs = graph::testing::ScratchBtrfs::Create(256);
  if (!fs.ok() && fs.status().code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << fs.status();
  ASSERT_TRUE(fs.ok()) << fs.status();
  auto d = OpenDriver("vfs", (*fs)->path());
  ASSERT_TRUE(d.ok()) << d.status();
  Driver& drv = **d;
  ASSERT_TRUE(drv.Create("base", "", {}).ok());
  std::string big(4 << 20, 'r');
  std::string tar = BuildTar({{.path = "big", .data = big}, {.path = "small", .data = "s"}});
  StringSource src(tar);
  ASSERT_TRUE(drv.ApplyDiff("base", "", src).ok());
  ASSERT_TRUE(drv.Create("child", "base", {}).ok());
  std::string child = (*drv.Metadata("child"))["Dir"];
  EXPECT_TRUE(ReadFileOrEmpty(child + "/big") == big);
  EXPECT_TRUE(FirstExtentShared(child + "/big")) << "the copy should share extents (FICLONE)";
  // And CopyTree says so.
  auto stats = CopyTree((*drv.Metadata("base"))["Dir"], (*fs)->path() + "/copy");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->reflinked, 2u);
  EXPECT_EQ(stats->files, 2u);
  // On ext4 (no reflink) CopyTree falls back to copy_file_range.
  ScratchDir plain("vfs-plain");
  auto plain_stats = CopyTree((*drv.Metadata("base"))["Dir"], plain.path() + "/copy");
  ASSERT_TRUE(plain_stats.ok()) << plain_stats.status();
  EXPECT_EQ(plain_stats->reflinked, 0u);
  EXPECT_EQ(plain_stats->bytes, big.size() + 1);
  EXPECT_TRUE(ReadFileOrEmpty(plain.path() + "/copy/big") == big);
  ASSERT_TRUE(drv.Remove("child").ok());
  ASSERT_TRUE(drv.Remove("base").ok());
}

TEST(RegistryTest, NamesAndAutoSelection) {
  ScratchDir base("registry");
  auto bad = OpenDriver("nope", base.path());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(bad.status().message().find("vfs"), absl::string_view::npos);
  auto any = OpenDriver("", base.path());
  ASSERT_TRUE(any.ok()) << any.status();
  auto reports = ProbeDrivers(base.path());
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports.back().name, "vfs");
  DriverInfo fake;
  fake.name = "fake-unsupported";
  fake.priority = 1;
  fake.probe = [](const DriverOptions&) {
    return UnsupportedError(Unsupported::kKernelLacksFilesystem, "no fakefs in /proc/filesystems");
  };
  fake.create = [](const DriverOptions&) -> absl::StatusOr<std::unique_ptr<Driver>> {
    return absl::InternalError("must not be called");
  };
  ASSERT_TRUE(RegisterDriver(fake).ok());
  EXPECT_EQ(RegisterDriver(fake).code(), absl::StatusCode::kAlreadyExists);
  auto named = OpenDriver("fake-unsupported", base.path());
  ASSERT_FALSE(named.ok());
  EXPECT_EQ(GetUnsupported(named.status()), Unsupported::kKernelLacksFilesystem);
  auto chosen = OpenDriver("", base.path());
  ASSERT_TRUE(chosen.ok()) << chosen.status();
  EXPECT_NE((*chosen)->Name(), "fake-unsupported");
}

}  // namespace
}  // namespace graph
