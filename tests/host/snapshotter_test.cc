// dmthin-snapshotter, the containerd proxy snapshotter: its socket and
// command line, and containerd's own snapshotter conformance suite
// (tests/containerd/snapshotter_suite_test.go, run through containerd's
// gRPC proxy client) on overlay, vfs and a loop-mounted btrfs, with opaque
// keys and a kill -9 restart through the same client.
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/daemon.h"
#include "tests/support/graph_conformance.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/snapshotter_suite.h"

namespace {

using testsupport::Daemon;
using testsupport::RunResult;
using testsupport::ScratchDir;

std::string SnapshotterBin() { return testsupport::BuiltTool("dmthin-snapshotter"); }

bool KernelHasOverlay() { return graph::testing::KernelHasFilesystem("overlay"); }

class SnapshotterServer : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (the layer store's drivers)";
    if (access(SnapshotterBin().c_str(), X_OK) != 0) GTEST_SKIP() << "no " << SnapshotterBin();
  }
  absl::StatusOr<std::unique_ptr<Daemon>> Serve(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {SnapshotterBin(), "--root", dir_.Sub("root"), "--address", sock(),
                                     "--driver", "vfs"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto d = Daemon::Start(argv, dir_.Sub("log"));
    if (!d.ok()) return d.status();
    if (absl::Status s = (*d)->WaitForListening(sock()); !s.ok()) return s;
    return d;
  }
  std::string sock() const { return dir_.Sub("snapshotter.sock"); }
  ScratchDir dir_{"snapshotter"};
};

TEST_F(SnapshotterServer, SocketIsRootOnlyAndRemovedOnSigterm) {
  auto d = Serve();
  ASSERT_TRUE(d.ok()) << d.status();
  struct stat st;
  ASSERT_EQ(lstat(sock().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, 0u);
  auto code = (*d)->Stop(SIGTERM);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << (*d)->Log();
  EXPECT_NE(lstat(sock().c_str(), &st), 0) << "socket left behind";
  EXPECT_NE((*d)->Log().find("stopped"), std::string::npos) << (*d)->Log();
}

TEST_F(SnapshotterServer, GroupSocketIs0660) {
  struct group* g = getgrnam("disk");
  if (g == nullptr) GTEST_SKIP() << "no group 'disk'";
  gid_t gid = g->gr_gid;
  auto d = Serve({"--group", "disk"});
  ASSERT_TRUE(d.ok()) << d.status();
  struct stat st;
  ASSERT_EQ(lstat(sock().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, gid);
}

TEST_F(SnapshotterServer, RefusesALiveSocketAndReplacesAStaleOne) {
  auto first = Serve();
  ASSERT_TRUE(first.ok()) << first.status();
  RunResult second = testsupport::Run({SnapshotterBin(), "--root", dir_.Sub("root2"), "--address", sock(),
                                       "--driver", "vfs"});
  EXPECT_EQ(second.exit_code, 1) << second.Describe();
  EXPECT_NE(second.err.find("already listening"), std::string::npos) << second.Describe();
  // kill -9 leaves the socket file; the next server takes the path over.
  auto code = (*first)->Stop(SIGKILL);
  ASSERT_TRUE(code.ok());
  struct stat st;
  ASSERT_EQ(lstat(sock().c_str(), &st), 0) << "SIGKILL cannot remove the socket";
  auto again = Serve();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE((*again)->running());
}

TEST_F(SnapshotterServer, RefusesAPathThatIsNotASocket) {
  ASSERT_EQ(testsupport::Run({"touch", sock()}).exit_code, 0);
  RunResult r = testsupport::Run({SnapshotterBin(), "--root", dir_.Sub("root"), "--address", sock()});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("not a socket"), std::string::npos) << r.Describe();
  struct stat st;
  ASSERT_EQ(lstat(sock().c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode)) << "the file was replaced";
}

TEST_F(SnapshotterServer, UsageErrorsExit2) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--address", sock()},
           {"--root", dir_.Sub("root")},
           {"--root", dir_.Sub("root"), "--address", sock(), "--storage-opt", "novalue"},
           {"--root", dir_.Sub("root"), "--address", sock(), "--bogus"}}) {
    std::vector<std::string> argv = {SnapshotterBin()};
    argv.insert(argv.end(), args.begin(), args.end());
    RunResult r = testsupport::Run(argv);
    EXPECT_EQ(r.exit_code, 2) << r.Describe();
  }
  RunResult v = testsupport::Run({SnapshotterBin(), "--version"});
  EXPECT_EQ(v.exit_code, 0) << v.Describe();
  EXPECT_NE(v.out.find("dmthin-snapshotter"), std::string::npos) << v.Describe();
}

// ------------------------------------------------ containerd's own suite ---

TEST(ContainerdSnapshotterSuite, Overlay) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  if (!KernelHasOverlay()) GTEST_SKIP() << "kernel has no overlay";
  ScratchDir tmp("suite-overlay");
  testsupport::RunSnapshotterSuite("overlay", tmp.path());
}

TEST(ContainerdSnapshotterSuite, Vfs) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  ScratchDir tmp("suite-vfs");
  testsupport::RunSnapshotterSuite("vfs", tmp.path());
}

TEST(ContainerdSnapshotterSuite, Btrfs) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  auto fs = graph::testing::ScratchBtrfs::Create(1024);
  if (!fs.ok()) GTEST_SKIP() << "no scratch btrfs: " << fs.status();
  testsupport::RunSnapshotterSuite("btrfs", (*fs)->path());
}

}  // namespace
