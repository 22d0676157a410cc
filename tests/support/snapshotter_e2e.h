// Test support: dmthin-snapshotter under a real containerd (Debian's),
// started by the test with its own config, root, state and sockets under a
// scratch directory, the snapshotter loaded as proxy plugin "dmthin", and
// the end-to-end scenario run on one driver:
//  - an OCI image made here (busybox-static and a few files; a second layer
//    deletes a file and a directory, changes an xattr, adds a hard link and
//    a file) is imported with `ctr images import --snapshotter dmthin`;
//  - `ctr run --rm --snapshotter dmthin` sees the top layer and not what it
//    deleted;
//  - a container writes a file and deletes one; `ctr snapshots commit` of its
//    snapshot, and `ctr snapshots diff` of that against the image (containerd
//    mounts both) shows the new file and the whiteout; container and
//    committed snapshot removed;
//  - the image's view is the same, entry by entry (mode, owner, size,
//    content, link count, xattrs), as through containerd's built-in
//    overlayfs snapshotter;
//  - kill -9 of the snapshotter and a restart keep every snapshot;
//  - `ctr images rm --sync` and containerd's GC leave the store empty.
// Host tier: overlay, vfs, btrfs (tests/host/snapshotter_containerd_test);
// vm tier: devicemapper (tests/vm/snapshotter_devmapper_test).
#ifndef DMTHIN_TESTS_SUPPORT_SNAPSHOTTER_E2E_H_
#define DMTHIN_TESTS_SUPPORT_SNAPSHOTTER_E2E_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/containerd.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"

namespace testsupport {

class SnapshotterE2ETest : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  void TearDown() override;

  // Starts the snapshotter on `driver` with `storage_opts`, its store at
  // `store` ("" = <scratch>/store), and containerd. Skips the test when the
  // machine lacks what the scenario needs.
  void StartFor(const std::string& driver, const std::map<std::string, std::string>& storage_opts = {},
                const std::string& store = "");
  // The scenario (see above), with gtest expectations.
  void ImportRunCompareRestartRemove();

  // The store's directory ("" before StartFor).
  const std::string& store() const { return store_; }

 private:
  void StartSnapshotter();
  RunResult Ctr(const std::vector<std::string>& args) { return containerd_->Ctr(args); }
  std::string ImageView(const std::string& snapshotter);
  std::string Snapshots();

  static inline ScratchDir* image_dir_ = nullptr;
  static inline std::string archive_;
  static inline std::string missing_;
  std::string driver_, store_, sock_;
  std::map<std::string, std::string> storage_opts_;
  std::unique_ptr<ScratchDir> dir_;
  std::unique_ptr<Daemon> snapshotter_;
  std::unique_ptr<TestContainerd> containerd_;
  std::vector<std::string> mounted_;
};

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_SNAPSHOTTER_E2E_H_
