// Benchmark: graph drivers side by side — devicemapper (thin snapshots),
// overlay, btrfs (a subvolume snapshot per layer) and zfs (a clone per
// layer; with --modules zfs) — in one run (meant for the vm tier:
// `tests/vm/run --modules zfs -- build/bench/graph_driver_bench`).
//
//   build/bench/graph_driver_bench [--runs N] [--dir SCRATCH] [--drivers a,b]
//                                  [--fio-size SIZE] [--fio-runtime S] [--no-fio]
//                                  [--data DIR]
//
// Setup: one sparse 16 GiB file on SCRATCH (default /tmp), attached to a
// loop device, ext4 made in-process; every driver's root lives on that ext4
// (as /var/lib/docker would), so overlay's upper dirs, devicemapper's and
// zfs's sparse pool files share the same stack below them. btrfs needs its
// root on btrfs: a second sparse 16 GiB file on SCRATCH → loop → btrfs.
//
// Per driver: a 10-layer image (each layer applied from a tar: 32 files of
// 4 KiB in its own directory plus a change to a shared file), then N times a
// container layer on the top image layer: Create, first Get (mount), Put
// (unmount), Remove — median and 90th percentile of each, and "prepare" =
// Create + first Get (what containerd's Prepare + mount costs). The cycles
// alternate between the drivers, so a busy host slows all of them alike.
// Then fio (if installed, unless --no-fio) inside one container layer:
// sequential write/read (1 MiB blocks) and random write/read (4 KiB blocks,
// iodepth 1, psync, O_DIRECT where the filesystem allows), caches dropped
// before each read job.
//
// "devicemapper-direct-syncput" is devicemapper-direct with
// dm.reaper_interval=0: Put deactivates the device before it returns (as
// every Put did before the reaper took the deactivation off the caller's
// path), on a pool of its own; no bare cycle of its own.
//
// Prints markdown tables; with --data DIR also writes DIR/ops.dat and
// DIR/fio.dat (whitespace-separated columns, for gnuplot).
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>


#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/size.h"
#include "graph/driver.h"
#include "graph/stream.h"
#include "libdm/control.h"
#include "tests/bench/libdm_bare_ioctl.h"
#include "tests/support/fio.h"
#include "thinpool/filesystem.h"
#include "thinpool/loop_device.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int Fail(const absl::Status& s, const std::string& what) {
  std::fprintf(stderr, "graph_driver_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  return 1;
}

// ------------------------------------------------------------ tar maker ---

void AppendHeader(std::string* out, const std::string& name, char type, size_t size, unsigned mode) {
  std::string h(512, '\0');
  name.copy(&h[0], 99);
  std::snprintf(&h[100], 8, "%07o", mode);
  std::snprintf(&h[108], 8, "%07o", 0);
  std::snprintf(&h[116], 8, "%07o", 0);
  std::snprintf(&h[124], 12, "%011o", static_cast<unsigned>(size));
  std::snprintf(&h[136], 12, "%011o", 1700000000u);
  h[156] = type;
  std::memcpy(&h[257], "ustar", 6);
  std::memcpy(&h[263], "00", 2);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(&h[148], 8, "%06o", sum);
  out->append(h);
}

void AppendFile(std::string* out, const std::string& name, const std::string& data) {
  AppendHeader(out, name, '0', data.size(), 0644);
  out->append(data);
  out->append((512 - data.size() % 512) % 512, '\0');
}

// Layer `i` of the image: its own directory of 32 × 4 KiB files, and a new
// version of etc/shared.
std::string LayerTar(int i) {
  std::string t;
  AppendHeader(&t, "etc/", '5', 0, 0755);
  AppendFile(&t, "etc/shared", absl::StrCat("version ", i, "\n"));
  std::string dir = absl::StrCat("layer", i, "/");
  AppendHeader(&t, dir, '5', 0, 0755);
  for (int f = 0; f < 32; ++f) {
    AppendFile(&t, absl::StrCat(dir, "f", f), std::string(4096, static_cast<char>('a' + (i + f) % 26)));
  }
  t.append(1024, '\0');
  return t;
}

absl::StatusOr<std::string> RunCapture(const std::vector<std::string>& args);

// ---------------------------------------------------------- scratch ext4 ---

// A sparse file → loop → ext4 (or, with fstype "btrfs", mkfs.btrfs) →
// mounted at `dir`. Torn down by the destructor.
class ScratchExt4 {
 public:
  static absl::StatusOr<std::unique_ptr<ScratchExt4>> Create(const std::string& image,
                                                              const std::string& dir, uint64_t bytes,
                                                              const std::string& fstype = "ext4") {
    auto s = std::unique_ptr<ScratchExt4>(new ScratchExt4);
    s->image_ = image;
    s->dir_ = dir;
    int fd = ::open(image.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return absl::InternalError(absl::StrCat("creating ", image, ": ", std::strerror(errno)));
    int r = ::ftruncate(fd, static_cast<off_t>(bytes));
    ::close(fd);
    if (r != 0) return absl::InternalError(absl::StrCat("sizing ", image));
    auto loop = thinpool::LoopDevice::Attach(image);
    if (!loop.ok()) return loop.status();
    s->loop_ = std::make_unique<thinpool::LoopDevice>(std::move(*loop));
    if (fstype == "btrfs") {
      absl::StatusOr<std::string> made = RunCapture({"mkfs.btrfs", "-q", "-f", s->loop_->path()});
      if (!made.ok()) return made.status();
    } else {
      thinpool::Ext4Options eo;
      eo.assume_zeroed = true;
      absl::Status made = thinpool::MakeExt4(s->loop_->path(), eo);
      if (!made.ok()) return made;
    }
    ::mkdir(dir.c_str(), 0755);
    if (::mount(s->loop_->path().c_str(), dir.c_str(), fstype.c_str(), 0, nullptr) != 0) {
      return absl::InternalError(absl::StrCat("mounting ", s->loop_->path(), " on ", dir, ": ", std::strerror(errno)));
    }
    s->mounted_ = true;
    return s;
  }
  ~ScratchExt4() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    loop_.reset();
    ::unlink(image_.c_str());
    ::rmdir(dir_.c_str());
  }
  bool direct_io() const { return loop_ && loop_->direct_io(); }

 private:
  ScratchExt4() = default;
  std::string image_, dir_;
  std::unique_ptr<thinpool::LoopDevice> loop_;
  bool mounted_ = false;
};

// ------------------------------------------------------------------- fio ---

struct FioResult {
  std::string job;
  double mib_s = 0;
  double iops = 0;
};

void DropCaches() {
  ::sync();
  std::ofstream("/proc/sys/vm/drop_caches") << "3\n";
}

// Runs a program (argv, no shell: fio, zpool); returns its stdout.
absl::StatusOr<std::string> RunCapture(const std::vector<std::string>& args) {
  int out[2];
  if (::pipe(out) != 0) return absl::InternalError("pipe");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  std::string text;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(args[0], " exited with status ", status));
  }
  return text;
}

bool HaveFio() {
  for (const char* d : {"/usr/bin/fio", "/usr/local/bin/fio", "/bin/fio"}) {
    if (::access(d, X_OK) == 0) return true;
  }
  return false;
}

absl::StatusOr<FioResult> FioJob(const std::string& dir, const std::string& name, const std::string& rw,
                                 const std::string& bs, const std::string& size, int runtime_s) {
  testsupport::FioSpec spec;
  spec.dir = dir;
  spec.file = "fio.dat";
  spec.rw = rw;
  spec.bs = bs;
  spec.size = size;
  if (rw == "randwrite" || rw == "randread") spec.runtime_s = runtime_s;
  auto run = testsupport::RunFio(spec);
  if (!run.ok()) return run.status();
  FioResult r;
  r.job = name + (run->direct ? "" : " (buffered)");
  r.mib_s = run->mib_s;
  r.iops = run->iops;
  return r;
}

// --------------------------------------------------------------- driver ---

struct OpTimes {
  std::vector<double> create, get, put, remove, prepare;
};

struct DriverResult {
  std::string name;
  OpTimes ops;
  std::vector<FioResult> fio;
  std::string error;
};

// "devicemapper-direct": the pool on two block devices given to the driver
// with dm.thinpooldev, as Docker's direct-lvm mode (recommended for
// production) did, instead of the driver's own sparse files on the root
// filesystem (loop-lvm). The block devices are loop devices over sparse files
// on SCRATCH itself (the guest's tmpfs), so a flush is nearly free, as on a
// disk with a power-loss-protected cache. The pool's registry (its state dir)
// stays on the ext4 with the drivers' roots, as /var/lib/dmthin would.
class DirectPool {
 public:
  static absl::StatusOr<std::unique_ptr<DirectPool>> Create(const std::string& dir,
                                                            const std::string& state_dir,
                                                            const std::string& name) {
    auto p = std::unique_ptr<DirectPool>(new DirectPool);
    p->name_ = name;
    p->dir_ = dir;
    p->state_dir_ = state_dir;
    ::mkdir(dir.c_str(), 0700);
    for (const char* f : {"/data", "/metadata"}) {
      std::string path = dir + f;
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd < 0) return absl::InternalError(absl::StrCat("creating ", path, ": ", std::strerror(errno)));
      int r = ::ftruncate(fd, static_cast<off_t>(std::string(f) == "/data" ? 12ull << 30 : 64ull << 20));
      ::close(fd);
      if (r != 0) return absl::InternalError(absl::StrCat("sizing ", path));
      auto loop = thinpool::LoopDevice::Attach(path);
      if (!loop.ok()) return loop.status();
      p->loops_.push_back(std::make_unique<thinpool::LoopDevice>(std::move(*loop)));
    }
    auto dm = dm::Control::Open();
    if (!dm.ok()) return dm.status();
    p->dm_ = std::move(*dm);
    auto state = thinpool::StateDir::Open(state_dir);
    if (!state.ok()) return state.status();
    p->state_ = std::move(*state);
    thinpool::PoolOptions o;
    o.data_device = p->loops_[0]->path();
    o.metadata_device = p->loops_[1]->path();
    o.error_if_no_space = true;
    auto pool = thinpool::Pool::Create(*p->state_, *p->dm_, name, o);
    if (!pool.ok()) return pool.status();
    p->pool_ = std::move(*pool);
    return p;
  }
  ~DirectPool() {
    if (pool_) (void)pool_->Destroy(/*force=*/true);
    pool_.reset();
    state_.reset();
    loops_.clear();
    for (const char* f : {"/data", "/metadata"}) ::unlink((dir_ + f).c_str());
    std::filesystem::remove_all(dir_);
    std::filesystem::remove_all(state_dir_);
  }
  std::string state_dir() const { return state_dir_; }
  std::string pool_name() const { return name_; }

 private:
  DirectPool() = default;
  std::string name_, dir_, state_dir_;
  std::vector<std::unique_ptr<thinpool::LoopDevice>> loops_;
  std::unique_ptr<dm::Control> dm_;
  std::unique_ptr<thinpool::StateDir> state_;
  std::unique_ptr<thinpool::Pool> pool_;
};

std::map<std::string, std::string> OptionsFor(const std::string& driver, const DirectPool* direct) {
  // The reaper thread (the driver's default) takes Put's deactivation.
  if (driver == "devicemapper") {
    return {{"dm.loopdatasize", "12G"}, {"dm.basesize", "4G"}, {"dm.reaper_interval", "30s"}};
  }
  if (absl::StartsWith(driver, "devicemapper-direct") && direct != nullptr) {
    return {{"dm.thinpooldev", direct->pool_name()},
            {"dm.statedir", direct->state_dir()},
            {"dm.basesize", "4G"},
            {"dm.reaper_interval", driver == "devicemapper-direct-syncput" ? "0" : "30s"}};
  }
  // The driver's "auto" takes fsconfig("lowerdir+") for Linux >= 6.8, but
  // kernels whose overlay still uses the legacy fs_context accept any key
  // there, so the probe passes and the mount fails: say legacy explicitly.
  if (driver == "overlay") {
    const char* api = std::getenv("GRAPH_BENCH_OVERLAY_API");
    return {{"overlay.mount_api", api != nullptr ? api : "legacy"}};
  }
  // The driver's own pool on a sparse file on the same ext4 (as loop-lvm).
  if (driver == "zfs") return {{"zfs.poolsize", "12G"}};
  return {};
}

// The physical limit of a devicemapper container layer (issue 17): the
// kernel steps the driver's Create + first Get + Put + Remove take, as bare
// ioctls in C (tests/bench/libdm_bare_ioctl.c) with no registry, no lock and
// no check, on the driver's own pool with the top image layer as origin:
//   create  = create_snap message + set_transaction_id
//   get     = DEV_CREATE + TABLE_LOAD (thin) + resume + mount of the ext4
//   put     = umount + DEV_REMOVE
//   remove  = delete message + set_transaction_id
// The transaction id is put back after each message pair (untimed), so the
// driver's registry stays right; ids are far above the registry's.
#define RETURN_IF_BARE(expr)                                                              \
  do {                                                                                    \
    int r_ = (expr);                                                                      \
    if (r_ < 0) return absl::InternalError(absl::StrCat("bare: " #expr ": ", std::strerror(-r_))); \
  } while (0)
class BareDm {
 public:
  static absl::StatusOr<std::unique_ptr<BareDm>> Open(graph::Driver& d, const std::string& origin_layer,
                                                      const std::string& scratch) {
    auto b = std::unique_ptr<BareDm>(new BareDm);
    std::string pool_name, state_dir;
    for (const auto& [k, v] : d.Status()) {
      if (k == "Pool Name") pool_name = v;
      if (k == "Pool State Dir") state_dir = v;
    }
    auto meta = d.Metadata(origin_layer);
    if (!meta.ok()) return meta.status();
    b->origin_id_ = static_cast<uint32_t>(std::stoul((*meta)["DeviceId"]));
    auto dm = dm::Control::Open();
    if (!dm.ok()) return dm.status();
    b->dm_ = std::move(*dm);
    auto state = thinpool::StateDir::Open(state_dir);
    if (!state.ok()) return state.status();
    b->state_ = std::move(*state);
    auto pool = thinpool::Pool::Open(*b->state_, *b->dm_, pool_name);
    if (!pool.ok()) return pool.status();
    b->pool_ = std::move(*pool);
    b->pool_dm_ = b->pool_->dm_name();
    auto name = dm::Name::Create(b->pool_dm_);
    if (!name.ok()) return name.status();
    auto info = b->dm_->Info(*name);
    if (!info.ok()) return info.status();
    b->pool_dev_ = absl::StrCat(info->dev.major, ":", info->dev.minor);
    auto bytes = base::ParseSize("4G");  // dm.basesize of OptionsFor
    if (!bytes.ok()) return bytes.status();
    b->sectors_ = *bytes / 512;
    b->fd_ = bare_open();
    if (b->fd_ < 0) return absl::InternalError("opening /dev/mapper/control");
    b->dir_ = scratch + "/bare";
    std::error_code ec;
    std::filesystem::create_directories(b->dir_ + "/mnt", ec);
    if (ec) return absl::InternalError(absl::StrCat("creating ", b->dir_, ": ", ec.message()));
    b->tag_ = std::to_string(std::hash<std::string>()(scratch) % 100000);
    return b;
  }
  ~BareDm() {
    if (fd_ >= 0) ::close(fd_);
    std::filesystem::remove_all(dir_);
  }

  // One bare cycle; times in ms into `o` unless warmup.
  absl::Status Cycle(int n, bool warmup, OpTimes& o) {
    const uint32_t id = 16000000 + static_cast<uint32_t>(n + 1);
    const std::string dm_name = absl::StrCat("bare-", ::getpid(), "-", tag_, "-", n + 1);
    const std::string node = absl::StrCat(dir_, "/node"), mnt = absl::StrCat(dir_, "/mnt");
    absl::Status s = TimedCycle(id, dm_name, node, mnt, warmup, o);
    if (!s.ok()) {  // leave nothing behind
      (void)::umount2(mnt.c_str(), MNT_DETACH);
      (void)bare_remove(fd_, dm_name.c_str());
      ::unlink(node.c_str());
      (void)Step(absl::StrCat("delete ", id));
      untimed_ms_ = 0;
    }
    return s;
  }

 private:
  BareDm() = default;
  absl::Status TimedCycle(uint32_t id, const std::string& dm_name, const std::string& node,
                          const std::string& mnt, bool warmup, OpTimes& o) {
    auto t0 = Clock::now();
    RETURN_IF_BARE(Step(absl::StrCat("create_snap ", id, " ", origin_id_)));
    auto t1 = Clock::now();
    const double untimed_create = std::exchange(untimed_ms_, 0.0);
    uint32_t major = 0, minor = 0;
    RETURN_IF_BARE(bare_create_dev(fd_, dm_name.c_str(), &major, &minor));
    RETURN_IF_BARE(bare_load(fd_, dm_name.c_str(), sectors_, "thin",
                             absl::StrCat(pool_dev_, " ", id).c_str()));
    RETURN_IF_BARE(bare_resume(fd_, dm_name.c_str()));
    if (::mknod(node.c_str(), S_IFBLK | 0600, makedev(major, minor)) != 0) return Errno("mknod");
    if (::mount(node.c_str(), mnt.c_str(), "ext4", 0, nullptr) != 0) return Errno("mount");
    auto t2 = Clock::now();
    if (::umount(mnt.c_str()) != 0) return Errno("umount");
    RETURN_IF_BARE(bare_remove(fd_, dm_name.c_str()));
    ::unlink(node.c_str());
    auto t3 = Clock::now();
    RETURN_IF_BARE(Step(absl::StrCat("delete ", id)));
    auto t4 = Clock::now();
    const double untimed_remove = std::exchange(untimed_ms_, 0.0);
    if (warmup) return absl::OkStatus();
    o.create.push_back(Ms(t0, t1) - untimed_create);
    o.get.push_back(Ms(t1, t2));
    o.put.push_back(Ms(t2, t3));
    o.remove.push_back(Ms(t3, t4) - untimed_remove);
    o.prepare.push_back(o.create.back() + o.get.back());
    return absl::OkStatus();
  }

  static absl::Status Errno(const char* what) {
    return absl::InternalError(absl::StrCat("bare: ", what, ": ", std::strerror(errno)));
  }
  // The message and set_transaction_id (timed), then the id put back
  // (its time kept in untimed_ms_ and taken off by the caller).
  int Step(const std::string& message) {
    auto rec = pool_->Record();
    if (!rec.ok()) return -EIO;
    const uint64_t txid = rec->transaction_id;
    int r = bare_message(fd_, pool_dm_.c_str(), message.c_str());
    if (r < 0) return r;
    r = bare_message(fd_, pool_dm_.c_str(), absl::StrCat("set_transaction_id ", txid, " ", txid + 1).c_str());
    if (r < 0) return r;
    auto u0 = Clock::now();
    r = bare_message(fd_, pool_dm_.c_str(), absl::StrCat("set_transaction_id ", txid + 1, " ", txid).c_str());
    untimed_ms_ += Ms(u0, Clock::now());
    return r;
  }

  std::unique_ptr<dm::Control> dm_;
  std::unique_ptr<thinpool::StateDir> state_;
  std::unique_ptr<thinpool::Pool> pool_;
  std::string pool_dm_, pool_dev_, dir_, tag_;
  uint32_t origin_id_ = 0;
  uint64_t sectors_ = 0;
  int fd_ = -1;
  double untimed_ms_ = 0;
};
#undef RETURN_IF_BARE

// One driver under test: its image, then timed cycles.
struct Bench {
  std::string name;
  std::unique_ptr<DirectPool> direct;  // devicemapper-direct only; outlives d
  std::unique_ptr<ScratchExt4> btrfs;  // btrfs only: its own filesystem; outlives d
  std::unique_ptr<graph::Driver> d;
  std::string top;
  std::string root;  // the base root OpenDriver was given
  DriverResult result;
  std::unique_ptr<BareDm> bare;  // devicemapper variants: the bare kernel steps
  DriverResult bare_result;
};

absl::Status SetUp(Bench& b, const std::string& base, const std::string& scratch) {
  b.result.name = b.name;
  std::string driver = b.name;
  bool syncput = b.name == "devicemapper-direct-syncput";
  if (b.name == "devicemapper-direct" || syncput) {
    driver = "devicemapper";
    const char* sub = syncput ? "/direct-syncput" : "/direct";
    auto direct = DirectPool::Create(absl::StrCat(scratch, sub, "-pool"), absl::StrCat(base, sub, "-pool-state"),
                                     syncput ? "benchsyncput" : "benchdirect");
    if (!direct.ok()) return direct.status();
    b.direct = std::move(*direct);
  }
  // OpenDriver roots each driver at base/<driver>: keep the devicemappers apart.
  std::string root = b.direct ? base + (syncput ? "/direct-syncput" : "/direct") : base;
  if (b.name == "btrfs") {
    // The driver needs its root on btrfs: a filesystem of its own, made the
    // same way as the others' ext4 (sparse file on the scratch dir → loop).
    auto fs = ScratchExt4::Create(scratch + "/btrfs.img", scratch + "/btrfs-fs", 16ull << 30, "btrfs");
    if (!fs.ok()) return fs.status();
    b.btrfs = std::move(*fs);
    root = scratch + "/btrfs-fs";
  }
  ::mkdir(root.c_str(), 0700);
  b.root = root;
  auto opened = graph::OpenDriver(driver, root, OptionsFor(b.name, b.direct.get()));
  if (!opened.ok()) return opened.status();
  b.d = std::move(*opened);
  std::string parent;
  for (int i = 0; i < 10; ++i) {
    std::string id = absl::StrCat("img", i);
    absl::Status s = b.d->Create(id, parent, {});
    if (!s.ok()) return s;
    std::string tar = LayerTar(i);
    graph::StringSource src(tar);
    auto applied = b.d->ApplyDiff(id, parent, src);
    if (!applied.ok()) return applied.status();
    parent = id;
  }
  b.top = parent;
  if (driver == "devicemapper" && !syncput) {
    // A second client of the driver's pool (as dmthin's tools would be).
    auto bare = BareDm::Open(*b.d, b.top, scratch + "/" + b.name);
    if (!bare.ok()) return bare.status();
    b.bare = std::move(*bare);
    b.bare_result.name = b.name + ": bare C";
  }
  return absl::OkStatus();
}

// One container layer: Create, first Get, Put, Remove (timed unless `warmup`).
absl::Status Cycle(Bench& b, int n, bool warmup) {
  graph::CreateOptions rw;
  rw.read_write = true;
  std::string id = absl::StrCat("ctr", n);
  auto t0 = Clock::now();
  absl::Status s = b.d->Create(id, b.top, rw);
  auto t1 = Clock::now();
  if (!s.ok()) return s;
  auto dir = b.d->Get(id, "");
  auto t2 = Clock::now();
  if (!dir.ok()) return dir.status();
  s = b.d->Put(id);
  auto t3 = Clock::now();
  if (!s.ok()) return s;
  s = b.d->Remove(id);
  auto t4 = Clock::now();
  if (!s.ok()) return s;
  if (warmup) return absl::OkStatus();
  OpTimes& o = b.result.ops;
  o.create.push_back(Ms(t0, t1));
  o.get.push_back(Ms(t1, t2));
  o.put.push_back(Ms(t2, t3));
  o.remove.push_back(Ms(t3, t4));
  o.prepare.push_back(Ms(t0, t2));
  return absl::OkStatus();
}

absl::Status Fio(Bench& b, const std::string& fio_size, int fio_runtime) {
  graph::CreateOptions rw;
  rw.read_write = true;
  absl::Status s = b.d->Create("fio", b.top, rw);
  if (!s.ok()) return s;
  auto dir = b.d->Get("fio", "");
  if (!dir.ok()) return dir.status();
  struct Job {
    const char* name;
    const char* rw;
    const char* bs;
  };
  for (const Job& j : {Job{"seq-write", "write", "1M"}, Job{"seq-read", "read", "1M"},
                       Job{"rand-write", "randwrite", "4k"}, Job{"rand-read", "randread", "4k"}}) {
    DropCaches();
    auto r = FioJob(*dir, j.name, j.rw, j.bs, fio_size, fio_runtime);
    if (!r.ok()) return r.status();
    b.result.fio.push_back(*r);
  }
  (void)b.d->Put("fio");
  return b.d->Remove("fio");
}

absl::Status TearDown(Bench& b) {
  b.bare.reset();
  if (!b.d) return absl::OkStatus();
  for (int i = 9; i >= 0; --i) (void)b.d->Remove(absl::StrCat("img", i));
  absl::Status s = b.d->Cleanup();
  b.d.reset();
  b.direct.reset();
  b.btrfs.reset();
  if (b.name == "zfs") {
    // The pool the driver made stays imported: destroy it with the bench.
    std::string pool;
    std::ifstream(b.root + "/zfs/zpool.name") >> pool;
    if (!pool.empty()) {
      auto destroyed = RunCapture({"zpool", "destroy", "-f", pool});
      if (!destroyed.ok() && s.ok()) s = destroyed.status();
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 20;
  std::string scratch = "/tmp";
  std::vector<std::string> drivers = {"devicemapper", "devicemapper-direct", "overlay", "btrfs"};
  // zfs where its module is loaded (tests/vm/run --modules zfs).
  if (::access("/dev/zfs", F_OK) == 0) drivers.push_back("zfs");
  std::string fio_size = "256M";
  int fio_runtime = 10;
  bool fio = true;
  std::string data_dir;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "graph_driver_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--runs") runs = std::atoi(next().c_str());
    else if (a == "--dir") scratch = next();
    else if (a == "--drivers") drivers = absl::StrSplit(next(), ',', absl::SkipEmpty());
    else if (a == "--fio-size") fio_size = next();
    else if (a == "--fio-runtime") fio_runtime = std::atoi(next().c_str());
    else if (a == "--no-fio") fio = false;
    else if (a == "--data") data_dir = next();
    else {
      std::fprintf(stderr,
                   "usage: graph_driver_bench [--runs N] [--dir SCRATCH] [--drivers a,b] [--fio-size SIZE] "
                   "[--fio-runtime S] [--no-fio] [--data DIR]\n");
      return 2;
    }
  }
  if (runs < 1) runs = 1;
  if (fio && !HaveFio()) {
    std::fprintf(stderr, "graph_driver_bench: fio not installed: skipping the I/O part\n");
    fio = false;
  }

  std::string base = absl::StrCat(scratch, "/graph-driver-bench-", ::getpid());
  ::mkdir(base.c_str(), 0700);
  std::vector<DriverResult> results;
  bool failed = false;
  {
    auto ext4 = ScratchExt4::Create(base + "/ext4.img", base + "/fs", 16ull << 30);
    if (!ext4.ok()) return Fail(ext4.status(), "making the scratch ext4");
    std::vector<Bench> benches(drivers.size());
    auto failure = [&](Bench& b, const absl::Status& s) {
      b.result.error = s.ToString();
      failed = true;
      std::fprintf(stderr, "graph_driver_bench: %s: %s\n", b.name.c_str(), b.result.error.c_str());
      (void)TearDown(b);
    };
    for (size_t i = 0; i < drivers.size(); ++i) {
      benches[i].name = drivers[i];
      absl::Status s = SetUp(benches[i], base + "/fs", base);
      if (!s.ok()) failure(benches[i], s);
    }
    // Cycles alternate between the drivers, so a busy host slows all alike.
    for (int r = -1; r < runs; ++r) {
      for (Bench& b : benches) {
        if (!b.d) continue;
        // The bare sequence goes first every other round.
        if (b.bare && r % 2 != 0) {
          absl::Status s = b.bare->Cycle(r + 1, r < 0, b.bare_result.ops);
          if (!s.ok()) failure(b, s);
          if (!b.d) continue;
        }
        absl::Status s = Cycle(b, r + 1, r < 0);
        if (!s.ok()) failure(b, s);
        if (b.bare && b.d && r % 2 == 0) {
          s = b.bare->Cycle(r + 1, r < 0, b.bare_result.ops);
          if (!s.ok()) failure(b, s);
        }
      }
    }
    for (Bench& b : benches) {
      if (!b.d) continue;
      if (fio) {
        absl::Status s = Fio(b, fio_size, fio_runtime);
        if (!s.ok()) failure(b, s);
      }
      absl::Status s = TearDown(b);
      if (!s.ok() && b.result.error.empty()) failure(b, s);
    }
    for (Bench& b : benches) {
      results.push_back(std::move(b.result));
      if (!b.bare_result.name.empty()) results.push_back(std::move(b.bare_result));
    }
  }
  ::rmdir(base.c_str());

  std::printf("\n### Container layer on a 10-layer image (%d runs, ms: median / p90)\n\n", runs);
  std::printf("| driver | create | mount (first Get) | umount (Put) | remove | prepare = create + mount |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  auto cell = [](const std::vector<double>& v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f / %.2f", Percentile(v, 0.5), Percentile(v, 0.9));
    return std::string(buf);
  };
  std::map<std::string, double> prepare;
  for (const auto& r : results) {
    if (!r.error.empty()) {
      std::printf("| %s | failed: %s |||||\n", r.name.c_str(), r.error.c_str());
      continue;
    }
    prepare[r.name] = Percentile(r.ops.prepare, 0.5);
    std::printf("| %s | %s | %s | %s | %s | %s |\n", r.name.c_str(), cell(r.ops.create).c_str(),
                cell(r.ops.get).c_str(), cell(r.ops.put).c_str(), cell(r.ops.remove).c_str(),
                cell(r.ops.prepare).c_str());
  }
  std::printf("\n");
  for (const auto& r : results) {
    const std::string bare_name = r.name + ": bare C";
    for (const auto& b : results) {
      if (b.name != bare_name || !r.error.empty() || !b.error.empty()) continue;
      auto ratio = [](const std::vector<double>& x, const std::vector<double>& y) {
        double m = Percentile(y, 0.5);
        return m > 0 ? Percentile(x, 0.5) / m : 0.0;
      };
      std::printf("%s / bare C (median ratio; target <= 1.15): prepare %.2fx (create %.2fx, mount %.2fx), "
                  "put %.2fx, remove %.2fx\n",
                  r.name.c_str(), ratio(r.ops.prepare, b.ops.prepare), ratio(r.ops.create, b.ops.create),
                  ratio(r.ops.get, b.ops.get), ratio(r.ops.put, b.ops.put), ratio(r.ops.remove, b.ops.remove));
    }
  }
  for (const char* dm : {"devicemapper", "devicemapper-direct", "btrfs", "zfs"}) {
    if (prepare.count(dm) && prepare.count("overlay") && prepare["overlay"] > 0) {
      std::printf("\n%s prepare / overlay prepare = %.2fx (median; target <= 3x)\n", dm,
                  prepare[dm] / prepare["overlay"]);
    }
  }
  if (fio) {
    std::printf("\n### fio inside the container layer (size %s; random jobs %d s; psync, iodepth 1)\n\n",
                fio_size.c_str(), fio_runtime);
    std::printf("| driver | job | MiB/s | IOPS |\n|---|---|---:|---:|\n");
    for (const auto& r : results) {
      for (const auto& f : r.fio) {
        std::printf("| %s | %s | %.1f | %.0f |\n", r.name.c_str(), f.job.c_str(), f.mib_s, f.iops);
      }
    }
  }
  if (!data_dir.empty()) {
    std::ofstream ops(data_dir + "/ops.dat");
    ops << "# driver create_ms get_ms put_ms remove_ms prepare_ms (medians)\n";
    for (const auto& r : results) {
      if (!r.error.empty()) continue;
      ops << r.name << " " << Percentile(r.ops.create, 0.5) << " " << Percentile(r.ops.get, 0.5) << " "
          << Percentile(r.ops.put, 0.5) << " " << Percentile(r.ops.remove, 0.5) << " "
          << Percentile(r.ops.prepare, 0.5) << "\n";
    }
    std::ofstream fd(data_dir + "/fio.dat");
    // A header row (not a comment): the plot takes its titles from it.
    fd << "job";
    for (const auto& r : results) fd << " " << r.name;
    fd << "\n";
    for (size_t j = 0; !results.empty() && j < results[0].fio.size(); ++j) {
      std::string job = results[0].fio[j].job;
      job = job.substr(0, job.find(' '));
      fd << job;
      for (const auto& r : results) fd << " " << (j < r.fio.size() ? r.fio[j].mib_s : 0.0);
      fd << "\n";
    }
  }
  return failed ? 1 : 0;
}
