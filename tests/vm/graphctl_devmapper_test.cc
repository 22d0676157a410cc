// graphctl --driver devicemapper with --storage-opt, end to end against the
// real dm-thin target (run inside tests/vm/run): the options make a pool on
// sparse files and set the base device size, which status, inspect and the
// mounted layer's filesystem all show; options the driver refuses fail
// naming the option, with no pool made.
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "base/size.h"
#include "gtest/gtest.h"
#include "libdm/control.h"
#include "nlohmann/json.hpp"
#include "tests/support/cleanup_stack.h"
#include "tests/support/graph_tar.h"
#include "tests/support/process.h"
#include "tests/support/thinpool_cleanup.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using testsupport::RunResult;

constexpr uint64_t kBaseBytes = 96ull << 20;

std::string Graphctl() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string self(buf, n > 0 ? static_cast<size_t>(n) : 0);
  return self.substr(0, self.rfind('/')) + "/../../bin/graphctl";
}

std::string Line(const RunResult& r) {
  std::string s = r.out;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class GraphctlDevmapperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/mapper/control", F_OK) != 0) {
      GTEST_SKIP() << "no /dev/mapper/control: run this inside tests/vm/run";
    }
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    ASSERT_EQ(::access(Graphctl().c_str(), X_OK), 0) << Graphctl() << " not built (make tools)";
    base_ = "/tmp/" + testsupport::UniqueName("graphctl-dm");
    root_ = base_ + "/store";
    fs::create_directories(base_);
    cleanup_.Push([this] {
      // Mounts a failed test left, then the pool, then the files.
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(root_ + "/devicemapper/mnt", ec)) {
        ::umount2(e.path().c_str(), MNT_DETACH);
      }
      EXPECT_EQ(testsupport::DestroyDriverPools(root_ + "/devicemapper"), absl::OkStatus());
      fs::remove_all(base_, ec);
    });
  }

  RunResult Run(std::vector<std::string> args, const std::string& stdin_data = "") {
    args.insert(args.begin(), {Graphctl(), "--root", root_});
    return testsupport::Run(args, stdin_data);
  }

  std::string base_, root_;
  testsupport::CleanupStack cleanup_;
};

TEST_F(GraphctlDevmapperTest, StorageOptsMakeThePoolAndSetTheBaseSize) {
  const std::vector<std::string> opts = {"--driver", "devicemapper", "--storage-opt", "dm.loopdatasize=1G",
                                         "--storage-opt", "dm.basesize=96M"};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.begin(), opts.begin(), opts.end());
    return args;
  };

  // Without a pool option the driver says what it needs.
  RunResult bare = Run({"--driver", "devicemapper", "ls"});
  EXPECT_EQ(bare.exit_code, 1) << bare.Describe();
  EXPECT_NE(bare.err.find("dm.thinpooldev"), std::string::npos) << bare.err;

  RunResult imp = Run(with({"import", "-"}), testsupport::BuildTar({{"etc", '5', "", "", 0755},
                                                                   {"etc/issue", '0', "thin\n"}}));
  ASSERT_TRUE(imp.ok()) << imp.Describe();
  std::string chain = Line(imp);

  RunResult status = Run(with({"--json", "status"}));
  ASSERT_TRUE(status.ok()) << status.Describe();
  Json st = Json::parse(status.out);
  EXPECT_EQ(st["driver"], "devicemapper");
  EXPECT_EQ(st["driver_status"]["Base Device Size"], base::FormatSize(kBaseBytes)) << status.out;
  EXPECT_EQ(st["driver_status"]["Data Space Total"], base::FormatSize(1ull << 30)) << status.out;

  // The store remembers its driver and the driver its pool and base: a
  // later open needs no options, and the base size stays.
  RunResult again = Run({"--json", "status"});
  ASSERT_TRUE(again.ok()) << again.Describe();
  EXPECT_EQ(Json::parse(again.out)["driver_status"]["Base Device Size"], base::FormatSize(kBaseBytes));

  RunResult create = Run({"create", "ctr", "--parent", chain, "--rw"});
  ASSERT_TRUE(create.ok()) << create.Describe();
  RunResult inspect = Run({"inspect", "ctr"});
  ASSERT_TRUE(inspect.ok()) << inspect.Describe();
  EXPECT_EQ(Json::parse(inspect.out)["graph_driver"]["data"]["DeviceSize"], std::to_string(kBaseBytes))
      << inspect.out;
  RunResult mount = Run({"mount", "ctr"});
  ASSERT_TRUE(mount.ok()) << mount.Describe();
  std::string dir = Line(mount);
  EXPECT_EQ(testsupport::ReadFileOrEmpty(dir + "/etc/issue"), "thin\n");
  struct statvfs vfs;
  ASSERT_EQ(::statvfs(dir.c_str(), &vfs), 0);
  uint64_t fs_bytes = static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize;
  EXPECT_LE(fs_bytes, kBaseBytes) << "the layer's filesystem is bigger than dm.basesize";
  EXPECT_GE(fs_bytes, kBaseBytes * 3 / 4) << "the layer's filesystem is far smaller than dm.basesize";
  ASSERT_TRUE(Run({"umount", "ctr"}).ok());

  // Options the driver refuses: exit 1, the option named.
  RunResult unknown = Run({"--storage-opt", "dm.bogus=1", "ls"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.Describe();
  EXPECT_NE(unknown.err.find("unknown option \"dm.bogus\""), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("--storage-opt dm.bogus=1"), std::string::npos) << unknown.err;

  ASSERT_TRUE(Run({"rm", "ctr"}).ok());
  ASSERT_TRUE(Run({"rm", chain}).ok());
  RunResult check = Run({"check"});
  EXPECT_TRUE(check.ok()) << check.Describe();
}

// A value devicemapper refuses, on a fresh root: exit 1 naming the option,
// and no pool is made.
TEST_F(GraphctlDevmapperTest, RefusedBaseSizeMakesNoPool) {
  RunResult small = Run({"--driver", "devicemapper", "--storage-opt", "dm.loopdatasize=1G", "--storage-opt",
                         "dm.basesize=1M", "ls"});
  EXPECT_EQ(small.exit_code, 1) << small.Describe();
  EXPECT_NE(small.err.find("dm.basesize=1M must be at least 64M"), std::string::npos) << small.err;
  EXPECT_FALSE(fs::exists(root_ + "/devicemapper/thinpool/.registry.db")) << "a refused option made a pool";
  // Beyond what ext4 holds: refused up front (it used to make the pool and a
  // base device, then fail in libext2fs with "Unknown code ext2 71").
  RunResult huge = Run({"--driver", "devicemapper", "--storage-opt", "dm.loopdatasize=1G", "--storage-opt",
                        "dm.basesize=600P", "ls"});
  EXPECT_EQ(huge.exit_code, 1) << huge.Describe();
  EXPECT_NE(huge.err.find("dm.basesize=600P"), std::string::npos) << huge.err;
  EXPECT_NE(huge.err.find("ext4 holds at most"), std::string::npos) << huge.err;
  EXPECT_FALSE(fs::exists(root_ + "/devicemapper/thinpool/.registry.db")) << "a refused option made a pool";
  RunResult twice = Run({"--driver", "devicemapper", "--storage-opt", "dm.basesize=1G", "--storage-opt",
                         "dm.basesize=2G", "ls"});
  EXPECT_EQ(twice.exit_code, 2) << twice.Describe();
  EXPECT_NE(twice.err.find("--storage-opt dm.basesize given twice"), std::string::npos) << twice.err;
}

}  // namespace
