// Proves the vm tier's harness: inside the guest the reference client dmsetup
// (lvm2) drives the real dm-thin target — a thin-pool over two loop devices
// backed by sparse files, a thin device with ext4, and a snapshot that keeps
// the origin's old contents.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/support/cleanup_stack.h"
#include "tests/support/process.h"

namespace {

using testsupport::RunResult;
using testsupport::RunResult;

std::string MajMin(const std::string& dev) {
  struct stat st;
  if (stat(dev.c_str(), &st) != 0) return "";
  return std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class DmsetupHarnessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/mapper/control", F_OK) != 0)
      GTEST_SKIP() << "no /dev/mapper/control: run this inside tests/vm/run";
    for (const char* tool : {"dmsetup", "losetup", "mkfs.ext4", "mount", "umount"})
      if (!testsupport::HaveProgram(tool)) GTEST_SKIP() << tool << " not installed";
    dir_ = "/tmp/" + testsupport::UniqueName("dmthin-harness");
    std::filesystem::create_directories(dir_);
    cleanup_.Push([d = dir_] { std::filesystem::remove_all(d); });
  }

  // Runs argv and fails the test (with what it printed) if it exits non-zero.
  std::string MustRun(const std::vector<std::string>& argv) {
    RunResult r = testsupport::Run(argv);
    EXPECT_TRUE(r.ok()) << r.Describe();
    return r.out;
  }

  std::string Loop(const std::string& file, off_t size) {
    int fd = open(file.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(ftruncate(fd, size), 0);
    close(fd);
    std::string dev = Trim(MustRun({"losetup", "--find", "--show", file}));
    if (!dev.empty()) cleanup_.Push([dev] { testsupport::Run({"losetup", "-d", dev}); });
    return dev;
  }

  void DmCreate(const std::string& name, const std::string& table) {
    MustRun({"dmsetup", "create", "--noudevsync", name, "--table", table});
    cleanup_.Push([name] { testsupport::Run({"dmsetup", "remove", "--noudevsync", "--retry", name}); });
    MustRun({"dmsetup", "mknodes", name});  // no udev in the guest
  }

  void Mount(const std::string& dev, const std::string& dir) {
    std::filesystem::create_directories(dir);
    MustRun({"mount", dev, dir});
    cleanup_.Push([dir] { testsupport::Run({"umount", dir}); });
  }

  std::string dir_;
  testsupport::CleanupStack cleanup_;
};

TEST_F(DmsetupHarnessTest, ThinPoolThinExt4AndSnapshot) {
  const std::string tag = testsupport::UniqueName("h");
  const std::string pool = tag + "-pool", thin = tag + "-thin", snap = tag + "-snap";
  const off_t data_size = 512LL << 20, meta_size = 16LL << 20;

  std::string meta_dev = Loop(dir_ + "/metadata", meta_size);
  std::string data_dev = Loop(dir_ + "/data", data_size);
  ASSERT_FALSE(meta_dev.empty());
  ASSERT_FALSE(data_dev.empty());
  // Tables name devices as MAJ:MIN: without udev there is no /dev/mapper/NAME
  // until mknodes, and the kernel resolves MAJ:MIN regardless.
  DmCreate(pool, "0 " + std::to_string(data_size / 512) + " thin-pool " + MajMin(meta_dev) + " " +
                     MajMin(data_dev) + " 128 0");
  std::string status = MustRun({"dmsetup", "status", pool});
  EXPECT_NE(status.find("thin-pool 0 "), std::string::npos) << status;

  MustRun({"dmsetup", "message", pool, "0", "create_thin 0"});
  const std::string pool_dev = "/dev/mapper/" + pool;
  DmCreate(thin, "0 2097152 thin " + MajMin(pool_dev) + " 0");
  const std::string thin_dev = "/dev/mapper/" + thin;
  MustRun({"mkfs.ext4", "-q", "-E", "nodiscard", thin_dev});

  const std::string mnt = dir_ + "/mnt";
  {
    testsupport::CleanupStack scope;
    Mount(thin_dev, mnt);
    std::ofstream(mnt + "/hello") << "original contents\n";
    MustRun({"umount", mnt});
  }

  // Snapshot: suspend the active origin around create_snap.
  MustRun({"dmsetup", "suspend", "--noudevsync", thin});
  MustRun({"dmsetup", "message", pool, "0", "create_snap 1 0"});
  MustRun({"dmsetup", "resume", "--noudevsync", thin});
  DmCreate(snap, "0 2097152 thin " + MajMin(pool_dev) + " 1");

  MustRun({"mount", thin_dev, mnt});
  std::ofstream(mnt + "/hello") << "changed in the origin\n";
  MustRun({"umount", mnt});

  const std::string snap_mnt = dir_ + "/snap";
  std::filesystem::create_directories(snap_mnt);
  MustRun({"mount", "-o", "ro", "/dev/mapper/" + snap, snap_mnt});
  EXPECT_EQ(ReadFile(snap_mnt + "/hello"), "original contents\n");
  MustRun({"umount", snap_mnt});
  MustRun({"mount", "-o", "ro", thin_dev, mnt});
  EXPECT_EQ(ReadFile(mnt + "/hello"), "changed in the origin\n");
  MustRun({"umount", mnt});

  // The pool now maps blocks for both devices and counts two thins' worth of
  // metadata; its transaction id is still 0 (nobody set it).
  status = MustRun({"dmsetup", "status", pool});
  std::istringstream fields(status);
  std::string start, len, type, txid, meta, data;
  fields >> start >> len >> type >> txid >> meta >> data;
  EXPECT_EQ(type, "thin-pool");
  EXPECT_EQ(txid, "0");
  EXPECT_NE(data.substr(0, data.find('/')), "0") << status;
}

}  // namespace
