// dmthin-snapshotter under a real containerd (Debian's), started by the
// test: the end-to-end scenario of tests/support/snapshotter_e2e.h (ctr
// import, run, the view against the built-in overlayfs, kill -9 restart,
// images rm and GC) on overlay, vfs and a loop-mounted btrfs. Devicemapper:
// tests/vm/snapshotter_devmapper_test.
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "tests/support/graph_conformance.h"
#include "tests/support/snapshotter_e2e.h"

namespace {

class ContainerdE2E : public testsupport::SnapshotterE2ETest, public ::testing::WithParamInterface<std::string> {
 protected:
  void TearDown() override {
    SnapshotterE2ETest::TearDown();
    btrfs_.reset();
  }
  std::unique_ptr<graph::testing::ScratchBtrfs> btrfs_;
};

TEST_P(ContainerdE2E, ImportRunCompareRestartRemove) {
  const std::string driver = GetParam();
  if (driver == "overlay" && !graph::testing::KernelHasFilesystem("overlay")) {
    GTEST_SKIP() << "kernel has no overlay";
  }
  std::string store;
  if (driver == "btrfs") {
    auto b = graph::testing::ScratchBtrfs::Create(1024);
    if (!b.ok()) GTEST_SKIP() << "no scratch btrfs: " << b.status();
    btrfs_ = std::move(*b);
    store = btrfs_->path() + "/store";
  }
  StartFor(driver, {}, store);
  if (IsSkipped() || HasFatalFailure()) return;
  ImportRunCompareRestartRemove();
}

INSTANTIATE_TEST_SUITE_P(Drivers, ContainerdE2E, ::testing::Values("overlay", "vfs", "btrfs"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
