// dmthin, the admin tool, end to end against the real dm-thin target: every
// verb in human and --json form (the JSON parsed here), and the error paths
// with their exit codes (0 ok, 1 failed, 2 usage) and messages.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/cleanup_stack.h"
#include "tests/support/process.h"

namespace {

using Json = nlohmann::json;
using testsupport::RunResult;

class DmthinCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/mapper/control", F_OK) != 0)
      GTEST_SKIP() << "no /dev/mapper/control: run this inside tests/vm/run";
    bin_ = testsupport::RepoRoot() + "/" + (getenv("BUILD") ? getenv("BUILD") : "build") +
           "/bin/dmthin";
    ASSERT_EQ(access(bin_.c_str(), X_OK), 0) << bin_ << " missing: run make";
    dir_ = "/tmp/" + testsupport::UniqueName("dmthin-cli");
    state_ = dir_ + "/state";
    std::filesystem::create_directories(dir_);
    cleanup_.Push([this] {
      // Whatever a failed test left: destroy every pool of this state dir.
      RunResult r = Dmthin({"--json", "pool", "list"});
      if (r.ok()) {
        for (const auto& p : Json::parse(r.out, nullptr, false)["pools"])
          if (p.contains("name")) Dmthin({"pool", "destroy", p["name"], "--force"});
      }
      std::filesystem::remove_all(dir_);
    });
    pool_ = "p" + std::to_string(getpid() % 100000) + "_" + std::to_string(counter_++);
  }

  RunResult Dmthin(std::vector<std::string> args) {
    args.insert(args.begin(), {bin_, "--state-dir", state_});
    return testsupport::Run(args);
  }
  Json DmthinJson(std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    RunResult r = Dmthin(args);
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    Json j = Json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out;
    return j;
  }
  void CreatePool(const std::vector<std::string>& extra = {}, const std::string& size = "256M") {
    std::vector<std::string> args = {"pool", "create", pool_, "--data-size", size};
    args.insert(args.end(), extra.begin(), extra.end());
    RunResult r = Dmthin(args);
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
  }

  static inline int counter_ = 0;
  std::string bin_, dir_, state_, pool_;
  testsupport::CleanupStack cleanup_;
};

TEST_F(DmthinCliTest, PoolLifecycleHumanAndJson) {
  CreatePool({"--block-size", "128K", "--low-water-mark", "100", "--discard", "nopassdown"});
  Json list = DmthinJson({"pool", "list"});
  ASSERT_EQ(list["pools"].size(), 1u);
  EXPECT_EQ(list["pools"][0]["name"], pool_);
  EXPECT_TRUE(list["pools"][0]["active"].get<bool>());

  Json st = DmthinJson({"pool", "status", pool_});
  EXPECT_EQ(st["data_total_bytes"], 256u << 20);
  EXPECT_EQ(st["block_bytes"], 128u << 10);
  EXPECT_EQ(st["discard"], "nopassdown");
  EXPECT_EQ(st["low_water_mark_blocks"], 100);
  EXPECT_FALSE(st["needs_check"].get<bool>());
  EXPECT_EQ(st["data_path"], state_ + "/" + pool_ + "/data");

  RunResult human = Dmthin({"pool", "status", pool_});
  ASSERT_EQ(human.exit_code, 0) << human.Describe();
  EXPECT_NE(human.out.find("transaction id"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("256 MiB"), std::string::npos) << human.out;
  human = Dmthin({"pool", "list"});
  EXPECT_NE(human.out.find(pool_), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("DATA%"), std::string::npos) << human.out;

  // dm ls sees the pool device with our uuid prefix.
  Json dmls = DmthinJson({"dm", "ls"});
  bool seen = false;
  for (const auto& d : dmls["devices"])
    if (d["uuid"].get<std::string>().rfind("DMTHIN-POOL-", 0) == 0) seen = true;
  EXPECT_TRUE(seen) << dmls.dump();

  EXPECT_EQ(Dmthin({"pool", "resize", pool_, "--data-size", "512M"}).exit_code, 0);
  EXPECT_EQ(DmthinJson({"pool", "status", pool_})["data_total_bytes"], 512u << 20);

  EXPECT_EQ(Dmthin({"pool", "deactivate", pool_}).exit_code, 0);
  EXPECT_FALSE(DmthinJson({"pool", "status", pool_})["active"].get<bool>());
  EXPECT_EQ(Dmthin({"pool", "activate", "--all"}).exit_code, 0);
  EXPECT_TRUE(DmthinJson({"pool", "status", pool_})["active"].get<bool>());
  RunResult check = Dmthin({"pool", "check", pool_});
  EXPECT_EQ(check.exit_code, 0) << check.Describe();
  EXPECT_EQ(Dmthin({"pool", "destroy", pool_}).exit_code, 0);
  EXPECT_EQ(DmthinJson({"pool", "list"})["pools"].size(), 0u);
  EXPECT_FALSE(std::filesystem::exists(state_ + "/" + pool_ + "/data"));
}

TEST_F(DmthinCliTest, ThinsAndSnapshots) {
  CreatePool();
  Json thin = DmthinJson({"thin", "create", pool_, "base", "--size", "64M", "--mkfs", "ext4"});
  EXPECT_EQ(thin["size_bytes"], 64u << 20);
  ASSERT_TRUE(thin["path"].is_string());
  const std::string dev = thin["path"];
  RunResult blkid = testsupport::Run({"blkid", "-o", "value", "-s", "TYPE", dev});
  EXPECT_EQ(blkid.out, "ext4\n") << blkid.Describe();

  Json snap = DmthinJson({"thin", "snapshot", pool_, "base", "snap1"});
  EXPECT_EQ(snap["origin"], "base");
  EXPECT_NE(snap["id"], thin["id"]);

  Json list = DmthinJson({"thin", "list", pool_});
  ASSERT_EQ(list["thins"].size(), 2u);
  Json info = DmthinJson({"thin", "info", pool_, "snap1"});
  EXPECT_TRUE(info["active"].get<bool>());
  EXPECT_GT(info["mapped_bytes"].get<uint64_t>(), 0u);

  RunResult human = Dmthin({"thin", "list", pool_});
  EXPECT_NE(human.out.find("snap1"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("MAPPED%"), std::string::npos) << human.out;

  EXPECT_EQ(Dmthin({"thin", "deactivate", pool_, "snap1"}).exit_code, 0);
  EXPECT_FALSE(DmthinJson({"thin", "info", pool_, "snap1"})["active"].get<bool>());
  RunResult act = Dmthin({"thin", "activate", pool_, "snap1"});
  EXPECT_EQ(act.exit_code, 0) << act.Describe();
  EXPECT_EQ(act.out.rfind("/dev/", 0), 0u) << act.out;

  // A pool with active thins is not deactivated or destroyed without --force.
  RunResult busy = Dmthin({"pool", "destroy", pool_});
  EXPECT_EQ(busy.exit_code, 1);
  EXPECT_NE(busy.err.find("--force"), std::string::npos) << busy.err;

  EXPECT_EQ(Dmthin({"thin", "delete", pool_, "base"}).exit_code, 0);
  EXPECT_EQ(DmthinJson({"thin", "list", pool_})["thins"].size(), 1u);
  EXPECT_EQ(Dmthin({"pool", "destroy", pool_, "--force"}).exit_code, 0);
}

TEST_F(DmthinCliTest, UsageErrorsExitTwo) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{}, "usage"},
      {{"pool"}, "unknown verb"},
      {{"pool", "frobnicate"}, "unknown verb"},
      {{"pool", "create", "x"}, "--data-size"},
      {{"pool", "create", "x", "--data-size", "12Q"}, "invalid size"},
      {{"pool", "create", "x", "--data-size", "-1G"}, "invalid size"},
      {{"pool", "create", "x", "--data-size", "1G", "--discard", "sometimes"}, "--discard"},
      {{"pool", "create", "x", "--data-size", "1G", "--bogus"}, "unknown option"},
      {{"thin", "create", "p", "t"}, "--size"},
      {{"thin", "create", "p"}, "expected"},
      {{"monitor", "--threshold", "lots"}, "percentage"},
  };
  for (const auto& c : cases) {
    RunResult r = Dmthin(c.args);
    EXPECT_EQ(r.exit_code, 2) << r.Describe();
    EXPECT_NE((r.err + r.out).find(c.message), std::string::npos) << r.Describe();
  }
  RunResult help = Dmthin({"pool", "create", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--data-size SIZE"), std::string::npos) << help.out;
}

TEST_F(DmthinCliTest, OperationErrorsExitOneWithAReason) {
  RunResult r = Dmthin({"pool", "status", "nosuchpool"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no pool 'nosuchpool'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("dmthin pool list"), std::string::npos) << r.err;

  r = Dmthin({"pool", "create", "bad-name", "--data-size", "64M"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("bad-name"), std::string::npos) << r.err;

  CreatePool();
  r = Dmthin({"pool", "create", pool_, "--data-size", "64M"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("exists"), std::string::npos) << r.err;
  r = Dmthin({"thin", "info", pool_, "ghost"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("ghost"), std::string::npos) << r.err;
  r = Dmthin({"thin", "snapshot", pool_, "ghost", "s"});
  EXPECT_EQ(r.exit_code, 1);

  // A busy thin (held open) cannot be deleted.
  Json thin = DmthinJson({"thin", "create", pool_, "held", "--size", "16M"});
  int fd = open(thin["path"].get<std::string>().c_str(), O_RDONLY | O_EXCL);
  ASSERT_GE(fd, 0);
  r = Dmthin({"thin", "delete", pool_, "held"});
  close(fd);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("in use"), std::string::npos) << r.err;
  EXPECT_EQ(Dmthin({"thin", "delete", pool_, "held"}).exit_code, 0);

  // Missing backing file: deactivate, move the data file away, activate.
  ASSERT_EQ(Dmthin({"pool", "deactivate", pool_}).exit_code, 0);
  const std::string data = state_ + "/" + pool_ + "/data";
  std::filesystem::rename(data, data + ".away");
  r = Dmthin({"pool", "activate", pool_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("data"), std::string::npos) << r.err;
  std::filesystem::rename(data + ".away", data);

  // Corrupted metadata: thin_check refuses, and says how to repair.
  if (testsupport::HaveProgram("thin_check")) {
    const std::string meta = state_ + "/" + pool_ + "/metadata";
    {
      std::fstream f(meta, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(4096 * 3);
      std::string junk(4096 * 4, '\xa5');
      f.write(junk.data(), junk.size());
    }
    {
      std::fstream f(meta, std::ios::in | std::ios::out | std::ios::binary);
      std::string junk(64, '\x5a');
      f.seekp(32);
      f.write(junk.data(), junk.size());
    }
    r = Dmthin({"pool", "activate", pool_});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("thin_check"), std::string::npos) << r.err;
  }
}

// Issue 11, items 9, 10, 11: sizes are checked before anything is made and
// the messages name what was given; a forced deactivate names the mount
// that blocks it; check on a full pool says to grow it, not --repair.
TEST_F(DmthinCliTest, ErrorsSayWhatIsWrongAndWhatToRun) {
  RunResult r = Dmthin({"pool", "create", pool_, "--data-size", "64K"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("at least 16 blocks"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("low water"), std::string::npos) << r.err;
  r = Dmthin({"pool", "create", pool_, "--data-size", "1G", "--metadata-size", "0"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("below the minimum"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(state_ + "/" + pool_)) << "a refused create made files";

  CreatePool({"--error-if-no-space"}, "16M");
  Json thin = DmthinJson({"thin", "create", pool_, "t", "--size", "32M", "--mkfs", "ext4"});
  const std::string mnt = dir_ + "/mnt";
  std::filesystem::create_directories(mnt);
  ASSERT_EQ(mount(thin["path"].get<std::string>().c_str(), mnt.c_str(), "ext4", 0, nullptr), 0);
  cleanup_.Push([mnt] { umount2(mnt.c_str(), MNT_DETACH); });
  r = Dmthin({"pool", "deactivate", pool_, "--force"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("mounted on " + mnt), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("umount " + mnt), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("or --force"), std::string::npos) << r.err;

  // Fill the pool through the filesystem (error_if_no_space: writes fail).
  testsupport::Run({"dd", "if=/dev/urandom", "of=" + mnt + "/fill", "bs=1M", "count=24",
                    "oflag=direct", "status=none"});
  r = Dmthin({"pool", "check", pool_});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("pool resize " + pool_), std::string::npos) << r.Describe();
  EXPECT_EQ(r.err.find("--repair"), std::string::npos) << r.Describe();
  // --repair cannot make room: the problem stays, and so does the error.
  r = Dmthin({"pool", "check", pool_, "--repair"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("still has problems after --repair"), std::string::npos) << r.Describe();
  EXPECT_NE(r.err.find("pool resize " + pool_), std::string::npos) << r.Describe();
}

TEST_F(DmthinCliTest, DmVerbs) {
  CreatePool();
  Json thin = DmthinJson({"thin", "create", pool_, "t", "--size", "16M"});
  const std::string dm_name = thin["dm_name"];
  Json info = DmthinJson({"dm", "info", dm_name});
  EXPECT_EQ(info["name"], dm_name);
  EXPECT_EQ(info["uuid"], thin["dm_uuid"]);
  RunResult table = Dmthin({"dm", "table", dm_name});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_NE(table.out.find(" thin "), std::string::npos) << table.out;
  // The reference client agrees.
  RunResult ref = testsupport::Run({"dmsetup", "table", dm_name});
  EXPECT_EQ(table.out, ref.out);
  RunResult status = Dmthin({"dm", "status", dm_name});
  EXPECT_EQ(status.out, testsupport::Run({"dmsetup", "status", dm_name}).out);
  RunResult missing = Dmthin({"dm", "info", "no-such-device-here"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(Dmthin({"dm", "info", "bad/name"}).exit_code, 2);
}

TEST_F(DmthinCliTest, MonitorOnceReportsAndExtends) {
  CreatePool({}, "64M");
  Json thin = DmthinJson({"thin", "create", pool_, "fill", "--size", "128M"});
  // Fill ~75% of the pool's data.
  RunResult dd = testsupport::Run({"dd", "if=/dev/urandom", "of=" + thin["path"].get<std::string>(),
                                   "bs=1M", "count=48", "oflag=direct", "status=none"});
  ASSERT_EQ(dd.exit_code, 0) << dd.Describe();
  RunResult r = Dmthin({"--json", "monitor", "--once", "--threshold", "50", "--extend", "50",
                        "--pool", pool_});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  Json event = Json::parse(r.out.substr(0, r.out.find('\n')), nullptr, false);
  ASSERT_FALSE(event.is_discarded()) << r.out;
  EXPECT_EQ(event["pool"], pool_);
  EXPECT_GT(DmthinJson({"pool", "status", pool_})["data_total_bytes"].get<uint64_t>(), 64u << 20);
}

}  // namespace
