#include "tests/support/snapshotter_e2e.h"

#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>

#include "absl/time/clock.h"
#include "graph/store.h"
#include "tests/support/graph_tar.h"
#include "tests/support/oci_image.h"

namespace testsupport {

namespace {
constexpr char kImage[] = "docker.io/library/dmthin-e2e:latest";
std::string SnapshotterBin() { return BuiltTool("dmthin-snapshotter"); }
}  // namespace

void SnapshotterE2ETest::SetUpTestSuite() {
  if (geteuid() != 0) return;
  missing_ = TestContainerd::Missing();
  if (!missing_.empty()) return;
  if (!HaveProgram("umoci")) {
    missing_ = "no umoci";
    return;
  }
  if (access("/bin/busybox", X_OK) != 0) {
    missing_ = "no /bin/busybox (busybox-static)";
    return;
  }
  image_dir_ = new ScratchDir("e2e-image");
  archive_ = MakeTestImage(image_dir_->path(), kImage);
}

void SnapshotterE2ETest::TearDownTestSuite() {
  delete image_dir_;
  image_dir_ = nullptr;
}

void SnapshotterE2ETest::StartFor(const std::string& driver, const std::map<std::string, std::string>& storage_opts,
                                  const std::string& store) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (containerd, mounts)";
  if (!missing_.empty()) GTEST_SKIP() << missing_;
  if (access(SnapshotterBin().c_str(), X_OK) != 0) GTEST_SKIP() << "no " << SnapshotterBin();
  driver_ = driver;
  storage_opts_ = storage_opts;
  dir_ = std::make_unique<ScratchDir>("e2e-" + driver_);
  store_ = store.empty() ? dir_->Sub("store") : store;
  sock_ = dir_->Sub("snapshotter.sock");
  StartSnapshotter();
  if (::testing::Test::HasFatalFailure()) return;
  auto c = TestContainerd::Start(dir_->path(), "dmthin", sock_);
  ASSERT_TRUE(c.ok()) << c.status();
  containerd_ = std::move(*c);
}

void SnapshotterE2ETest::TearDown() {
  for (const std::string& m : mounted_) umount2(m.c_str(), MNT_DETACH);
  if (containerd_ != nullptr) {
    auto code = containerd_->Stop();
    EXPECT_TRUE(code.ok()) << code.status();
  }
  if (snapshotter_ != nullptr) {
    auto code = snapshotter_->Stop(SIGTERM);
    EXPECT_TRUE(code.ok() && *code == 0) << snapshotter_->Log();
  }
  containerd_.reset();
  snapshotter_.reset();
}

void SnapshotterE2ETest::StartSnapshotter() {
  std::vector<std::string> argv = {SnapshotterBin(), "--root", store_, "--address", sock_, "--driver", driver_};
  for (const auto& [k, v] : storage_opts_) {
    argv.push_back("--storage-opt");
    argv.push_back(k + "=" + v);
  }
  auto s = Daemon::Start(argv, dir_->Sub("snapshotter.log"));
  ASSERT_TRUE(s.ok()) << s.status();
  snapshotter_ = std::move(*s);
  // Until it listens or exits: opening a devicemapper store took over a
  // minute in the vm tier's starved guest.
  absl::Status up = snapshotter_->WaitForListening(sock_, absl::Minutes(5));
  ASSERT_TRUE(up.ok()) << up;
}

// `ctr images mount` here: the image's read-only view through
// `snapshotter`, fingerprinted with link counts and xattrs.
std::string SnapshotterE2ETest::ImageView(const std::string& snapshotter) {
  std::string target = dir_->Sub("view-" + snapshotter);
  std::filesystem::create_directories(target);
  RunResult m = Ctr({"images", "mount", "--snapshotter", snapshotter, kImage, target});
  EXPECT_TRUE(m.ok()) << m.Describe() << "\nsnapshotter log:\n" << snapshotter_->Log();
  if (!m.ok()) return "";
  mounted_.push_back(target);
  std::string print = TreeFingerprint(target, /*links_and_xattrs=*/true);
  RunResult u = Ctr({"images", "unmount", "--rm", target});
  EXPECT_TRUE(u.ok()) << u.Describe();
  if (u.ok()) mounted_.pop_back();
  return print;
}

std::string SnapshotterE2ETest::Snapshots() {
  RunResult r = Ctr({"snapshots", "--snapshotter", "dmthin", "ls"});
  EXPECT_TRUE(r.ok()) << r.Describe();
  return r.out;
}

void SnapshotterE2ETest::ImportRunCompareRestartRemove() {
  RunResult import = Ctr({"images", "import", "--snapshotter", "dmthin", archive_});
  ASSERT_TRUE(import.ok()) << import.Describe() << "\nsnapshotter log:\n" << snapshotter_->Log();
  std::string id = UniqueName("dmthin-e2e");

  // One container (each start is ~11 s in the vm tier's guest): the top
  // layer's file, not what it deleted, the hard link and a lower file.
  RunResult top = Ctr({"run", "--rm", "--snapshotter", "dmthin", kImage, id, "/bin/sh", "-c",
                       "cat /top.txt && test ! -e /delfile && test ! -e /deldir && cat /keep/link /etc/hello"});
  ASSERT_TRUE(top.ok()) << top.Describe() << "\ncontainerd log:\n" << containerd_->Log();
  EXPECT_EQ(top.out, "top layer\nlinked in the top layer\nhello\n");

  // A container that writes: its snapshot committed with ctr, the diff of
  // the committed snapshot against the image (containerd mounts both) holds
  // what the container wrote, and removing the container and the committed
  // snapshot leaves the image as it was.
  std::string writer = UniqueName("dmthin-writer");
  RunResult wrote = Ctr({"run", "--snapshotter", "dmthin", kImage, writer, "/bin/sh", "-c",
                         "echo written by the container > /written.txt && rm /top.txt"});
  ASSERT_TRUE(wrote.ok()) << wrote.Describe() << "\nsnapshotter log:\n" << snapshotter_->Log();
  std::string committed = writer + "-committed";
  RunResult commit = Ctr({"snapshots", "--snapshotter", "dmthin", "commit", committed, writer});
  ASSERT_TRUE(commit.ok()) << commit.Describe() << "\nsnapshotter log:\n" << snapshotter_->Log();
  RunResult crm = Ctr({"containers", "rm", writer});
  EXPECT_TRUE(crm.ok()) << crm.Describe();
  RunResult diff = Ctr({"snapshots", "--snapshotter", "dmthin", "diff", "--media-type",
                        "application/vnd.oci.image.layer.v1.tar", committed});
  ASSERT_TRUE(diff.ok()) << diff.Describe() << "\nsnapshotter log:\n" << snapshotter_->Log();
  EXPECT_NE(diff.out.find("written.txt"), std::string::npos) << "diff tar lacks written.txt";
  EXPECT_NE(diff.out.find("written by the container\n"), std::string::npos);
  EXPECT_NE(diff.out.find(".wh.top.txt"), std::string::npos) << "diff tar lacks the whiteout of top.txt";
  RunResult srm = Ctr({"snapshots", "--snapshotter", "dmthin", "rm", committed});
  EXPECT_TRUE(srm.ok()) << srm.Describe();
  // The diff's views go with its lease, in a garbage collection containerd
  // runs later: one racing the image removal's below left image layers in
  // the store (seen once on vfs). Run it now and wait for it (deleting a
  // lease with --sync collects everything unreferenced).
  std::string lease = UniqueName("dmthin-gc");
  RunResult lc = Ctr({"leases", "create", "--id", lease});
  EXPECT_TRUE(lc.ok()) << lc.Describe();
  RunResult ld = Ctr({"leases", "delete", "--sync", lease});
  EXPECT_TRUE(ld.ok()) << ld.Describe();

  // The same image through containerd's own overlayfs snapshotter.
  RunResult builtin = Ctr({"images", "import", "--snapshotter", "overlayfs", archive_});
  ASSERT_TRUE(builtin.ok()) << builtin.Describe();
  std::string ours = ImageView("dmthin");
  std::string theirs = ImageView("overlayfs");
  EXPECT_NE(ours.find("keep/x"), std::string::npos) << ours;
  EXPECT_NE(ours.find("xattr user.color=blue"), std::string::npos) << ours;
  EXPECT_NE(ours.find("keep/link 33188 0:0 24 "), std::string::npos) << ours;
  EXPECT_EQ(FirstDifference(ours, theirs), "") << "dmthin:\n" << ours << "overlayfs:\n" << theirs;

  // kill -9 and restart: containerd sees the same snapshots and keeps going.
  std::string before = Snapshots();
  EXPECT_NE(before.find("Committed"), std::string::npos) << before;
  auto killed = snapshotter_->Stop(SIGKILL);
  ASSERT_TRUE(killed.ok());
  StartSnapshotter();
  if (::testing::Test::HasFatalFailure()) return;
  // containerd's connection to the plugin was refused while it was down and
  // is in gRPC's reconnect backoff (1 s, then x1.6): ask until it is back.
  RunResult ls;
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  for (; absl::Now() < deadline; absl::SleepFor(absl::Milliseconds(200))) {
    ls = Ctr({"snapshots", "--snapshotter", "dmthin", "ls"});
    if (ls.ok()) break;
  }
  ASSERT_TRUE(ls.ok()) << ls.Describe();
  EXPECT_EQ(ls.out, before);
  RunResult again = Ctr({"run", "--rm", "--snapshotter", "dmthin", kImage, id, "/bin/cat", "/etc/hello"});
  EXPECT_TRUE(again.ok()) << again.Describe() << "\ncontainerd log:\n" << containerd_->Log();

  // Removing the image lets containerd's GC remove every snapshot.
  RunResult rm = Ctr({"images", "rm", "--sync", kImage});
  ASSERT_TRUE(rm.ok()) << rm.Describe();
  std::string after = Snapshots();
  EXPECT_EQ(after.find('\n'), after.size() - 1) << "snapshots left after images rm --sync:\n" << after;
  auto stopped = snapshotter_->Stop(SIGTERM);
  ASSERT_TRUE(stopped.ok() && *stopped == 0) << snapshotter_->Log();
  snapshotter_.reset();
  auto store = graph::OpenLayerStore(store_, driver_, storage_opts_);
  ASSERT_TRUE(store.ok()) << store.status();
  auto layers = (*store)->List();
  ASSERT_TRUE(layers.ok()) << layers.status();
  EXPECT_TRUE(layers->empty()) << layers->size() << " layers left, first " << (*layers)[0].name;
  auto check = (*store)->Check(/*repair=*/false);
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_TRUE(check->clean()) << ::testing::PrintToString(check->problems);
}

}  // namespace testsupport
