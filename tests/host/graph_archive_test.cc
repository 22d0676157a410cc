// Host tests of the archive path that need root: numeric owners, device
// nodes, trusted.* xattrs, overlay whiteouts both ways, and a real root
// filesystem tarball checked against GNU tar.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "graph/archive.h"
#include "graph/digest.h"
#include "gtest/gtest.h"
#include "tests/support/graph_tar.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/process.h"

namespace graph {
namespace {

using testsupport::BuildTar;
using testsupport::ReadFileOrEmpty;
using testsupport::ScratchDir;
using testsupport::TarEntry;
using testsupport::TarEntryNames;

class HostArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
  }
  absl::StatusOr<ApplyDiffResult> ApplyTo(const std::string& dir, const std::string& tar, WhiteoutFormat w) {
    base::UniqueFd root(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    StringSource src(tar);
    ApplyOptions o;
    o.whiteouts = w;
    return ApplyLayer(root.get(), src, o);
  }
  struct stat Lstat(const std::string& p) {
    struct stat st = {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return st;
  }
  ScratchDir dir_{"host-archive"};
};

TEST_F(HostArchiveTest, OwnersDevicesAndTrustedXattrs) {
  TarEntry f{.path = "srv/data", .data = "d", .mode = 02755, .uid = 1234, .gid = 5678};
  f.xattrs["trusted.note"] = "t";
  f.xattrs["trusted.overlay.opaque"] = "y";  // never taken from a tarball
  auto r = ApplyTo(dir_.path(), BuildTar({
      {.path = "dev/null", .type = '3', .mode = 0666, .major = 1, .minor = 3},
      {.path = "dev/loop0", .type = '4', .mode = 0660, .gid = 6, .major = 7, .minor = 0},
      {.path = "dev/", .type = '5', .mode = 0755},
      f,
      {.path = "srv/link", .type = '2', .link = "data", .uid = 1234, .gid = 5678},
  }), WhiteoutFormat::kDelete);
  ASSERT_TRUE(r.ok()) << r.status();
  struct stat st = Lstat(dir_.Sub("dev/null"));
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(1, 3));
  EXPECT_EQ(st.st_mode & 07777, 0666u);
  st = Lstat(dir_.Sub("dev/loop0"));
  EXPECT_TRUE(S_ISBLK(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(7, 0));
  EXPECT_EQ(st.st_gid, 6u);
  st = Lstat(dir_.Sub("srv/data"));
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  EXPECT_EQ(st.st_mode & 07777, 02755u) << "setgid survives chown";
  st = Lstat(dir_.Sub("srv/link"));
  EXPECT_EQ(st.st_uid, 1234u) << "symlinks are chowned themselves";
  char v[8];
  EXPECT_EQ(::getxattr(dir_.Sub("srv/data").c_str(), "trusted.note", v, sizeof v), 1);
  EXPECT_LT(::getxattr(dir_.Sub("srv/data").c_str(), "trusted.overlay.opaque", v, sizeof v), 0);
}

TEST_F(HostArchiveTest, OverlayWhiteoutsBothWays) {
  auto r = ApplyTo(dir_.path(), BuildTar({
      {.path = "etc/.wh.shadow", .data = "", .uid = 7, .gid = 7},
      {.path = "var/.wh..wh..opq", .data = ""},
      {.path = "var/new", .data = "n"},
      {.path = ".wh.opt", .data = ""},
      {.path = "opt/", .type = '5', .mode = 0755},  // replaces the whiteout: opaque
      {.path = "mine", .data = "m"},
      {.path = ".wh.mine", .data = ""},  // same-layer entry stays
  }), WhiteoutFormat::kOverlay);
  ASSERT_TRUE(r.ok()) << r.status();
  struct stat st = Lstat(dir_.Sub("etc/shadow"));
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  EXPECT_EQ(st.st_uid, 7u);
  char v[4];
  EXPECT_EQ(::getxattr(dir_.Sub("var").c_str(), "trusted.overlay.opaque", v, sizeof v), 1);
  EXPECT_EQ(::getxattr(dir_.Sub("opt").c_str(), "trusted.overlay.opaque", v, sizeof v), 1);
  EXPECT_EQ(ReadFileOrEmpty(dir_.Sub("mine")), "m");

  // Overlay may hard-link whiteouts to one shared inode: add two more that
  // way, plus a real hard-linked file pair.
  ASSERT_EQ(::link(dir_.Sub("etc/shadow").c_str(), dir_.Sub("etc/gshadow").c_str()), 0);
  ASSERT_EQ(::link(dir_.Sub("etc/shadow").c_str(), dir_.Sub("var/gone").c_str()), 0);
  testsupport::WriteFileOrDie(dir_.Sub("h1"), "same");
  ASSERT_EQ(::link(dir_.Sub("h1").c_str(), dir_.Sub("h2").c_str()), 0);
  base::UniqueFd root(::open(dir_.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  std::string tar;
  StringSink sink(&tar);
  auto d = WriteLayerTree(root.get(), WhiteoutFormat::kOverlay, sink);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->diff_id, Sha256Digest(tar));
  auto names = TarEntryNames(tar);
  std::vector<std::pair<std::string, std::string>> want = {
      {"etc/", ""},          {"etc/.wh.gshadow", ""}, {"etc/.wh.shadow", ""}, {"h1", ""},
      {"h2", "h1"},          {"mine", ""},            {"opt/", ""},           {"opt/.wh..wh..opq", ""},
      {"var/", ""},          {"var/.wh..wh..opq", ""}, {"var/.wh.gone", ""},  {"var/new", ""}};
  EXPECT_EQ(names, want);
}

// A debootstrap'ed root filesystem, tarred with GNU tar (tests/bench makes
// it: see docs/performance.md). Applied by us and by GNU tar, the trees
// must match; our own Diff of it must apply back to the same tree.
TEST_F(HostArchiveTest, RealRootfsMatchesGnuTarAndRoundTrips) {
  std::string tarball = testsupport::RepoRoot() + "/build/bench/rootfs.tar";
  if (const char* env = getenv("GRAPH_ROOTFS_TAR")) tarball = env;
  if (access(tarball.c_str(), R_OK) != 0) GTEST_SKIP() << "no " << tarball << " (see docs/performance.md)";
  ASSERT_EQ(::mkdir(dir_.Sub("ours").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(dir_.Sub("gnu").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(dir_.Sub("again").c_str(), 0755), 0);
  base::UniqueFd in(::open(tarball.c_str(), O_RDONLY | O_CLOEXEC));
  base::UniqueFd ours(::open(dir_.Sub("ours").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  FdSource src(in.get());
  auto r = ApplyLayer(ours.get(), src, {});
  ASSERT_TRUE(r.ok()) << r.status();
  auto t = testsupport::Run({"tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", tarball, "-C",
                             dir_.Sub("gnu")});
  ASSERT_TRUE(t.ok()) << t.Describe();
  std::string fp = testsupport::TreeFingerprint(dir_.Sub("ours"));
  EXPECT_GT(fp.size(), 100000u);
  EXPECT_EQ(testsupport::FirstDifference(fp, testsupport::TreeFingerprint(dir_.Sub("gnu"))), "");

  std::string tar;
  StringSink sink(&tar);
  auto d = WriteLayerTree(ours.get(), WhiteoutFormat::kDelete, sink);
  ASSERT_TRUE(d.ok()) << d.status();
  base::UniqueFd again(::open(dir_.Sub("again").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  StringSource src2(tar);
  auto r2 = ApplyLayer(again.get(), src2, {});
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->diff_id, d->diff_id);
  EXPECT_EQ(testsupport::FirstDifference(testsupport::TreeFingerprint(dir_.Sub("again")), fp), "");
}

}  // namespace
}  // namespace graph
