// Loop devices on the host kernel: attach/detach, lookup by backing file,
// capacity growth, read-only, autoclear, the legacy setup path, concurrency.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "gtest/gtest.h"
#include "thinpool/loop_device.h"

namespace thinpool {
namespace {

namespace fs = std::filesystem;

std::string ReadSysfsRo(int number) {
  std::ifstream in(absl::StrCat("/sys/block/loop", number, "/ro"));
  std::string value;
  in >> value;
  return value;
}

class LoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    if (access("/dev/loop-control", F_OK) != 0) {
      GTEST_SKIP() << "no /dev/loop-control";
    }
    static std::atomic<int> counter{0};
    dir_ = absl::StrCat("/tmp/thinpool_loop_test.", getpid(), ".", counter++);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (dir_.empty()) return;
    // Anything a failed test left attached to our files goes away here.
    auto all = LoopDevice::List();
    if (all.ok()) {
      for (const auto& info : *all) {
        if (info.backing_file.rfind(dir_, 0) == 0) {
          (void)DetachLoopDevice(info.device, absl::Seconds(2));
        }
      }
    }
    if (tmpfs_mounted_) umount2(tmpfs_dir().c_str(), MNT_DETACH);
    fs::remove_all(dir_);
  }

  std::string tmpfs_dir() const { return dir_ + "/tmpfs"; }

  std::string MakeFile(const std::string& name, off_t size,
                       const std::string& in_dir = "") {
    std::string path = (in_dir.empty() ? dir_ : in_dir) + "/" + name;
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0) << strerror(errno);
    EXPECT_EQ(ftruncate(fd, size), 0);
    close(fd);
    return path;
  }

  bool AttachedTo(const std::string& file) {
    auto found = LoopDevice::FindByBackingFile(file);
    EXPECT_TRUE(found.ok()) << found.status();
    return found.ok() && found->has_value();
  }

  // Waits up to ~2 s for `file` to have no loop device.
  bool EventuallyDetached(const std::string& file) {
    for (int i = 0; i < 200; ++i) {
      if (!AttachedTo(file)) return true;
      usleep(10000);
    }
    return false;
  }

  std::string dir_;
  bool tmpfs_mounted_ = false;
};

TEST_F(LoopTest, AttachWriteReadDetach) {
  std::string file = MakeFile("data", 64 << 20);
  auto loop = LoopDevice::Attach(file);
  ASSERT_TRUE(loop.ok()) << loop.status();
  EXPECT_TRUE(loop->owned());
  EXPECT_EQ(loop->path(), absl::StrCat("/dev/loop", loop->number()));

  auto info = loop->Info();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->backing_file, file);
  EXPECT_FALSE(info->read_only);
  EXPECT_FALSE(info->autoclear);
  auto size = loop->SizeBytes();
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 64u << 20);

  // Bytes written through the loop device land in the file.
  std::string pattern(4096, 'x');
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = char('a' + i % 26);
  int dev = open(loop->path().c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(dev, 0);
  ASSERT_EQ(pwrite(dev, pattern.data(), pattern.size(), 1 << 20),
            ssize_t(pattern.size()));
  ASSERT_EQ(fsync(dev), 0);
  close(dev);
  int f = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  std::string back(pattern.size(), '\0');
  ASSERT_EQ(pread(f, back.data(), back.size(), 1 << 20), ssize_t(back.size()));
  close(f);
  EXPECT_EQ(back, pattern);

  ASSERT_TRUE(AttachedTo(file));
  ASSERT_TRUE(loop->Detach().ok());
  EXPECT_FALSE(AttachedTo(file));
}

TEST_F(LoopTest, DestructorDetachesOwnedDevice) {
  std::string file = MakeFile("data", 8 << 20);
  {
    auto loop = LoopDevice::Attach(file);
    ASSERT_TRUE(loop.ok()) << loop.status();
    ASSERT_TRUE(AttachedTo(file));
  }
  EXPECT_TRUE(EventuallyDetached(file));
}

TEST_F(LoopTest, ReleaseKeepsDeviceAttached) {
  std::string file = MakeFile("data", 8 << 20);
  std::string device;
  {
    auto loop = LoopDevice::Attach(file);
    ASSERT_TRUE(loop.ok()) << loop.status();
    device = loop->path();
    loop->Release();
  }
  auto found = LoopDevice::FindByBackingFile(file);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->path(), device);
  EXPECT_FALSE((*found)->owned());
  found->reset();  // an open handle would itself keep the device busy
  ASSERT_TRUE(DetachLoopDevice(device).ok());
  EXPECT_FALSE(AttachedTo(file));
}

TEST_F(LoopTest, FindByBackingFileMatchesInodeNotPath) {
  std::string file = MakeFile("data", 8 << 20);
  std::string other = MakeFile("other", 8 << 20);
  std::string link = dir_ + "/link";
  ASSERT_EQ(symlink(file.c_str(), link.c_str()), 0);
  std::string hard = dir_ + "/hard";
  ASSERT_EQ(::link(file.c_str(), hard.c_str()), 0);

  auto loop = LoopDevice::Attach(file);
  ASSERT_TRUE(loop.ok()) << loop.status();
  for (const std::string& alias : {file, link, hard, dir_ + "/./data"}) {
    auto found = LoopDevice::FindByBackingFile(alias);
    ASSERT_TRUE(found.ok()) << found.status();
    ASSERT_TRUE(found->has_value()) << alias;
    EXPECT_EQ((*found)->number(), loop->number());
  }
  auto none = LoopDevice::FindByBackingFile(other);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  auto missing = LoopDevice::FindByBackingFile(dir_ + "/missing");
  EXPECT_TRUE(base::HasErrno(missing.status(), ENOENT)) << missing.status();

  auto all = LoopDevice::List();
  ASSERT_TRUE(all.ok());
  int seen = 0;
  for (const auto& info : *all) seen += info.number == loop->number();
  EXPECT_EQ(seen, 1);
}

TEST_F(LoopTest, CapacityFollowsGrowthAfterRefresh) {
  std::string file = MakeFile("data", 16 << 20);
  auto loop = LoopDevice::Attach(file);
  ASSERT_TRUE(loop.ok()) << loop.status();
  ASSERT_EQ(*loop->SizeBytes(), 16u << 20);
  ASSERT_EQ(truncate(file.c_str(), 48 << 20), 0);
  EXPECT_EQ(*loop->SizeBytes(), 16u << 20);  // not until told
  ASSERT_TRUE(loop->RefreshCapacity().ok());
  EXPECT_EQ(*loop->SizeBytes(), 48u << 20);
  // The new tail is usable.
  int dev = open(loop->path().c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(dev, 0);
  char block[512] = {'z'};
  EXPECT_EQ(pwrite(dev, block, sizeof block, (48 << 20) - 512), 512);
  close(dev);
}

TEST_F(LoopTest, ReadOnlyRefusesWrites) {
  std::string file = MakeFile("data", 8 << 20);
  LoopOptions options;
  options.read_only = true;
  auto loop = LoopDevice::Attach(file, options);
  ASSERT_TRUE(loop.ok()) << loop.status();
  EXPECT_TRUE(loop->Info()->read_only);
  EXPECT_EQ(ReadSysfsRo(loop->number()), "1");
  int dev = open(loop->path().c_str(), O_RDWR | O_CLOEXEC);
  if (dev >= 0) {
    char block[512] = {};
    EXPECT_LT(pwrite(dev, block, sizeof block, 0), 0);
    close(dev);
  } else {
    EXPECT_EQ(errno, EROFS);
  }
}

TEST_F(LoopTest, AutoclearDetachesWhenLastUserCloses) {
  std::string file = MakeFile("data", 8 << 20);
  LoopOptions options;
  options.autoclear = true;
  auto loop = LoopDevice::Attach(file, options);
  ASSERT_TRUE(loop.ok()) << loop.status();
  EXPECT_TRUE(loop->Info()->autoclear);
  int user = open(loop->path().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(user, 0);
  loop->Release();  // our fd closes; the other user keeps it alive
  EXPECT_TRUE(AttachedTo(file));
  close(user);
  EXPECT_TRUE(EventuallyDetached(file));
}

TEST_F(LoopTest, SetAutoclearLater) {
  std::string file = MakeFile("data", 8 << 20);
  auto loop = LoopDevice::Attach(file);
  ASSERT_TRUE(loop.ok()) << loop.status();
  ASSERT_TRUE(loop->SetAutoclear(true).ok());
  EXPECT_TRUE(loop->Info()->autoclear);
  ASSERT_TRUE(loop->SetAutoclear(false).ok());
  EXPECT_FALSE(loop->Info()->autoclear);
}

TEST_F(LoopTest, LegacySetupPath) {
  std::string file = MakeFile("data", 8 << 20);
  LoopOptions options;
  options.force_legacy_setup = true;
  options.autoclear = true;
  options.read_only = true;
  auto loop = LoopDevice::Attach(file, options);
  ASSERT_TRUE(loop.ok()) << loop.status();
  auto info = loop->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->read_only);
  EXPECT_TRUE(info->autoclear);
  EXPECT_EQ(info->backing_file, file);
  EXPECT_EQ(*loop->SizeBytes(), 8u << 20);
  ASSERT_TRUE(loop->Detach().ok());
  EXPECT_FALSE(AttachedTo(file));
}

TEST_F(LoopTest, DirectIoFollowsBackingFilesystem) {
  std::string file = MakeFile("data", 8 << 20);
  auto loop = LoopDevice::Attach(file);
  ASSERT_TRUE(loop.ok()) << loop.status();
  // /tmp here is a disk filesystem that supports O_DIRECT.
  int probe = open(file.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  bool fs_has_dio = probe >= 0;
  if (probe >= 0) close(probe);
  EXPECT_EQ(loop->direct_io(), fs_has_dio);

  fs::create_directories(tmpfs_dir());
  ASSERT_EQ(mount("tmpfs", tmpfs_dir().c_str(), "tmpfs", 0, "size=64m"), 0)
      << strerror(errno);
  tmpfs_mounted_ = true;
  std::string tfile = MakeFile("data", 8 << 20, tmpfs_dir());
  // tmpfs gained O_DIRECT in Linux 6.6; older kernels refuse it with EINVAL
  // and the attach must fall back to buffered I/O.
  probe = open(tfile.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  bool tmpfs_has_dio = probe >= 0;
  if (probe >= 0) close(probe);
  auto tloop = LoopDevice::Attach(tfile);
  ASSERT_TRUE(tloop.ok()) << tloop.status();
  EXPECT_EQ(tloop->direct_io(), tmpfs_has_dio);
  LoopOptions buffered;
  buffered.direct_io = false;
  auto bloop = LoopDevice::Attach(file, buffered);
  ASSERT_TRUE(bloop.ok()) << bloop.status();
  EXPECT_FALSE(bloop->direct_io());
  ASSERT_TRUE(tloop->Detach().ok());
}

TEST_F(LoopTest, DetachWhileBusyReportsEbusyThenClears) {
  std::string file = MakeFile("data", 8 << 20);
  auto loop = LoopDevice::Attach(file);
  ASSERT_TRUE(loop.ok()) << loop.status();
  int user = open(loop->path().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(user, 0);
  absl::Status status = loop->Detach(absl::Milliseconds(200));
  EXPECT_TRUE(base::HasErrno(status, EBUSY)) << status;
  EXPECT_TRUE(AttachedTo(file));
  close(user);
  EXPECT_TRUE(EventuallyDetached(file));
}

TEST_F(LoopTest, ConcurrentAttachesGetDistinctDevices) {
  constexpr int kThreads = 8;
  constexpr int kRounds = 4;
  std::vector<std::string> files;
  for (int i = 0; i < kThreads; ++i) {
    files.push_back(MakeFile(absl::StrCat("f", i), 4 << 20));
  }
  std::atomic<int> failures{0};
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        auto loop = LoopDevice::Attach(files[t]);
        if (!loop.ok()) {
          ++failures;
          std::lock_guard<std::mutex> lock(mu);
          errors.push_back(std::string(loop.status().message()));
          continue;
        }
        // Each device must be backed by this thread's own file.
        auto info = loop->Info();
        if (!info.ok() || info->backing_file != files[t]) ++failures;
        if (!loop->Detach().ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0) << (errors.empty() ? "" : errors[0]);
  for (const auto& f : files) EXPECT_FALSE(AttachedTo(f));
}

TEST_F(LoopTest, SimultaneousHoldersAreDistinct) {
  constexpr int kThreads = 6;
  std::vector<std::string> files;
  for (int i = 0; i < kThreads; ++i) {
    files.push_back(MakeFile(absl::StrCat("g", i), 4 << 20));
  }
  std::vector<std::optional<LoopDevice>> loops(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto loop = LoopDevice::Attach(files[t]);
      if (loop.ok()) loops[t].emplace(std::move(*loop));
    });
  }
  for (auto& th : threads) th.join();
  std::set<int> numbers;
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_TRUE(loops[t].has_value());
    numbers.insert(loops[t]->number());
    EXPECT_EQ(loops[t]->Info()->backing_file, files[t]);
  }
  EXPECT_EQ(numbers.size(), size_t(kThreads));
}

TEST_F(LoopTest, BadInput) {
  auto missing = LoopDevice::Attach(dir_ + "/missing");
  EXPECT_TRUE(base::HasErrno(missing.status(), ENOENT)) << missing.status();
  EXPECT_NE(missing.status().message().find("missing"), absl::string_view::npos);

  auto dir = LoopDevice::Attach(dir_);
  EXPECT_FALSE(dir.ok());

  auto empty = LoopDevice::Attach("");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);

  auto not_loop = LoopDevice::Open("/dev/null");
  EXPECT_EQ(not_loop.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace thinpool
