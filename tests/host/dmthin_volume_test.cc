// `dmthin volume ...` on the host: directory volumes on a loop-mounted btrfs
// made by the test, every verb with --json, and a crash at a failpoint
// repaired by `dmthin volume check --repair`.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/graph_conformance.h"
#include "tests/support/process.h"

namespace {

using graph::testing::ScratchBtrfs;
using testsupport::RunResult;

std::string Dmthin() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string self(buf, n > 0 ? static_cast<size_t>(n) : 0);
  return self.substr(0, self.rfind('/')) + "/../../bin/dmthin";
}

class DmthinVolumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mount)";
    ASSERT_EQ(::access(Dmthin().c_str(), X_OK), 0) << Dmthin() << " not built (make all)";
    auto fs = ScratchBtrfs::Create(256);
    if (!fs.ok()) GTEST_SKIP() << "no scratch btrfs: " << fs.status();
    fs_ = std::move(*fs);
  }
  RunResult Run(std::vector<std::string> args, const std::string& failpoint = "") {
    std::vector<std::string> argv;
    if (!failpoint.empty()) {
      argv = {"env", "DMTHIN_FAILPOINT=" + failpoint};
    }
    argv.push_back(Dmthin());
    argv.insert(argv.end(), {"--state-dir", fs_->path() + "/state"});
    argv.insert(argv.end(), args.begin(), args.end());
    return testsupport::Run(argv);
  }
  nlohmann::json Json(std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    RunResult r = Run(args);
    EXPECT_TRUE(r.ok()) << r.Describe();
    return r.ok() ? nlohmann::json::parse(r.out) : nlohmann::json();
  }
  std::unique_ptr<ScratchBtrfs> fs_;
};

TEST_F(DmthinVolumeTest, EveryVerbWithJson) {
  auto v = Json({"volume", "create", "v1", "--size", "32M", "--label", "app=db"});
  EXPECT_EQ(v["name"], "v1");
  EXPECT_EQ(v["backend"], "directory");
  EXPECT_EQ(v["fs"], "btrfs");
  EXPECT_EQ(v["size_bytes"], 32u << 20);
  EXPECT_EQ(v["labels"]["app"], "db");

  RunResult dup = Run({"volume", "create", "v1"});
  EXPECT_EQ(dup.exit_code, 1) << dup.Describe();
  RunResult bad = Run({"volume", "create", "../x"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("invalid volume name"), std::string::npos) << bad.err;

  auto m = Json({"volume", "mount", "v1", "--caller", "c1"});
  std::string path = m["mountpoint"];
  ASSERT_FALSE(path.empty());
  std::ofstream(path + "/f") << "hello";
  Json({"volume", "mount", "v1", "--caller", "c1"});
  auto inspect = Json({"volume", "inspect", "v1"});
  EXPECT_EQ(inspect["mount_refs"], 2);
  EXPECT_EQ(inspect["mountpoint"], path);
  EXPECT_TRUE(inspect["used_bytes"].is_number());

  RunResult busy = Run({"volume", "rm", "v1"});
  EXPECT_EQ(busy.exit_code, 1);
  EXPECT_NE(busy.err.find("in use"), std::string::npos) << busy.err;

  auto snap = Json({"volume", "snapshot", "v1", "s1"});
  EXPECT_EQ(snap["origin"], "v1");
  auto clone = Json({"volume", "clone", "v1", "c1", "--label", "k=v"});
  EXPECT_EQ(clone["labels"]["k"], "v");
  auto ls = Json({"volume", "ls"});
  ASSERT_EQ(ls["volumes"].size(), 3u);

  auto grown = Json({"volume", "resize", "v1", "--size", "64M"});
  EXPECT_EQ(grown["size_bytes"], 64u << 20);

  auto u = Json({"volume", "unmount", "v1", "--caller", "c1"});
  EXPECT_EQ(u["mount_refs"], 1);
  Json({"volume", "unmount", "v1", "--caller", "c1"});
  auto rm = Json({"volume", "rm", "v1", "s1", "c1"});
  EXPECT_EQ(rm["removed"].size(), 3u);
  auto check = Json({"volume", "check"});
  EXPECT_EQ(check["clean"], true);
}

TEST_F(DmthinVolumeTest, CrashAtCreateRepairedByCheck) {
  RunResult crashed = Run({"volume", "create", "v", "--size", "16M"}, "volume_create_after_act");
  ASSERT_EQ(crashed.exit_code, 77) << crashed.Describe();
  RunResult dirty = Run({"--json", "volume", "check"});
  EXPECT_EQ(dirty.exit_code, 1);
  EXPECT_EQ(nlohmann::json::parse(dirty.out)["clean"], false);
  auto repaired = Json({"volume", "check", "--repair"});
  EXPECT_EQ(repaired["clean"], true);
  EXPECT_EQ(repaired["actions"].size(), 1u);
  EXPECT_EQ(Json({"volume", "ls"})["volumes"].size(), 0u);
  EXPECT_EQ(Json({"volume", "check"})["clean"], true);
}

}  // namespace
