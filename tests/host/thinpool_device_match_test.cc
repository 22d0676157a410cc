// MatchBackingDevice: what udev asks when a block device appears. Real loop
// devices over a registered pool's files on the host kernel.
#include "thinpool/device_match.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "gtest/gtest.h"
#include "tests/support/process.h"
#include "thinpool/loop_device.h"
#include "thinpool/state_dir.h"

namespace {

class DeviceMatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for loop devices";
    dir_ = "/tmp/" + testsupport::UniqueName("dmthin-match");
    std::filesystem::create_directories(dir_);
    auto state = thinpool::StateDir::Open(dir_ + "/state");
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = std::move(*state);
    for (const char* f : {"data", "metadata", "other"}) {
      int fd = open((dir_ + "/" + f).c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(ftruncate(fd, 8 << 20), 0);
      close(fd);
    }
    thinpool::PoolRecord pool;
    pool.name = "matchme";
    pool.backing = thinpool::PoolBacking::kFiles;
    pool.data_path = dir_ + "/data";
    pool.metadata_path = dir_ + "/metadata";
    pool.data_bytes = 8 << 20;
    pool.metadata_bytes = 8 << 20;
    ASSERT_TRUE(state_->registry().AddPool(pool).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
  std::unique_ptr<thinpool::StateDir> state_;
};

TEST_F(DeviceMatchTest, LoopDevicesMatchByBackingFileAndCompleteWhenBothAttached) {
  auto other = thinpool::LoopDevice::Attach(dir_ + "/other");
  ASSERT_TRUE(other.ok()) << other.status();
  auto none = thinpool::MatchBackingDevice(*state_, other->path());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());

  // A different path to the same file still matches (inode, not name).
  std::filesystem::create_symlink(dir_ + "/data", dir_ + "/data-link");
  auto data = thinpool::LoopDevice::Attach(dir_ + "/data-link");
  ASSERT_TRUE(data.ok()) << data.status();
  auto m = thinpool::MatchBackingDevice(*state_, data->path());
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->has_value());
  EXPECT_EQ((*m)->pool, "matchme");
  EXPECT_EQ((*m)->role, "data");
  EXPECT_FALSE((*m)->complete);

  auto meta = thinpool::LoopDevice::Attach(dir_ + "/metadata");
  ASSERT_TRUE(meta.ok()) << meta.status();
  m = thinpool::MatchBackingDevice(*state_, meta->path());
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->has_value());
  EXPECT_EQ((*m)->role, "metadata");
  EXPECT_TRUE((*m)->complete);
}

TEST_F(DeviceMatchTest, RejectsWhatIsNotABlockDevice) {
  auto m = thinpool::MatchBackingDevice(*state_, dir_ + "/data");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  m = thinpool::MatchBackingDevice(*state_, dir_ + "/missing");
  EXPECT_FALSE(m.ok());
}

}  // namespace
