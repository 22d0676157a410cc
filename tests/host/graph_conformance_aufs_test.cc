// aufs driver on a kernel without aufs: every operation that needs the
// module fails with the typed reason, auto-selection skips aufs, and the
// mount-data builder splits long branch lists into remount appends.
#include <unistd.h>

#include "gtest/gtest.h"
#include "graph/driver.h"
#include "graph/drivers/aufs.h"
#include "tests/support/graph_conformance.h"

namespace graph {
namespace {

TEST(AufsMountData, FitsOnePageAndAppendsTheRest) {
  std::vector<std::string> lowers;
  for (int i = 0; i < 100; ++i) lowers.push_back("/var/lib/graph/aufs/diff/" + std::string(64, 'a' + i % 26));
  std::vector<std::string> data = aufs::MountData("/top", true, lowers, 4096);
  ASSERT_GT(data.size(), 1u);
  EXPECT_EQ(data[0].rfind("br:/top=rw:", 0), 0u);
  EXPECT_LT(data[0].size(), 4096u);
  EXPECT_NE(data[0].find(",dio,xino=/dev/shm/aufs.xino,dirperm1"), std::string::npos);
  size_t in_first = 0;
  for (size_t pos = 0; (pos = data[0].find("=ro+wh", pos)) != std::string::npos; ++pos) ++in_first;
  EXPECT_EQ(in_first + data.size() - 1, lowers.size()) << "every branch exactly once";
  EXPECT_EQ(data.back(), "append:" + lowers.back() + "=ro+wh");
  std::vector<std::string> small = aufs::MountData("/top", false, {"/a", "/b"}, 4096);
  ASSERT_EQ(small.size(), 1u);
  EXPECT_EQ(small[0], "br:/top=ro+wh:/a=ro+wh:/b=ro+wh,dio,xino=/dev/shm/aufs.xino,dirperm1");
  EXPECT_TRUE(aufs::IsAufsMetaName(".wh..wh.plnk"));
  EXPECT_FALSE(aufs::IsAufsMetaName(".wh..wh..opq"));
}

TEST(AufsDriver, ReportsMissingKernelSupportCleanly) {
  if (testing::KernelHasFilesystem("aufs")) GTEST_SKIP() << "this kernel has aufs";
  absl::Status k = aufs::KernelSupport();
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(GetUnsupported(k), Unsupported::kKernelLacksFilesystem);
  EXPECT_NE(k.message().find("aufs is not supported by this kernel"), absl::string_view::npos) << k;

  auto dir = testing::ScratchDir::Create("graph-aufs");
  ASSERT_TRUE(dir.ok());
  // Named: the probe's typed error.
  auto named = OpenDriver("aufs", (*dir)->path());
  EXPECT_EQ(GetUnsupported(named.status()), Unsupported::kKernelLacksFilesystem) << named.status();
  // Automatic selection never picks it; ProbeDrivers says why.
  for (const ProbeReport& p : ProbeDrivers((*dir)->path())) {
    if (p.name == "aufs") {
      EXPECT_EQ(GetUnsupported(p.status), Unsupported::kKernelLacksFilesystem);
    }
  }
  auto any = OpenDriver("", (*dir)->path());
  if (any.ok()) {
    EXPECT_NE((*any)->Name(), "aufs");
  }

  // The driver object itself (its state can be listed and removed without
  // the module) refuses Create/Get/ApplyDiff with the same reason.
  for (const DriverInfo& info : RegisteredDrivers()) {
    if (info.name != "aufs") continue;
    DriverOptions o;
    o.root = (*dir)->path() + "/aufs";
    auto d = info.create(o);
    ASSERT_TRUE(d.ok()) << d.status();
    absl::Status c = (*d)->Create("layer1", "", {});
    EXPECT_EQ(GetUnsupported(c), Unsupported::kKernelLacksFilesystem) << c;
    EXPECT_NE(c.message().find("aufs is not supported by this kernel"), absl::string_view::npos);
    EXPECT_EQ(GetUnsupported((*d)->Get("layer1", "").status()), Unsupported::kKernelLacksFilesystem);
    EXPECT_FALSE((*d)->Exists("layer1"));
    auto ids = (*d)->List();
    ASSERT_TRUE(ids.ok());
    EXPECT_TRUE(ids->empty());
    EXPECT_TRUE(absl::IsNotFound((*d)->Remove("layer1")));
    return;
  }
  FAIL() << "aufs is not registered";
}

}  // namespace
}  // namespace graph
