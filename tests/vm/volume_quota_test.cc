// libvolume's directory backend with ext4 and xfs project quota, on the VM's
// Debian kernel (the development machines' kernel has no QFMT_V2 and no XFS
// quota: there the size is refused, tests/host/volume_dir_test.cc). Each
// test makes its own loop filesystem with project quota enforced; a volume
// with a size gets a project of its own, a write past the size fails with
// EDQUOT (ext4) or ENOSPC (xfs) for a writer without CAP_SYS_RESOURCE, as
// in a container, and a later small write succeeds; usage is
// the project's; grow raises the limit; a snapshot gets its own project.
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/fill_file.h"
#include "tests/support/graph_conformance.h"
#include "thinpool/exec.h"
#include "volume/store.h"

namespace volume {
namespace {

using graph::testing::ScratchBtrfs;
using testsupport::FillFile;

constexpr uint64_t kMiB = 1 << 20;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// FillFile as a container process writes: without CAP_SYS_RESOURCE, which
// lets root past ext4's quota limits (the kernel's rule; Docker and podman
// do not give it to containers by default). Capabilities are per thread, so
// a thread of its own drops it.
std::pair<uint64_t, int> FillFileAsContainer(const std::string& path, uint64_t limit) {
  std::pair<uint64_t, int> result{0, -1};
  std::thread t([&] {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (::syscall(SYS_capget, &hdr, data) != 0) return;
    data[CAP_SYS_RESOURCE / 32].effective &= ~(1u << (CAP_SYS_RESOURCE % 32));
    if (::syscall(SYS_capset, &hdr, data) != 0) return;
    result = FillFile(path, limit);
  });
  t.join();
  return result;
}

struct QuotaFs {
  const char* type;
  std::vector<std::string> mkfs;
  uint64_t size_mb;
};

class VolumeProjectQuotaTest : public ::testing::TestWithParam<QuotaFs> {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mount)";
    if (::getenv("DMTHIN_IN_VM") == nullptr) {
      GTEST_SKIP() << "the host kernel has no ext4/xfs project quota: run inside tests/vm/run";
    }
    const QuotaFs& q = GetParam();
    if (!thinpool::FindProgram(q.mkfs[0])) GTEST_SKIP() << "no " << q.mkfs[0];
    auto fs = ScratchBtrfs::CreateOf(q.type, q.mkfs, "prjquota", q.size_mb);
    ASSERT_TRUE(fs.ok()) << fs.status();
    fs_ = std::move(*fs);
  }

  std::unique_ptr<ScratchBtrfs> fs_;
};

TEST_P(VolumeProjectQuotaTest, SizeIsAProjectLimit) {
  StoreOptions o;
  o.root = fs_->path() + "/store";
  auto opened = VolumeStore::Open(o);
  ASSERT_TRUE(opened.ok()) << opened.status();
  VolumeStore& store = **opened;

  CreateOptions co;
  co.size_bytes = 32 * kMiB;
  auto v = store.Create("v1", co);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->backend, Backend::kDirectory);
  EXPECT_EQ(v->fs, GetParam().type == std::string("ext4") ? "extfs" : "xfs");  // statfs names
  auto path = store.Mount("v1", "c1");
  ASSERT_TRUE(path.ok()) << path.status();
  std::ofstream(*path + "/keep") << "kept";

  auto [written, err] = FillFileAsContainer(*path + "/big", 96 * kMiB);
  EXPECT_TRUE(err == EDQUOT || err == ENOSPC) << "errno " << err << " after " << written;
  EXPECT_LE(written, 32 * kMiB);
  EXPECT_GE(written, 16 * kMiB);
  auto usage = store.GetUsage("v1");
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_GE(usage->used_bytes, 16 * kMiB) << "the project's usage";
  EXPECT_LE(usage->used_bytes, 33 * kMiB);
  EXPECT_EQ(usage->size_bytes, 32 * kMiB);

  // The volume stays usable: delete, and a small write succeeds.
  ASSERT_EQ(::unlink((*path + "/big").c_str()), 0);
  std::ofstream(*path + "/small") << "small";
  EXPECT_EQ(ReadAll(*path + "/small"), "small");
  EXPECT_EQ(ReadAll(*path + "/keep"), "kept");

  // A second volume has a project of its own: v1's usage is not charged to it.
  auto v2 = store.Create("v2", co);
  ASSERT_TRUE(v2.ok()) << v2.status();
  auto p2 = store.Mount("v2", "c2");
  ASSERT_TRUE(p2.ok()) << p2.status();
  auto [w2, e2] = FillFile(*p2 + "/f", 8 * kMiB);
  EXPECT_EQ(e2, 0);
  EXPECT_EQ(w2, 8 * kMiB);
  EXPECT_LT(store.GetUsage("v1")->used_bytes, 2 * kMiB);

  // Grow: the larger limit lets the write through.
  ASSERT_TRUE(store.Grow("v1", 64 * kMiB).ok());
  EXPECT_EQ(store.Get("v1")->size_bytes, 64 * kMiB);
  auto [w3, e3] = FillFileAsContainer(*path + "/big", 48 * kMiB);
  EXPECT_EQ(e3, 0) << "after " << w3;
  ASSERT_EQ(::unlink((*path + "/big").c_str()), 0);

  // A snapshot is a copy charged to its own project, with the source's size.
  auto s = store.Snapshot("v1", "s1");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->size_bytes, 64 * kMiB);
  auto sp = store.Mount("s1", "c3");
  ASSERT_TRUE(sp.ok()) << sp.status();
  EXPECT_EQ(ReadAll(*sp + "/keep"), "kept");

  for (const auto& [name, caller] : {std::pair{"v1", "c1"}, {"v2", "c2"}, {"s1", "c3"}}) {
    ASSERT_TRUE(store.Unmount(name, caller).ok()) << name;
    ASSERT_TRUE(store.Remove(name).ok()) << name;
  }
  auto check = store.Check(false);
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_TRUE(check->clean()) << check->findings.front();
}

INSTANTIATE_TEST_SUITE_P(
    Filesystems, VolumeProjectQuotaTest,
    ::testing::Values(QuotaFs{"ext4", {"mkfs.ext4", "-q", "-O", "quota,project"}, 128},
                      // xfs refuses filesystems under 300 MiB.
                      QuotaFs{"xfs", {"mkfs.xfs", "-q"}, 320}),
    [](const ::testing::TestParamInfo<QuotaFs>& info) { return std::string(info.param.type); });

}  // namespace
}  // namespace volume
