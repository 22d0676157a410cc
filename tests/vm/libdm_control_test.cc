// libdm against the real kernel: every ioctl command, linear/zero/error/
// flakey devices, a thin-pool on loop devices with thins and snapshots, and
// the cross-check with dmsetup (the reference client).
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/hdreg.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libdm/control.h"
#include "tests/support/cleanup_stack.h"
#include "tests/support/process.h"

namespace dm {
namespace {

void NoopHandler(int) {}
// SIGUSR1 interrupts a blocking ioctl (no SA_RESTART).
const bool kSigusr1Installed = [] {
  struct sigaction sa = {};
  sa.sa_handler = NoopHandler;
  sigaction(SIGUSR1, &sa, nullptr);
  return true;
}();

using ::testing::HasSubstr;

#define ASSERT_OK(expr)                                  \
  do {                                                   \
    const absl::Status s_ = (expr);                      \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_;         \
  } while (0)
#define ASSERT_OK_AND_ASSIGN(lhs, expr)                  \
  auto DMTHIN_CONCAT_(sor_, __LINE__) = (expr);          \
  ASSERT_TRUE(DMTHIN_CONCAT_(sor_, __LINE__).ok())       \
      << #expr << ": " << DMTHIN_CONCAT_(sor_, __LINE__).status(); \
  lhs = std::move(DMTHIN_CONCAT_(sor_, __LINE__)).value()

std::string Trim(absl::string_view s) { return std::string(absl::StripAsciiWhitespace(s)); }

class LibdmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/proc/misc", R_OK) != 0 || access("/dev/mapper/control", F_OK) != 0)
      GTEST_SKIP() << "no device-mapper here: run inside tests/vm/run";
    auto c = Control::Open();
    ASSERT_TRUE(c.ok()) << c.status();
    dm_ = *std::move(c);
    prefix_ = testsupport::UniqueName("ldm");
    dir_ = "/tmp/" + prefix_;
    std::filesystem::create_directories(dir_);
    cleanup_.Push([this] { std::filesystem::remove_all(dir_); });
    // Registered first, so it runs last: no device of ours outlives the test.
    cleanup_.Push([this] { RemoveOurDevices(); });
  }
  void TearDown() override { cleanup_.RunAll(); }

  void RemoveOurDevices() {
    for (int round = 0; round < 3; ++round) {
      auto list = dm_->List();
      if (!list.ok()) return;
      bool any = false;
      for (const auto& d : *list) {
        if (d.name.rfind(prefix_, 0) != 0) continue;
        any = true;
        RemoveOptions o;
        o.retries = 3;
        (void)dm_->Remove(DevNum(d.dev), o);
      }
      if (!any) break;
    }
    (void)dm_->SyncNodes();
  }

  Name N(const std::string& suffix) { return Name::OrDie(prefix_ + "-" + suffix); }

  // A loop device over a sparse file in /tmp; detached at the end.
  DevNum Loop(const std::string& file_name, uint64_t bytes) {
    std::string file = dir_ + "/" + file_name;
    int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(bytes)), 0);
    ::close(fd);
    auto r = testsupport::Run({"losetup", "--find", "--show", file});
    EXPECT_TRUE(r.ok()) << r.Describe();
    std::string dev = Trim(r.out);
    cleanup_.Push([dev] { testsupport::Run({"losetup", "-d", dev}); });
    auto d = DevNum::FromPath(dev);
    EXPECT_TRUE(d.ok()) << d.status();
    loop_paths_[d->ToString()] = dev;
    return *d;
  }

  std::string Dmsetup(std::vector<std::string> args) {
    args.insert(args.begin(), "dmsetup");
    auto r = testsupport::Run(args);
    EXPECT_TRUE(r.ok()) << r.Describe();
    return r.out;
  }

  std::unique_ptr<Control> dm_;
  std::string prefix_;
  std::string dir_;
  std::map<std::string, std::string> loop_paths_;
  testsupport::CleanupStack cleanup_;
};

TEST_F(LibdmTest, VersionAndTargets) {
  ASSERT_OK_AND_ASSIGN(Version v, dm_->QueryVersion());
  EXPECT_EQ(v.major, 4u);
  EXPECT_EQ(v, dm_->version());
  ASSERT_OK_AND_ASSIGN(auto versions, dm_->ListVersions());
  std::set<std::string> names;
  for (const auto& t : versions) names.insert(t.name);
  EXPECT_TRUE(names.count("linear") && names.count("error") && names.count("thin-pool"));
  ASSERT_OK_AND_ASSIGN(Version tp, dm_->TargetVersion("thin-pool"));
  EXPECT_GE(tp, (Version{1, 0, 0}));
  EXPECT_TRUE(dm_->RequireTarget("thin-pool", {1, 0, 0}).ok());
  absl::Status too_new = dm_->RequireTarget("thin-pool", {99, 0, 0});
  EXPECT_EQ(too_new.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(too_new.message(), HasSubstr("need 99.0.0"));
  absl::Status missing = dm_->TargetVersion("no-such-target").status();
  EXPECT_FALSE(missing.ok());
}

TEST_F(LibdmTest, LinearLifecycleAndNodes) {
  DevNum loop = Loop("lin", 8 << 20);
  Name name = N("lin");
  Uuid uuid = Uuid::OrDie("DMTHIN-TEST-" + prefix_);
  Table table = Table::Single(Sectors(16384), LinearTarget{loop, Sectors(0)});
  CreateOptions co;
  co.uuid = uuid;
  ASSERT_OK_AND_ASSIGN(DeviceInfo info, dm_->CreateDevice(name, table, co));
  EXPECT_TRUE(info.live_table());
  EXPECT_FALSE(info.suspended());
  EXPECT_EQ(info.name, name.str());
  EXPECT_EQ(info.uuid, uuid.str());
  // The node exists and names the device.
  ASSERT_OK_AND_ASSIGN(DevNum node_dev, DevNum::FromPath(dm_->NodePath(name.str())));
  EXPECT_EQ(node_dev, info.dev);
  // Addressed by name, uuid and number alike.
  for (DevId id : {DevId(name), DevId(uuid), DevId(info.dev)}) {
    ASSERT_OK_AND_ASSIGN(DeviceInfo again, dm_->Info(id));
    EXPECT_EQ(again.dev, info.dev) << id.ToString();
    EXPECT_EQ(again.name, name.str());
  }
  ASSERT_OK_AND_ASSIGN(Table live, dm_->GetTable(name));
  EXPECT_EQ(live, table);
  ASSERT_OK_AND_ASSIGN(auto status, dm_->Status(name));
  ASSERT_EQ(status.size(), 1u);
  EXPECT_EQ(status[0].type, "linear");
  ASSERT_OK_AND_ASSIGN(auto deps, dm_->Deps(name));
  EXPECT_THAT(deps, ::testing::ElementsAre(loop));
  ASSERT_OK_AND_ASSIGN(auto list, dm_->List());
  bool listed = false;
  for (const auto& d : list)
    if (d.name == name.str()) {
      listed = true;
      EXPECT_EQ(d.dev, info.dev);
      if (d.uuid_known) {
        EXPECT_EQ(d.uuid, uuid.str());
      }
    }
  EXPECT_TRUE(listed);
  ASSERT_OK_AND_ASSIGN(Removal r, dm_->Remove(name));
  EXPECT_EQ(r, Removal::kRemoved);
  EXPECT_FALSE(std::filesystem::exists(dm_->NodePath(name.str())));
  ASSERT_OK_AND_ASSIGN(auto gone, dm_->Find(name));
  EXPECT_FALSE(gone.has_value());
}

TEST_F(LibdmTest, ZeroAndErrorTargetsReadAsTheySay) {
  Name name = N("ze");
  Table table({Target{Sectors(0), Sectors(64), ZeroTarget{}},
               Target{Sectors(64), Sectors(64), ErrorTarget{}}});
  ASSERT_OK_AND_ASSIGN(DeviceInfo info, dm_->CreateDevice(name, table));
  ASSERT_OK_AND_ASSIGN(Table live, dm_->GetTable(info.dev));
  EXPECT_EQ(live, table);
  int fd = ::open(dm_->NodePath(name.str()).c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
  ASSERT_GE(fd, 0) << strerror(errno);
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, 4096), 0);
  std::memset(buf, 0xab, 4096);
  EXPECT_EQ(::pread(fd, buf, 4096, 0), 4096);
  EXPECT_EQ(static_cast<unsigned char*>(buf)[100], 0);
  EXPECT_EQ(::pread(fd, buf, 4096, 64 * 512), -1);
  EXPECT_EQ(errno, EIO);
  ::close(fd);
  free(buf);
}

TEST_F(LibdmTest, SuspendResume) {
  Name name = N("sus");
  ASSERT_OK(dm_->CreateDevice(name, Table::Single(Sectors(8), ZeroTarget{})).status());
  SuspendOptions so;
  so.noflush = true;
  so.skip_lockfs = true;
  ASSERT_OK_AND_ASSIGN(DeviceInfo s, dm_->Suspend(name, so));
  EXPECT_TRUE(s.suspended());
  ASSERT_OK_AND_ASSIGN(DeviceInfo i, dm_->Info(name));
  EXPECT_TRUE(i.suspended());
  ASSERT_OK_AND_ASSIGN(DeviceInfo r, dm_->Resume(name));
  EXPECT_FALSE(r.suspended());
  ASSERT_OK(dm_->Suspend(name).status());
  ASSERT_OK(dm_->Resume(name).status());
  EXPECT_FALSE(dm_->Info(name)->suspended());
}

TEST_F(LibdmTest, InactiveTableLoadQueryClear) {
  DevNum loop = Loop("inact", 1 << 20);
  Name name = N("inact");
  Table linear = Table::Single(Sectors(2048), LinearTarget{loop, Sectors(0)});
  Table zero = Table::Single(Sectors(4096), ZeroTarget{});
  ASSERT_OK(dm_->CreateDevice(name, linear).status());
  ASSERT_OK(dm_->Load(name, zero));
  ASSERT_OK_AND_ASSIGN(DeviceInfo info, dm_->Info(name));
  EXPECT_TRUE(info.inactive_table());
  EXPECT_EQ(*dm_->GetTable(name, /*inactive=*/true), zero);
  EXPECT_EQ(*dm_->GetTable(name), linear);
  EXPECT_TRUE(dm_->Deps(name, true)->empty());
  EXPECT_EQ(dm_->Deps(name)->size(), 1u);
  StatusOptions so;
  so.inactive = true;
  ASSERT_OK_AND_ASSIGN(auto st, dm_->Status(name, so));
  ASSERT_EQ(st.size(), 1u);
  EXPECT_EQ(st[0].type, "zero");
  ASSERT_OK(dm_->ClearInactive(name));
  EXPECT_FALSE(dm_->Info(name)->inactive_table());
  EXPECT_TRUE(dm_->GetTable(name, true)->empty());
  // Reload swaps atomically; the new size shows through the node.
  ASSERT_OK(dm_->Reload(name, zero).status());
  EXPECT_EQ(*dm_->GetTable(name), zero);
  int fd = ::open(dm_->NodePath(name.str()).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  uint64_t bytes = 0;
  ASSERT_EQ(::ioctl(fd, BLKGETSIZE64, &bytes), 0);
  ::close(fd);
  EXPECT_EQ(bytes, 4096u * 512);
}

TEST_F(LibdmTest, RenameAndSetUuid) {
  Name a = N("ren-a"), b = N("ren-b");
  ASSERT_OK_AND_ASSIGN(DeviceInfo info, dm_->CreateDevice(a, Table::Single(Sectors(8), ZeroTarget{})));
  ASSERT_OK(dm_->Rename(a, b));
  EXPECT_FALSE(dm_->Find(a)->has_value());
  EXPECT_EQ((*dm_->Info(b)).dev, info.dev);
  EXPECT_FALSE(std::filesystem::exists(dm_->NodePath(a.str())));
  EXPECT_EQ(*DevNum::FromPath(dm_->NodePath(b.str())), info.dev);
  Uuid u = Uuid::OrDie("DMTHIN-REN-" + prefix_);
  ASSERT_OK(dm_->SetUuid(b, u));
  EXPECT_EQ(dm_->Info(u)->name, b.str());
  // A uuid is set once.
  absl::Status again = dm_->SetUuid(b, Uuid::OrDie("other-" + prefix_));
  EXPECT_TRUE(base::HasErrno(again, EINVAL)) << again;
  // Rename by uuid (the kernel wants a name: looked up first), back to a.
  ASSERT_OK(dm_->Rename(u, a));
  EXPECT_EQ(dm_->Info(a)->uuid, u.str());
  // Renaming onto an existing name is EBUSY.
  ASSERT_OK(dm_->CreateDevice(b, Table::Single(Sectors(8), ZeroTarget{})).status());
  absl::Status clash = dm_->Rename(a, b);
  EXPECT_TRUE(base::HasErrno(clash, EBUSY)) << clash;
  EXPECT_THAT(clash.message(), HasSubstr("DM_DEV_RENAME"));
}

TEST_F(LibdmTest, Geometry) {
  Name name = N("geo");
  ASSERT_OK(dm_->CreateDevice(name, Table::Single(Sectors(1 << 16), ZeroTarget{})).status());
  ASSERT_OK(dm_->SetGeometry(name, Geometry{64, 16, 63, 0}));
  int fd = ::open(dm_->NodePath(name.str()).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  struct hd_geometry g;
  ASSERT_EQ(::ioctl(fd, HDIO_GETGEO, &g), 0) << strerror(errno);
  ::close(fd);
  EXPECT_EQ(g.cylinders, 64);
  EXPECT_EQ(g.heads, 16);
  EXPECT_EQ(g.sectors, 63);
  EXPECT_FALSE(dm_->SetGeometry(name, Geometry{70000, 1, 1, 0}).ok());
  // start beyond c*h*s: the kernel refuses.
  absl::Status s = dm_->SetGeometry(name, Geometry{1, 1, 1, 5});
  EXPECT_TRUE(base::HasErrno(s, EINVAL)) << s;
}

// DEV_ARM_POLL: the control fd polls readable after any dm event
// (suspend/resume/remove issue one).
TEST_F(LibdmTest, ArmPollSeesEvents) {
  Name name = N("ev");
  ASSERT_OK(dm_->CreateDevice(name, Table::Single(Sectors(8), ZeroTarget{})).status());
  ASSERT_OK_AND_ASSIGN(EventPoller poller, EventPoller::Open(*dm_));
  ASSERT_OK(poller.Arm());
  EXPECT_FALSE(*poller.Wait(absl::ZeroDuration()));
  // Suspend/resume issue no global event; create, rename and remove do.
  ASSERT_OK(dm_->Suspend(name).status());
  ASSERT_OK(dm_->Resume(name).status());
  EXPECT_FALSE(*poller.Wait(absl::ZeroDuration()));
  ASSERT_OK(dm_->Create(N("ev2")).status());
  EXPECT_TRUE(*poller.Wait(absl::Seconds(5)));
  ASSERT_OK(poller.Arm());
  EXPECT_FALSE(*poller.Wait(absl::ZeroDuration()));
  ASSERT_OK(dm_->Remove(N("ev2")).status());
  EXPECT_TRUE(*poller.Wait(absl::Seconds(5)));
  ASSERT_OK(poller.Arm());
  EXPECT_FALSE(*poller.Wait(absl::Milliseconds(10)));
}

TEST_F(LibdmTest, BusyRemoveRetriesThenDeferredRemoveCompletesOnClose) {
  Name name = N("busy");
  ASSERT_OK_AND_ASSIGN(DeviceInfo info, dm_->CreateDevice(name, Table::Single(Sectors(8), ZeroTarget{})));
  std::string node = dm_->NodePath(name.str());
  int fd = ::open(node.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  RemoveOptions quick;
  quick.retries = 2;
  quick.backoff = absl::Milliseconds(1);
  absl::Time t0 = absl::Now();
  absl::Status busy = dm_->Remove(name, quick).status();
  EXPECT_TRUE(base::HasErrno(busy, EBUSY)) << busy;
  EXPECT_THAT(busy.message(), HasSubstr("after 2 retries"));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2));
  ASSERT_TRUE(GetReturnedHeader(busy).has_value());
  EXPECT_THAT(*GetReturnedHeader(busy), HasSubstr("version 4."));
  EXPECT_EQ(*GetCommand(busy), "DM_DEV_REMOVE");

  RemoveOptions deferred;
  deferred.deferred = true;
  ASSERT_OK_AND_ASSIGN(Removal r, dm_->Remove(name, deferred));
  EXPECT_EQ(r, Removal::kDeferred);
  EXPECT_TRUE(dm_->Info(name)->deferred_remove());
  EXPECT_FALSE(std::filesystem::exists(node));  // no new openers
  // Cancel, and the node is back.
  ASSERT_OK(dm_->CancelDeferredRemove(name));
  EXPECT_FALSE(dm_->Info(name)->deferred_remove());
  EXPECT_EQ(*DevNum::FromPath(node), info.dev);
  // Defer again; the last close removes the device.
  ASSERT_EQ(*dm_->Remove(name, deferred), Removal::kDeferred);
  EXPECT_TRUE(dm_->Find(name)->has_value());
  ::close(fd);
  for (int i = 0; i < 100 && dm_->Find(name)->has_value(); ++i) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_FALSE(dm_->Find(name)->has_value());
  EXPECT_FALSE(std::filesystem::exists(node));
}

TEST_F(LibdmTest, RemoveAll) {
  ASSERT_OK(dm_->CreateDevice(N("all-1"), Table::Single(Sectors(8), ZeroTarget{})).status());
  ASSERT_OK(dm_->Create(N("all-2")).status());
  ASSERT_OK(dm_->RemoveAll());
  EXPECT_FALSE(dm_->Find(N("all-1"))->has_value());
  EXPECT_FALSE(dm_->Find(N("all-2"))->has_value());
  EXPECT_FALSE(std::filesystem::exists(dm_->NodePath(N("all-1").str())));
}

TEST_F(LibdmTest, ErrorsCarryErrnoCommandAndDevice) {
  Name name = N("nope");
  absl::Status s = dm_->Info(name).status();
  EXPECT_TRUE(base::HasErrno(s, ENXIO)) << s;
  EXPECT_THAT(s.message(), HasSubstr("DM_DEV_STATUS name=" + name.str()));
  ASSERT_OK_AND_ASSIGN(DeviceInfo created, dm_->Create(name));
  absl::Status dup = dm_->Create(name).status();
  EXPECT_TRUE(base::HasErrno(dup, EBUSY)) << dup;
  // A table naming a device that does not exist (a dm minor nobody has;
  // loop minors would be created on open).
  absl::Status bad = dm_->Load(
      name, Table::Single(Sectors(8), LinearTarget{{created.dev.major, 1048000}, Sectors(0)}));
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(bad.message(), HasSubstr("DM_TABLE_LOAD"));
  // A device without a table: no status lines, resume makes no node.
  EXPECT_TRUE(dm_->Status(name)->empty());
  ASSERT_OK(dm_->Resume(name).status());
  EXPECT_FALSE(std::filesystem::exists(dm_->NodePath(name.str())));
  absl::Status msg = dm_->Message(name, Sectors(0), "create_thin 1").status();
  EXPECT_FALSE(msg.ok());
  EXPECT_THAT(msg.message(), HasSubstr("DM_TARGET_MSG"));
}

TEST_F(LibdmTest, ListGrowsItsBuffer) {
  // ~60 devices with long names and uuids need more than 16 KiB.
  const int n = 60;
  for (int i = 0; i < n; ++i) {
    std::string suffix = absl::StrCat("long-", i, "-", std::string(90, 'x'));
    CreateOptions o;
    o.uuid = Uuid::OrDie(absl::StrCat("DMTHIN-", prefix_, "-", i, "-", std::string(100, 'u')));
    ASSERT_OK(dm_->Create(N(suffix), o).status());
  }
  ASSERT_OK_AND_ASSIGN(auto list, dm_->List());
  int ours = 0;
  for (const auto& d : list)
    if (d.name.rfind(prefix_, 0) == 0) {
      ++ours;
      if (d.uuid_known) {
        ASSERT_TRUE(d.uuid.has_value());
        EXPECT_THAT(*d.uuid, HasSubstr("DMTHIN-" + prefix_));
      }
    }
  EXPECT_EQ(ours, n);
}

TEST_F(LibdmTest, ConcurrentUseOfOneControl) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        Name name = N(absl::StrCat("mt-", t, "-", i));
        auto info = dm_->CreateDevice(name, Table::Single(Sectors(8 * (i + 1)), ZeroTarget{}));
        auto table = dm_->GetTable(name);
        auto list = dm_->List();
        auto removed = dm_->Remove(name);
        if (!info.ok() || !table.ok() || !list.ok() || !removed.ok() ||
            table->size() != Sectors(8 * (i + 1)))
          ++failures;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(LibdmTest, FlakeyTable) {
  DevNum loop = Loop("flakey", 1 << 20);
  Name name = N("flakey");
  FlakeyTarget f{loop, Sectors(0), 1, 1, FlakeyTarget::DownMode::kErrorWrites, std::nullopt};
  Table table = Table::Single(Sectors(2048), f);
  auto info = dm_->CreateDevice(name, table);
  if (!info.ok() && absl::IsNotFound(dm_->TargetVersion("flakey").status()))
    GTEST_SKIP() << "no dm-flakey";
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(*dm_->GetTable(name), table);
}

// ---- thin-pool, thins, snapshots, messages.

class ThinPoolTest : public LibdmTest {
 protected:
  void SetUp() override {
    LibdmTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    meta_ = Loop("meta", 16 << 20);
    data_ = Loop("data", 256 << 20);
    // Zeroing the first 4 KiB of the metadata device makes a new pool.
    int fd = ::open(loop_paths_[meta_.ToString()].c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    char zero[4096] = {};
    ASSERT_EQ(::pwrite(fd, zero, sizeof zero, 0), 4096);
    ::fsync(fd);
    ::close(fd);
    pool_ = N("pool");
    pool_table_ = Table::Single(Sectors((256 << 20) / 512),
                                ThinPoolTarget{meta_, data_, Sectors(128), DataBlocks(16)});
    auto info = dm_->CreateDevice(*pool_, pool_table_);
    ASSERT_TRUE(info.ok()) << info.status();
    pool_dev_ = info->dev;
  }

  DevNum meta_, data_, pool_dev_;
  std::optional<Name> pool_;  // no default Name
  Table pool_table_;
};

TEST_F(ThinPoolTest, StatusTableAndDeps) {
  ASSERT_OK_AND_ASSIGN(ThinPoolStatus s, dm_->GetThinPoolStatus(*pool_));
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.transaction_id, 0u);
  EXPECT_EQ(s.mode, ThinPoolStatus::Mode::kReadWrite);
  EXPECT_EQ(s.total_data, DataBlocks((256 << 20) / (128 * 512)));
  EXPECT_EQ(s.total_metadata, MetaBlocks((16 << 20) / 4096));
  EXPECT_EQ(s.used_data, DataBlocks(0));
  EXPECT_FALSE(s.held_metadata_root.has_value());
  EXPECT_FALSE(s.needs_check);
  // The live table parses back to what we loaded: the pool can be adopted.
  ASSERT_OK_AND_ASSIGN(Table live, dm_->GetTable(*pool_));
  EXPECT_EQ(live, pool_table_);
  ASSERT_OK_AND_ASSIGN(auto lines, dm_->TableLines(*pool_));
  EXPECT_EQ(lines[0].params, pool_table_.targets()[0].FormatParams());
  ASSERT_OK_AND_ASSIGN(auto deps, dm_->Deps(*pool_));
  std::set<DevNum> got(deps.begin(), deps.end());
  EXPECT_EQ(got, (std::set<DevNum>{meta_, data_}));
  // noflush status works too.
  EXPECT_TRUE(dm_->GetThinPoolStatus(*pool_, /*noflush=*/true).ok());
}

TEST_F(ThinPoolTest, ThinsSnapshotsAndMessages) {
  ASSERT_OK(dm_->SendThinPoolMessage(*pool_, thin_msg::CreateThin{1}));
  Name thin = N("thin1");
  Table thin_table = Table::Single(Sectors(1 << 18), ThinTarget{pool_dev_, 1, std::nullopt});
  ASSERT_OK_AND_ASSIGN(DeviceInfo ti, dm_->CreateDevice(thin, thin_table));
  EXPECT_EQ(*dm_->GetTable(thin), thin_table);
  ASSERT_OK_AND_ASSIGN(ThinStatus ts, dm_->GetThinStatus(thin));
  EXPECT_EQ(ts.mapped, Sectors(0));
  EXPECT_FALSE(ts.highest_mapped.has_value());
  // Write 1 MiB of a pattern.
  std::string pattern(1 << 20, 'A');
  int fd = ::open(dm_->NodePath(thin.str()).c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, pattern.data(), pattern.size(), 0), static_cast<ssize_t>(pattern.size()));
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
  ts = *dm_->GetThinStatus(thin);
  EXPECT_EQ(ts.mapped, Sectors(2048));
  EXPECT_EQ(ts.highest_mapped, Sectors(2047));
  EXPECT_EQ(dm_->Deps(thin)->size(), 1u);

  // Snapshot of an active origin: suspend around create_snap.
  ASSERT_OK(dm_->Suspend(thin).status());
  ASSERT_OK(dm_->SendThinPoolMessage(*pool_, thin_msg::CreateSnap{2, 1}));
  ASSERT_OK(dm_->Resume(thin).status());
  Name snap = N("snap2");
  ASSERT_OK(dm_->CreateDevice(snap, Table::Single(Sectors(1 << 18), ThinTarget{pool_dev_, 2, std::nullopt}))
                .status());
  fd = ::open(dm_->NodePath(thin.str()).c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::string other(1 << 20, 'B');
  ASSERT_EQ(::pwrite(fd, other.data(), other.size(), 0), static_cast<ssize_t>(other.size()));
  ::fsync(fd);
  ::close(fd);
  fd = ::open(dm_->NodePath(snap.str()).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::string back(4096, '\0');
  ASSERT_EQ(::pread(fd, back.data(), back.size(), 0), 4096);
  ::close(fd);
  EXPECT_EQ(back, std::string(4096, 'A'));

  // Transaction id: compare-and-swap.
  ASSERT_OK(dm_->SendThinPoolMessage(*pool_, thin_msg::SetTransactionId{0, 1}));
  absl::Status cas = dm_->SendThinPoolMessage(*pool_, thin_msg::SetTransactionId{0, 2});
  EXPECT_TRUE(base::HasErrno(cas, EINVAL)) << cas;
  EXPECT_THAT(cas.message(), HasSubstr("set_transaction_id 0 2"));
  EXPECT_EQ(dm_->GetThinPoolStatus(*pool_)->transaction_id, 1u);

  // Metadata snapshot: held root shows, then goes.
  ASSERT_OK(dm_->SendThinPoolMessage(*pool_, thin_msg::ReserveMetadataSnap{}));
  EXPECT_TRUE(dm_->GetThinPoolStatus(*pool_)->held_metadata_root.has_value());
  ASSERT_OK(dm_->SendThinPoolMessage(*pool_, thin_msg::ReleaseMetadataSnap{}));
  EXPECT_FALSE(dm_->GetThinPoolStatus(*pool_)->held_metadata_root.has_value());

  // Delete: deactivate first; the pool refuses to delete an open thin.
  absl::Status busy_delete = dm_->SendThinPoolMessage(*pool_, thin_msg::Delete{2});
  EXPECT_FALSE(busy_delete.ok());
  ASSERT_OK(dm_->Remove(snap).status());
  ASSERT_OK(dm_->SendThinPoolMessage(*pool_, thin_msg::Delete{2}));
  absl::Status twice = dm_->SendThinPoolMessage(*pool_, thin_msg::Delete{2});
  EXPECT_FALSE(twice.ok());
  // create_thin of an existing id fails.
  EXPECT_FALSE(dm_->SendThinPoolMessage(*pool_, thin_msg::CreateThin{1}).ok());
  EXPECT_GT(dm_->GetThinPoolStatus(*pool_)->used_data, DataBlocks(0));
  (void)ti;
}

TEST_F(ThinPoolTest, LowWaterMarkRaisesAnEvent) {
  ASSERT_OK(dm_->SendThinPoolMessage(*pool_, thin_msg::CreateThin{1}));
  Name thin = N("lwm");
  ASSERT_OK(dm_->CreateDevice(thin, Table::Single(Sectors(1 << 19), ThinTarget{pool_dev_, 1, std::nullopt}))
                .status());
  // Reload the pool with a low-water mark just below its size.
  ThinPoolStatus before = *dm_->GetThinPoolStatus(*pool_);
  ThinPoolTarget tp = std::get<ThinPoolTarget>(pool_table_.targets()[0].params);
  tp.low_water_mark = DataBlocks(before.total_data.value() - 4);
  ASSERT_OK(dm_->Reload(*pool_, Table::Single(pool_table_.size(), tp)).status());
  ASSERT_OK_AND_ASSIGN(DeviceInfo info, dm_->Info(*pool_));
  absl::StatusOr<WaitResult> waited;
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    waited = dm_->WaitEvent(*pool_, info.event_nr);
    done = true;
  });
  // Watchdog: a wait that never ends is interrupted (EINTR) rather than
  // hanging the test.
  std::thread watchdog([&] {
    for (int i = 0; i < 300 && !done; ++i) absl::SleepFor(absl::Milliseconds(100));
    while (!done) {
      pthread_kill(waiter.native_handle(), SIGUSR1);
      absl::SleepFor(absl::Milliseconds(100));
    }
  });
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(done.load());  // nothing happened yet
  std::string data(1 << 20, 'x');
  int fd = ::open(dm_->NodePath(thin.str()).c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  ::fsync(fd);
  ::close(fd);
  waiter.join();
  watchdog.join();
  ASSERT_TRUE(waited.ok()) << waited.status();
  EXPECT_GT(waited->info.event_nr, info.event_nr);
  ASSERT_EQ(waited->status.size(), 1u);
  auto st = ParseThinPoolStatus(waited->status[0].params);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_GE(st->used_data, DataBlocks(4));
}

// ---- Cross-check with the reference client.

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  for (absl::string_view l : absl::StrSplit(s, '\n', absl::SkipEmpty()))
    out.push_back(std::string(absl::StripTrailingAsciiWhitespace(l)));
  return out;
}

class DmsetupCrossCheck : public ThinPoolTest {
 protected:
  void SetUp() override {
    if (!testsupport::HaveProgram("dmsetup")) GTEST_SKIP() << "no dmsetup";
    ThinPoolTest::SetUp();
  }
  // dmsetup's view of a device libdm made agrees with libdm's.
  void Agree(const Name& name) {
    SCOPED_TRACE(name.str());
    auto table_lines = dm_->TableLines(name);
    ASSERT_TRUE(table_lines.ok()) << table_lines.status();
    std::vector<std::string> ours;
    for (const auto& l : *table_lines)
      ours.push_back(std::string(absl::StripTrailingAsciiWhitespace(
          absl::StrCat(l.start, " ", l.length, " ", l.type, " ", l.params))));
    EXPECT_EQ(Lines(Dmsetup({"table", name.str()})), ours);
    auto status_lines = dm_->Status(name);
    ASSERT_TRUE(status_lines.ok()) << status_lines.status();
    std::vector<std::string> status;
    for (const auto& l : *status_lines)
      status.push_back(std::string(absl::StripTrailingAsciiWhitespace(
          absl::StrCat(l.start, " ", l.length, " ", l.type, " ", l.params))));
    EXPECT_EQ(Lines(Dmsetup({"status", name.str()})), status);
    DeviceInfo info = *dm_->Info(name);
    std::string row = Trim(Dmsetup({"info", "-c", "--noheadings", "--separator", "|", "-o",
                                    "name,uuid,major,minor,open,segments,events,attr",
                                    name.str()}));
    std::vector<std::string> f = absl::StrSplit(row, '|');
    ASSERT_EQ(f.size(), 8u) << row;
    EXPECT_EQ(f[0], info.name);
    EXPECT_EQ(f[1], info.uuid);
    EXPECT_EQ(f[2], absl::StrCat(info.dev.major));
    EXPECT_EQ(f[3], absl::StrCat(info.dev.minor));
    EXPECT_EQ(f[4], absl::StrCat(info.open_count));
    EXPECT_EQ(f[5], absl::StrCat(info.target_count));
    EXPECT_EQ(f[6], absl::StrCat(info.event_nr));
    ASSERT_GE(f[7].size(), 4u) << f[7];
    EXPECT_EQ(f[7][0] == 'L', info.live_table()) << f[7];
    EXPECT_EQ(f[7][1] == 'I', info.inactive_table()) << f[7];
    EXPECT_EQ(f[7][2] == 's', info.suspended()) << f[7];
    EXPECT_EQ(f[7][3] == 'r', info.read_only()) << f[7];
  }
};

TEST_F(DmsetupCrossCheck, DevicesLibdmMakes) {
  Agree(*pool_);
  ASSERT_OK(dm_->SendThinPoolMessage(*pool_, thin_msg::CreateThin{7}));
  Name thin = N("x-thin");
  CreateOptions co;
  co.uuid = Uuid::OrDie("DMTHIN-X-" + prefix_);
  ASSERT_OK(dm_->CreateDevice(thin, Table::Single(Sectors(2048), ThinTarget{pool_dev_, 7, std::nullopt}), co)
                .status());
  Agree(thin);
  DevNum loop = Loop("x", 1 << 20);
  Name mixed = N("x-mixed");
  ASSERT_OK(dm_->CreateDevice(mixed, Table({Target{Sectors(0), Sectors(1024), LinearTarget{loop, Sectors(16)}},
                                            Target{Sectors(1024), Sectors(8), ZeroTarget{}},
                                            Target{Sectors(1032), Sectors(8), ErrorTarget{}}}),
                              {}, /*read_only=*/true)
                .status());
  Agree(mixed);
  ASSERT_OK(dm_->Load(mixed, Table::Single(Sectors(8), ZeroTarget{})));
  ASSERT_OK(dm_->Suspend(mixed).status());
  Agree(mixed);  // inactive table + suspended
  ASSERT_OK(dm_->Resume(mixed).status());
}

TEST_F(DmsetupCrossCheck, DevicesDmsetupMakes) {
  Name name = N("by-dmsetup");
  std::string uuid = "DMTHIN-DS-" + prefix_;
  std::string table = absl::StrCat("0 2048 linear ", data_.ToString(), " 128\n2048 8 zero");
  Dmsetup({"create", name.str(), "--uuid", uuid, "--table", table});
  ASSERT_OK_AND_ASSIGN(auto list, dm_->List());
  bool found = false;
  for (const auto& d : list)
    if (d.name == name.str()) {
      found = true;
      if (d.uuid_known) {
        EXPECT_EQ(d.uuid, uuid);
      }
    }
  EXPECT_TRUE(found);
  ASSERT_OK_AND_ASSIGN(Table t, dm_->GetTable(name));
  EXPECT_EQ(t, (Table({Target{Sectors(0), Sectors(2048), LinearTarget{data_, Sectors(128)}},
                       Target{Sectors(2048), Sectors(8), ZeroTarget{}}})));
  ASSERT_OK_AND_ASSIGN(DeviceInfo info, dm_->Info(Uuid::OrDie(uuid)));
  EXPECT_EQ(info.name, name.str());
  Agree(name);
  // A thin made by dmsetup message + create.
  Dmsetup({"message", pool_->str(), "0", "create_thin 9"});
  Name thin = N("ds-thin");
  Dmsetup({"create", thin.str(), "--table", absl::StrCat("0 4096 thin ", pool_dev_.ToString(), " 9")});
  EXPECT_EQ(*dm_->GetTable(thin), Table::Single(Sectors(4096), ThinTarget{pool_dev_, 9, std::nullopt}));
  EXPECT_EQ(dm_->GetThinStatus(thin)->mapped, Sectors(0));
  Agree(thin);
}

// ---- udev mode: with a udevd running (started here when none is), nodes
// are udev's symlinks and libdm waits for them instead of making its own.

namespace udev_mode {

bool UdevdAlive() {
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string n = e.path().filename();
    if (n.empty() || !isdigit(static_cast<unsigned char>(n[0]))) continue;
    std::ifstream comm(e.path() / "comm");
    std::string c;
    if (std::getline(comm, c) && (c == "systemd-udevd" || c == "udevd")) return true;
  }
  return false;
}

class LibdmUdevTest : public LibdmTest {
 protected:
  static void SetUpTestSuite() {
    if (access("/dev/mapper/control", F_OK) != 0) return;
    if (access("/run/udev/control", F_OK) == 0 && UdevdAlive()) return;
    const char* udevd = "/lib/systemd/systemd-udevd";
    if (access(udevd, X_OK) != 0) return;
    std::filesystem::create_directories("/run/udev");
    pid_t pid = fork();
    if (pid == 0) {
      int null = open("/dev/null", O_RDWR);
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
      setenv("SYSTEMD_IGNORE_CHROOT", "1", 1);
      execl(udevd, "systemd-udevd", "--resolve-names=never", static_cast<char*>(nullptr));
      _exit(127);
    }
    started_ = pid;
    for (int i = 0; i < 100 && access("/run/udev/control", F_OK) != 0; ++i)
      absl::SleepFor(absl::Milliseconds(50));
  }
  static void TearDownTestSuite() {
    if (started_ > 0) {
      kill(started_, SIGTERM);
      waitpid(started_, nullptr, 0);
      started_ = -1;
      // udevd leaves its control socket behind; while it exists, libudev and
      // dmsetup's udev sync (which would wait forever for a cookie) believe
      // udev runs. Leave the guest as we found it.
      unlink("/run/udev/control");
    }
  }
  void SetUp() override {
    LibdmTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    if (access("/run/udev/control", F_OK) != 0 || !UdevdAlive())
      GTEST_SKIP() << "no udevd could be started here";
    if (dm_->node_mode() != NodeMode::kUdev) {
      ControlOptions o;
      o.node_mode = NodeMode::kUdev;
      auto c = Control::Open(o);
      ASSERT_TRUE(c.ok()) << c.status();
      dm_ = *std::move(c);
    }
  }
  static pid_t started_;
};
pid_t LibdmUdevTest::started_ = -1;

TEST_F(LibdmUdevTest, AutoModeDetectsUdev) {
  auto c = Control::Open();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->node_mode(), NodeMode::kUdev);
}

TEST_F(LibdmUdevTest, NodesAreUdevsAndWaitedFor) {
  Name a = N("udev-a"), b = N("udev-b");
  ASSERT_OK_AND_ASSIGN(DeviceInfo info, dm_->CreateDevice(a, Table::Single(Sectors(8), ZeroTarget{})));
  std::string pa = dm_->NodePath(a.str()), pb = dm_->NodePath(b.str());
  // Returned only once udev made its link (a symlink: not our fallback node).
  struct stat st;
  ASSERT_EQ(lstat(pa.c_str(), &st), 0) << pa;
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(*DevNum::FromPath(pa), info.dev);
  ASSERT_OK(dm_->Rename(a, b));
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(pa)));
  ASSERT_EQ(lstat(pb.c_str(), &st), 0) << pb;
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  ASSERT_OK(dm_->Remove(b).status());
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(pb)));
}

}  // namespace udev_mode

}  // namespace
}  // namespace dm
