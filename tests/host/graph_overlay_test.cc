// Host tests of the overlay driver on the host kernel's overlayfs, run with
// both mount paths: the new mount API (fsconfig lowerdir+) and mount(2) with
// short l/ links from a thread with its own working directory.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "graph/driver.h"
#include "graph/fsutil.h"
#include "gtest/gtest.h"
#include "tests/support/graph_tar.h"
#include "tests/support/scratch_dir.h"

namespace graph {
namespace {

using testsupport::BuildTar;
using testsupport::ReadFileOrEmpty;
using testsupport::ScratchDir;
using testsupport::TarEntry;
using testsupport::TarEntryNames;

bool Mounted(const std::string& path) {
  auto m = IsMountPoint(path);
  return m.ok() && *m;
}

class OverlayTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    auto d = OpenDriver("overlay", base_.path(), {{"overlay.mount_api", GetParam()}});
    if (!d.ok() && GetUnsupported(d.status()).has_value()) GTEST_SKIP() << d.status();
    ASSERT_TRUE(d.ok()) << d.status();
    driver_ = std::move(*d);
  }
  void TearDown() override {
    if (driver_) {
      EXPECT_TRUE(driver_->Cleanup().ok());
    }
  }

  void Apply(const std::string& id, const std::string& parent, const std::string& tar) {
    StringSource src(tar);
    auto r = driver_->ApplyDiff(id, parent, src);
    ASSERT_TRUE(r.ok()) << r.status();
  }

  std::string StatusValue(const std::string& key) {
    for (auto& [k, v] : driver_->Status()) {
      if (k == key) return v;
    }
    return "";
  }

  ScratchDir base_{"overlay"};
  std::unique_ptr<Driver> driver_;
};

TEST_P(OverlayTest, ReportsStatus) {
  EXPECT_EQ(StatusValue("Native Overlay Diff"), "true");
  EXPECT_EQ(StatusValue("Mount API"),
            GetParam() == "new" ? "fsconfig lowerdir+" : "mount(2) with short l/ links");
  EXPECT_EQ(StatusValue("Backing Filesystem").empty(), false);
}

TEST_P(OverlayTest, WhiteoutsAndOpaqueDirsInImageLayers) {
  ASSERT_TRUE(driver_->Create("base", "", {}).ok());
  Apply("base", "", BuildTar({{.path = "etc/passwd", .data = "root"},
                              {.path = "etc/shadow", .data = "secret"},
                              {.path = "opt/a/x", .data = "x"},
                              {.path = "opt/a/y", .data = "y"}}));
  ASSERT_TRUE(driver_->Create("l1", "base", {}).ok());
  Apply("l1", "base", BuildTar({{.path = "etc/.wh.shadow", .data = ""},
                                {.path = "opt/a/.wh..wh..opq", .data = ""},
                                {.path = "opt/a/z", .data = "z"}}));
  // Native form in the diff dir.
  auto meta = driver_->Metadata("l1");
  ASSERT_TRUE(meta.ok());
  std::string upper = (*meta)["UpperDir"];
  struct stat st;
  ASSERT_EQ(::lstat((upper + "/etc/shadow").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  char v[4];
  EXPECT_EQ(::getxattr((upper + "/opt/a").c_str(), "trusted.overlay.opaque", v, sizeof v), 1);
  // The merged, read-only view.
  auto dir = driver_->Get("l1", "");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_TRUE(Mounted(*dir));
  EXPECT_EQ(ReadFileOrEmpty(*dir + "/etc/passwd"), "root");
  bool ok = true;
  ReadFileOrEmpty(*dir + "/etc/shadow", &ok);
  EXPECT_FALSE(ok);
  ReadFileOrEmpty(*dir + "/opt/a/x", &ok);
  EXPECT_FALSE(ok);
  EXPECT_EQ(ReadFileOrEmpty(*dir + "/opt/a/z"), "z");
  EXPECT_NE(::mkdir((*dir + "/new").c_str(), 0755), 0) << "image layers mount read-only";
  EXPECT_EQ(errno, EROFS);
  ASSERT_TRUE(driver_->Put("l1").ok());
  EXPECT_FALSE(Mounted(*dir));

  // Native Changes / Diff convert back to OCI whiteouts.
  auto changes = driver_->Changes("l1", "base");
  ASSERT_TRUE(changes.ok()) << changes.status();
  std::vector<Change> want = {{"/etc", ChangeKind::kModify},      {"/etc/shadow", ChangeKind::kDelete},
                              {"/opt", ChangeKind::kModify},      {"/opt/a", ChangeKind::kModify},
                              {"/opt/a/x", ChangeKind::kDelete},  {"/opt/a/y", ChangeKind::kDelete},
                              {"/opt/a/z", ChangeKind::kAdd}};
  EXPECT_EQ(*changes, want);
  std::string tar;
  StringSink sink(&tar);
  auto d = driver_->Diff("l1", "base", sink);
  ASSERT_TRUE(d.ok()) << d.status();
  std::vector<std::string> names;
  for (auto& [n, h] : TarEntryNames(tar)) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"etc/", "etc/.wh.shadow", "opt/", "opt/a/", "opt/a/.wh..wh..opq",
                                             "opt/a/z"}));
}

TEST_P(OverlayTest, ContainerLayerDiffRoundTrips) {
  ASSERT_TRUE(driver_->Create("base", "", {}).ok());
  Apply("base", "", BuildTar({{.path = "a", .data = "1"},
                              {.path = "b", .data = "2"},
                              {.path = "c", .data = "3"},
                              {.path = "d/x", .data = "4"},
                              {.path = "d/y", .data = "5"}}));
  CreateOptions rw;
  rw.read_write = true;
  ASSERT_TRUE(driver_->Create("ctr", "base", rw).ok());
  auto dir = driver_->Get("ctr", "");
  ASSERT_TRUE(dir.ok()) << dir.status();
  // Several deletions: the kernel may hard-link whiteouts to one inode.
  ASSERT_EQ(::unlink((*dir + "/a").c_str()), 0);
  ASSERT_EQ(::unlink((*dir + "/b").c_str()), 0);
  ASSERT_EQ(::unlink((*dir + "/c").c_str()), 0);
  ASSERT_EQ(::unlink((*dir + "/d/x").c_str()), 0);
  ASSERT_EQ(::unlink((*dir + "/d/y").c_str()), 0);
  ASSERT_EQ(::rmdir((*dir + "/d").c_str()), 0);
  ASSERT_EQ(::mkdir((*dir + "/d").c_str(), 0750), 0);  // recreated: opaque
  testsupport::WriteFileOrDie(*dir + "/d/new", "n");
  testsupport::WriteFileOrDie(*dir + "/e", "e");
  std::string view = testsupport::TreeFingerprint(*dir);
  ASSERT_TRUE(driver_->Put("ctr").ok());

  std::string tar;
  StringSink sink(&tar);
  ASSERT_TRUE(driver_->Diff("ctr", "base", sink).ok());
  for (auto& [n, h] : TarEntryNames(tar)) {
    EXPECT_EQ(h, "") << n << " must not be a hard link";
  }
  std::vector<std::string> names;
  for (auto& [n, h] : TarEntryNames(tar)) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{".wh.a", ".wh.b", ".wh.c", "d/", "d/.wh..wh..opq", "d/new", "e"}));
  auto size = driver_->DiffSize("ctr", "base");
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 2);

  // Applying that diff as an image layer gives the same view.
  ASSERT_TRUE(driver_->Create("img", "base", {}).ok());
  Apply("img", "base", tar);
  auto img = driver_->Get("img", "");
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_EQ(testsupport::TreeFingerprint(*img), view);
  ASSERT_TRUE(driver_->Put("img").ok());
}

TEST_P(OverlayTest, GetPutRefcountAndRemove) {
  ASSERT_TRUE(driver_->Create("base", "", {}).ok());
  CreateOptions rw;
  rw.read_write = true;
  ASSERT_TRUE(driver_->Create("ctr", "base", rw).ok());
  auto d1 = driver_->Get("ctr", "");
  auto d2 = driver_->Get("ctr", "");
  ASSERT_TRUE(d1.ok() && d2.ok());
  EXPECT_EQ(*d1, *d2);
  ASSERT_TRUE(driver_->Put("ctr").ok());
  EXPECT_TRUE(Mounted(*d1)) << "one reference left";
  ASSERT_TRUE(driver_->Put("ctr").ok());
  EXPECT_FALSE(Mounted(*d1));
  EXPECT_EQ(driver_->Put("ctr").code(), absl::StatusCode::kFailedPrecondition);
  // Remove of a mounted layer unmounts it and drops its short link.
  ASSERT_TRUE(driver_->Get("ctr", "").ok());
  std::string link = ReadFileOrEmpty(base_.path() + "/overlay/ctr/link");
  ASSERT_EQ(link.size(), 4u);
  ASSERT_TRUE(driver_->Remove("ctr").ok());
  EXPECT_FALSE(driver_->Exists("ctr"));
  struct stat st;
  EXPECT_NE(::lstat((base_.path() + "/overlay/l/" + link).c_str(), &st), 0);
  EXPECT_EQ(*driver_->List(), std::vector<std::string>{"base"});
}

TEST_P(OverlayTest, ReopenKeepsTheProbeAndRebuildsLinks) {
  ASSERT_TRUE(driver_->Create("base", "", {}).ok());
  Apply("base", "", BuildTar({{.path = "f", .data = "base"}}));
  ASSERT_TRUE(driver_->Create("top", "base", {}).ok());
  std::string root = base_.path() + "/overlay";
  std::string link = ReadFileOrEmpty(root + "/base/link");
  ASSERT_EQ(link.size(), 4u);
  ASSERT_EQ(::unlink((root + "/l/" + link).c_str()), 0);
  testsupport::WriteFileOrDie(root + "/.probe", "garbage");  // ignored and rewritten
  for (int open = 0; open < 2; ++open) {  // probed, then from <root>/.probe
    driver_.reset();
    auto d = OpenDriver("overlay", base_.path(), {{"overlay.mount_api", GetParam()}});
    ASSERT_TRUE(d.ok()) << d.status();
    driver_ = std::move(*d);
    EXPECT_EQ(StatusValue("Native Overlay Diff"), "true");
    // The probe's answer is kept beside the layers for the next opens.
    EXPECT_EQ(ReadFileOrEmpty(root + "/.probe").rfind("boot=", 0), 0u);
  }
  // A driver on its own rebuilds its derived files at open (in a store,
  // check --repair does).
  struct stat st;
  EXPECT_EQ(::lstat((root + "/l/" + link).c_str(), &st), 0);
  auto dir = driver_->Get("top", "");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(ReadFileOrEmpty(*dir + "/f"), "base");
  ASSERT_TRUE(driver_->Put("top").ok());
  EXPECT_EQ(*driver_->List(), (std::vector<std::string>{"base", "top"})) << ".probe is no layer";
}

TEST_P(OverlayTest, MountsDescribeTheView) {
  ASSERT_TRUE(driver_->Create("base", "", {}).ok());
  Apply("base", "", BuildTar({{.path = "f", .data = "base"}}));
  CreateOptions rw;
  rw.read_write = true;
  ASSERT_TRUE(driver_->Create("ctr", "base", rw).ok());
  auto mounts = driver_->Mounts("ctr");
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  ASSERT_EQ(mounts->size(), 1u);
  const MountSpec& m = (*mounts)[0];
  EXPECT_EQ(m.type, "overlay");
  // Mount it ourselves, as a containerd-style caller would.
  ScratchDir target("overlay-target");
  std::string data = absl::StrJoin(m.options, ",");
  ASSERT_EQ(::mount(m.source.c_str(), target.path().c_str(), m.type.c_str(), 0, data.c_str()), 0) << data;
  EXPECT_EQ(ReadFileOrEmpty(target.path() + "/f"), "base");
  ASSERT_EQ(::umount(target.path().c_str()), 0);
  auto meta = driver_->Metadata("ctr");
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ((*meta)["LowerDir"], base_.path() + "/overlay/base/diff");
  EXPECT_EQ((*meta)["WorkDir"], base_.path() + "/overlay/ctr/work");
}

TEST_P(OverlayTest, RefusesToNestInsideOverlayAndAutoSelectionSkipsIt) {
  ASSERT_TRUE(driver_->Create("base", "", {}).ok());
  CreateOptions rw;
  rw.read_write = true;
  ASSERT_TRUE(driver_->Create("ctr", "base", rw).ok());
  auto dir = driver_->Get("ctr", "");
  ASSERT_TRUE(dir.ok()) << dir.status();
  std::string nested = *dir + "/var/lib/graph";
  auto inner = OpenDriver("overlay", nested, {{"overlay.mount_api", GetParam()}});
  ASSERT_FALSE(inner.ok());
  EXPECT_EQ(GetUnsupported(inner.status()), Unsupported::kBackingFilesystem) << inner.status();
  auto reports = ProbeDrivers(nested);
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports[0].name, "overlay");
  EXPECT_FALSE(reports[0].status.ok());
  auto any = OpenDriver("", nested);
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_NE((*any)->Name(), "overlay");
  any->reset();
  ASSERT_TRUE(driver_->Put("ctr").ok());
}

TEST_P(OverlayTest, FiveHundredLayerStackMountsAndReads) {
  const int kLayers = 500;
  std::string parent;
  for (int i = 0; i < kLayers; ++i) {
    std::string id = absl::StrCat("layer", i);
    ASSERT_TRUE(driver_->Create(id, parent, {}).ok()) << id;
    std::vector<TarEntry> entries = {{.path = absl::StrCat("files/f", i), .data = absl::StrCat("content ", i)},
                                     {.path = "top", .data = absl::StrCat("layer ", i)}};
    if (i > 0) entries.push_back({.path = absl::StrCat("files/.wh.gone", i - 1), .data = ""});
    entries.push_back({.path = absl::StrCat("files/gone", i), .data = "soon deleted"});
    Apply(id, parent, BuildTar(entries));
    parent = id;
  }
  // The top image layer needs all 500 as lowers: the kernel's maximum. Named
  // by absolute path they take far more than mount(2)'s one page of options.
  EXPECT_GT(kLayers * (base_.path().size() + sizeof("/l/XXXX")), 4096u);
  char cwd_before[4096];
  ASSERT_NE(getcwd(cwd_before, sizeof cwd_before), nullptr);
  auto t0 = std::chrono::steady_clock::now();
  auto dir = driver_->Get(parent, "");
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(dir.ok()) << dir.status();
  // No mount path touches the process's working directory (legacy chdir()s
  // only in its own thread, after unshare(CLONE_FS)).
  char cwd_after[4096];
  ASSERT_NE(getcwd(cwd_after, sizeof cwd_after), nullptr);
  EXPECT_STREQ(cwd_before, cwd_after);
  for (int i = 0; i < kLayers; ++i) {
    ASSERT_EQ(ReadFileOrEmpty(absl::StrCat(*dir, "/files/f", i)), absl::StrCat("content ", i));
  }
  EXPECT_EQ(ReadFileOrEmpty(*dir + "/top"), absl::StrCat("layer ", kLayers - 1));
  bool ok = true;
  ReadFileOrEmpty(absl::StrCat(*dir, "/files/gone", kLayers - 2), &ok);
  EXPECT_FALSE(ok);
  EXPECT_EQ(ReadFileOrEmpty(absl::StrCat(*dir, "/files/gone", kLayers - 1)), "soon deleted");
  ASSERT_TRUE(driver_->Put(parent).ok());
  std::printf("[ info     ] %s: mounting %d lowers took %.1f ms\n", GetParam().c_str(), kLayers,
              std::chrono::duration<double, std::milli>(t1 - t0).count());

  // One more image layer would need 501 lowers; a container layer needs 500.
  EXPECT_EQ(driver_->Create("too-deep", parent, {}).code(), absl::StatusCode::kInvalidArgument);
  CreateOptions rw;
  rw.read_write = true;
  ASSERT_TRUE(driver_->Create("ctr", parent, rw).ok());
  auto cdir = driver_->Get("ctr", "");
  ASSERT_TRUE(cdir.ok()) << cdir.status();
  EXPECT_EQ(ReadFileOrEmpty(*cdir + "/files/f0"), "content 0");
  testsupport::WriteFileOrDie(*cdir + "/files/f0", "changed");
  EXPECT_EQ(ReadFileOrEmpty(*cdir + "/files/f0"), "changed");
  ASSERT_TRUE(driver_->Put("ctr").ok());
  auto changes = driver_->Changes("ctr", parent);
  ASSERT_TRUE(changes.ok());
  EXPECT_EQ(*changes, (std::vector<Change>{{"/files", ChangeKind::kModify}, {"/files/f0", ChangeKind::kModify}}));
}

INSTANTIATE_TEST_SUITE_P(MountApi, OverlayTest, ::testing::Values("new", "legacy"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace graph
