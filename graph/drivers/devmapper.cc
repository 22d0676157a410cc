// The devicemapper graph driver: see devmapper.h for the design.
#include "graph/drivers/devmapper.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/size.h"
#include "base/failpoint.h"
#include "base/file_lock.h"
#include "base/fsutil.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "graph/archive.h"
#include "graph/digest.h"
#include "graph/driver.h"
#include "graph/drivers/mountref.h"
#include "graph/drivers/naive_diff.h"
#include "graph/fsutil.h"
#include "graph/records.h"
#include "libdm/control.h"
#include "thinpool/filesystem.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"

namespace graph {
namespace {

constexpr char kName[] = "devicemapper";
constexpr uint64_t kDefaultLoopDataBytes = 100ull << 30;
constexpr uint64_t kDefaultBaseBytes = 10ull << 30;
constexpr double kDefaultMinFreePercent = 10.0;
// The longest layer id used verbatim in a thin name (thin names are at most
// 80 bytes: tag 8 + '-' + 64 + "+NNNNNN").
constexpr size_t kMaxVerbatimId = 64;

// Crash tests: the driver's own failpoints are named devmapper_*.
using base::Failpoint;
using base::FailpointIs;

// ------------------------------------------------------------- options ---

struct Config {
  std::string pool_name;     // dm.thinpooldev (empty: the driver's own)
  std::string state_dir;     // dm.statedir
  bool loopback = false;     // dm.loopback or a dm.loop* size given
  uint64_t loop_data_bytes = kDefaultLoopDataBytes;
  uint64_t loop_metadata_bytes = 0;
  std::optional<uint64_t> block_bytes;  // unset: thinpool chooses for the data size
  uint64_t base_bytes = kDefaultBaseBytes;
  std::string mount_options;
  double min_free_percent = kDefaultMinFreePercent;
  bool blkdiscard = false;
  bool deferred_removal = true;
  bool deferred_deletion = true;
  absl::Duration reaper_interval = absl::Seconds(30);
};

absl::StatusOr<bool> ParseBool(const std::string& key, const std::string& value) {
  std::string v = absl::AsciiStrToLower(value);
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  return absl::InvalidArgumentError(
      absl::StrCat("devicemapper: ", key, "=", value, " is not a boolean (true/false)"));
}

absl::StatusOr<Config> ParseConfig(const DriverOptions& o) {
  Config c;
  c.state_dir = thinpool::kDefaultStateDir;
  for (const auto& option : o.options) {
    const std::string& key = option.first;
    const std::string& value = option.second;
    auto size = [&](uint64_t* out) -> absl::Status {
      absl::StatusOr<uint64_t> s = base::ParseSize(value);
      if (!s.ok()) return base::Annotate(s.status(), absl::StrCat("devicemapper: ", key));
      *out = *s;
      return absl::OkStatus();
    };
    if (key == "dm.thinpooldev") {
      absl::string_view v = value;
      absl::ConsumePrefix(&v, "/dev/mapper/dmthin-");
      RETURN_IF_ERROR(base::Annotate(thinpool::ValidatePoolName(v), "devicemapper: dm.thinpooldev"));
      c.pool_name = std::string(v);
    } else if (key == "dm.statedir") {
      if (value.empty() || value[0] != '/') {
        return absl::InvalidArgumentError(
            absl::StrCat("devicemapper: dm.statedir must be an absolute path, got \"", value, "\""));
      }
      c.state_dir = value;
    } else if (key == "dm.loopback") {
      ASSIGN_OR_RETURN(c.loopback, ParseBool(key, value));
    } else if (key == "dm.loopdatasize") {
      RETURN_IF_ERROR(size(&c.loop_data_bytes));
      c.loopback = true;
    } else if (key == "dm.loopmetadatasize") {
      RETURN_IF_ERROR(size(&c.loop_metadata_bytes));
      c.loopback = true;
    } else if (key == "dm.blocksize") {
      uint64_t block = 0;
      RETURN_IF_ERROR(size(&block));
      c.block_bytes = block;
    } else if (key == "dm.basesize") {
      RETURN_IF_ERROR(size(&c.base_bytes));
      if (c.base_bytes < (64ull << 20) || c.base_bytes % 4096 != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "devicemapper: dm.basesize=", value, " must be at least 64M and a multiple of 4K"));
      }
      // Every layer is ext4 of this size: refuse what ext4 cannot hold now,
      // before a pool or a base device is made for it.
      RETURN_IF_ERROR(base::Annotate(thinpool::ValidateExt4(c.base_bytes),
                                     absl::StrCat("devicemapper: dm.basesize=", value)));
    } else if (key == "dm.fs") {
      if (value != "ext4") {
        return absl::InvalidArgumentError(absl::StrCat(
            "devicemapper: dm.fs=", value, " is not supported (only ext4, made in-process)"));
      }
    } else if (key == "dm.mountopt") {
      if (value.find_first_of("\"\n") != std::string::npos) {
        return absl::InvalidArgumentError("devicemapper: dm.mountopt holds a quote or newline");
      }
      c.mount_options = value;
    } else if (key == "dm.min_free_space") {
      absl::string_view v = value;
      absl::ConsumeSuffix(&v, "%");
      double pct = 0;
      if (!absl::SimpleAtod(v, &pct) || pct < 0 || pct >= 100) {
        return absl::InvalidArgumentError(absl::StrCat(
            "devicemapper: dm.min_free_space=", value, " must be a percentage in [0, 100)"));
      }
      c.min_free_percent = pct;
    } else if (key == "dm.blkdiscard") {
      ASSIGN_OR_RETURN(c.blkdiscard, ParseBool(key, value));
    } else if (key == "dm.use_deferred_removal") {
      ASSIGN_OR_RETURN(c.deferred_removal, ParseBool(key, value));
    } else if (key == "dm.use_deferred_deletion") {
      ASSIGN_OR_RETURN(c.deferred_deletion, ParseBool(key, value));
    } else if (key == "dm.sync_metadata") {
      // Docker's option, accepted and checked; nothing left to sync: the
      // deferred deletions it synced are entries in the records now.
      RETURN_IF_ERROR(ParseBool(key, value).status());
    } else if (key == "dm.reaper_interval") {
      if (!absl::ParseDuration(value, &c.reaper_interval) || c.reaper_interval < absl::ZeroDuration()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "devicemapper: dm.reaper_interval=", value, " is not a duration (\"30s\", \"200ms\", \"0\")"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("devicemapper: unknown option \"", key, "\""));
    }
  }
  if (!c.pool_name.empty() && c.loopback) {
    return absl::InvalidArgumentError(
        "devicemapper: dm.thinpooldev and dm.loopback/dm.loop*size exclude each other");
  }
  return c;
}

// ---------------------------------------------------------- file helpers ---

absl::Status MkdirP(const std::string& path, mode_t mode) {
  std::string cur;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    cur = absl::StrCat(cur, "/", part);
    if (path[0] != '/' && cur.size() == part.size() + 1) cur = std::string(part);
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) {
      return base::ErrnoError(errno, absl::StrCat("creating ", cur));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> ReadSmallFile(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return std::optional<std::string>();
    return base::ErrnoError(errno, absl::StrCat("opening ", path));
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoError(errno, absl::StrCat("reading ", path));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return std::optional<std::string>(std::move(out));
}

absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return std::vector<std::string>();
    return base::ErrnoError(errno, absl::StrCat("opendir ", dir));
  }
  std::vector<std::string> out;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    out.push_back(std::move(n));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// key=value lines.
std::map<std::string, std::string> ParseKv(absl::string_view text) {
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    size_t eq = line.find('=');
    if (eq == absl::string_view::npos) continue;
    out[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
  }
  return out;
}

using base::FileLock;

absl::Status Unmount(const std::string& target) {
  if (::umount2(target.c_str(), UMOUNT_NOFOLLOW) == 0) return absl::OkStatus();
  if (errno == EINVAL || errno == ENOENT) return absl::OkStatus();  // not mounted
  if (errno == EBUSY) {
    // Something still has a file open in it: detach it now; the device stays
    // open until the last user goes (the deferred paths cope with that).
    if (::umount2(target.c_str(), UMOUNT_NOFOLLOW | MNT_DETACH) == 0) return absl::OkStatus();
  }
  return base::ErrnoError(errno, absl::StrCat("unmounting ", target));
}

bool Mounted(const std::string& path) {
  absl::StatusOr<bool> m = IsMountPoint(path);
  return m.ok() && *m;
}

// A device held open: thinpool's DeactivateThin/DeleteThin say EBUSY.
bool IsBusy(const absl::Status& s) { return base::HasErrno(s, EBUSY); }

// ---------------------------------------------------------------- records ---

// A layer's record (graph/records.h) read as devicemapper's fields: the
// thin's name in the pool (thinpool's registry is the truth for the device:
// its id, size and device name are looked up by this name), the parent's id
// and the layer's kind.
struct Record {
  std::string id;
  std::string thin;
  std::string parent;
  bool rw = true;  // a container layer (read-only image layers: false)
  RecordState state = RecordState::kCreating;

  std::map<std::string, std::string> Fields() const {
    return {{"thin", thin}, {"parent", parent}, {"rw", rw ? "1" : "0"}};
  }
};

absl::StatusOr<Record> FromLayerRecord(const LayerRecord& lr) {
  Record r;
  r.id = lr.id;
  r.thin = lr.Field("thin");
  r.parent = lr.Field("parent");
  r.rw = lr.Field("rw") != "0";
  r.state = lr.state;
  if (!thinpool::ValidateThinName(r.thin).ok()) {
    return absl::DataLossError(absl::StrCat("devicemapper: the record of layer ", lr.id,
                                            " names no valid thin device (\"", r.thin, "\")"));
  }
  return r;
}

// A record file of earlier releases (<root>/metadata/<id>:
// "thin=..\nparent=..\nrw=0|1\nstate=creating|ready|removing\n").
std::optional<LayerRecord> ParseRecordFile(const std::string& id, const std::string& text) {
  auto kv = ParseKv(text);
  std::optional<RecordState> state = ParseRecordState(kv["state"]);
  if (!state || !thinpool::ValidateThinName(kv["thin"]).ok()) return std::nullopt;
  LayerRecord r;
  r.id = id;
  r.state = *state;
  r.fields = {{"thin", kv["thin"]}, {"parent", kv["parent"]}, {"rw", kv["rw"] == "0" ? "0" : "1"}};
  return r;
}

// Driver-wide entries (LayerRecords::PutEntry), by kind:
//   base        "base": the base device (thin, state creating|ready, layout)
//   deferred    <thin>: a removed layer's thin whose device is still held
//               open (field id: the layer it was); the reaper deletes it
//   deactivate  <id>: a layer whose last Put left its device active for the
//               reaper to deactivate
constexpr char kBaseKind[] = "base";
constexpr char kBaseName[] = "base";
constexpr char kDeferredKind[] = "deferred";
constexpr char kDeactivateKind[] = "deactivate";

// The base device's entry, or a previous release's <root>/base file
// ("thin=..\nlayout=root\nstate=creating|ready\n"), read: nullopt if it is
// not one (malformed).
std::optional<DriverEntry> BaseEntry(const std::string& thin, const std::map<std::string, std::string>& kv) {
  auto get = [&](const char* k) {
    auto it = kv.find(k);
    return it == kv.end() ? std::string() : it->second;
  };
  if (get("thin") != thin || (get("state") != "creating" && get("state") != "ready")) return std::nullopt;
  DriverEntry e{kBaseKind, kBaseName, {{"thin", thin}, {"state", get("state")}}};
  if (!get("layout").empty()) e.fields["layout"] = get("layout");
  return e;
}

// ----------------------------------------------------------------- driver ---

class DevmapperDriver : public Driver {
 public:
  DevmapperDriver(std::string root, Config config, std::shared_ptr<LayerRecords> records, bool own_records)
      : root_(std::move(root)), config_(std::move(config)), refs_(absl::StrCat(root_, "/.refs")),
        records_(std::move(records)), own_records_(own_records) {}

  // Closing drains the queued deactivations (the reaper does them before
  // it ends).
  ~DevmapperDriver() override {
    if (reaper_.joinable()) {
      {
        absl::MutexLock l(&reaper_mu_);
        stop_ = true;
      }
      reaper_.join();
    }
  }

  absl::Status Init();

  std::string Name() const override { return kName; }
  absl::Status Create(const std::string& id, const std::string& parent,
                      const CreateOptions& options) override;
  absl::Status Remove(const std::string& id) override;
  absl::StatusOr<std::string> Get(const std::string& id, const std::string& mount_label) override;
  absl::Status Put(const std::string& id) override;
  absl::StatusOr<int> MountCount(const std::string& id) const override;
  bool Exists(const std::string& id) const override;
  absl::StatusOr<std::vector<std::string>> List() const override;
  std::vector<std::pair<std::string, std::string>> Status() const override;
  absl::StatusOr<std::map<std::string, std::string>> Metadata(const std::string& id) const override;
  absl::Status Cleanup() override;

  absl::StatusOr<DiffResult> Diff(const std::string& id, const std::string& parent,
                                  ByteSink& sink) override {
    return NaiveDiff(*this, id, parent, sink);
  }
  absl::StatusOr<ApplyDiffResult> ApplyDiff(const std::string& id, const std::string& parent,
                                            ByteSource& source) override {
    (void)parent;
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
    RETURN_IF_ERROR(CheckFreeSpace(absl::StrCat("applying a diff to layer ", id)));
    return NaiveApplyDiff(*this, id, source, WhiteoutFormat::kDelete);
  }
  absl::StatusOr<std::vector<Change>> Changes(const std::string& id,
                                              const std::string& parent) override {
    return NaiveChanges(*this, id, parent);
  }
  absl::StatusOr<int64_t> DiffSize(const std::string& id, const std::string& parent) override {
    return NaiveDiffSize(*this, id, parent);
  }
  // Usage: bytes are the thin's mapped blocks when it is active (what the
  // pool can tell: blocks shared with the parent's snapshot count too);
  // inodes (and bytes of an inactive thin) come from the naive changes.
  absl::StatusOr<DiskUsage> Usage(const std::string& id, const std::string& parent) override {
    ASSIGN_OR_RETURN(Record r, ReadyRecord(id));
    ASSIGN_OR_RETURN(thinpool::ThinInfo info, pool_->GetThinInfo(r.thin));
    ASSIGN_OR_RETURN(DiskUsage usage, Driver::Usage(id, parent));
    if (info.mapped_bytes.has_value()) usage.bytes = static_cast<int64_t>(*info.mapped_bytes);
    return usage;
  }
  absl::StatusOr<std::vector<MountSpec>> Mounts(const std::string& id) const override;
  absl::Status Committed(const std::string& id) override;

 private:
  std::string MountPath(const std::string& id) const { return absl::StrCat(root_, "/mnt/", id); }
  std::string TmpDir() const { return absl::StrCat(root_, "/tmp"); }
  std::string BaseThin() const { return absl::StrCat(tag_, "+base"); }
  bool OwnsThin(absl::string_view thin) const {
    return absl::StartsWith(thin, absl::StrCat(tag_, "-")) || absl::StartsWith(thin, absl::StrCat(tag_, "+"));
  }

  absl::StatusOr<FileLock> Lock() const { return FileLock::Take(absl::StrCat(root_, "/.lock")); }

  absl::StatusOr<std::optional<Record>> ReadRecord(const std::string& id) const;
  // Drops the record and what hangs off the id (mount point, old pins);
  // with `deferred`, writes that entry in the same transaction.
  absl::Status DropRecord(const std::string& id, const DriverEntry* deferred = nullptr) const;
  // The record of a ready layer; NotFound otherwise.
  absl::StatusOr<Record> ReadyRecord(const std::string& id) const;

  // Earlier releases' files (<root>/metadata/<id>, deferred/<thin>,
  // deactivate/<id>, base) into the records, in one transaction.
  absl::Status MigrateFiles();
  absl::Status OpenPool();
  absl::Status EnsurePoolActive() const;
  absl::Status EnsureBase();
  absl::Status MakeBaseFilesystem(const std::string& device) const;
  absl::Status Recover();
  absl::StatusOr<std::string> PickThinName(const std::string& id) const;
  absl::Status CheckFreeSpace(absl::string_view what) const;

  // Activates the layer's thin (cancelling a pending deferred remove).
  absl::StatusOr<thinpool::ThinInfo> ActivateLayer(const Record& r) const;
  absl::Status MountLayer(const Record& r, const std::string& mount_label) const;
  // Put's last reference: unmounts, then queues the device's deactivation
  // for the reaper (or deactivates now when there is no reaper thread).
  absl::Status UnmountLayer(const Record& r);
  // The deferred deactivation after a Put. Queue: a "deactivate" entry in
  // the records (relaxed commit), then the in-memory queue the reaper
  // thread waits on. Cancel (Get, Mounts, Remove; under the layer's
  // mount-count lock where a device is wanted again, in this process or
  // another): drops both. Deactivate (the reaper, under that lock): only if
  // the entry is still there and nothing mounts the layer.
  absl::Status QueueDeactivation(const Record& r);
  void CancelDeactivation(const std::string& id) const;
  absl::Status DeactivateQueued(const std::string& id);
  // Under the lock at open: the deactivations a crash left queued.
  absl::Status RecoverDeactivations();
  // Waits until the reaper has done every queued deactivation.
  void DrainDeactivations();
  bool HasReaperWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(reaper_mu_) { return stop_ || !queued_.empty(); }
  bool ReaperIdle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(reaper_mu_) {
    return queued_.empty() && !deactivating_;
  }
  // Deactivates a thin's dm device; when it is held open elsewhere and
  // deferred removal is on, asks the kernel to remove it at last close.
  // Returns true if the device is gone now.
  absl::StatusOr<bool> DeactivateThin(const std::string& thin) const;
  // Deletes the thin of a record marked removing and then the record; a
  // busy device hands the thin to the reaper (OK) or, without deferred
  // deletion, fails (the record back to ready unless `r.state`, the state
  // before the removal, was creating).
  absl::Status FinishRemoval(Record r);
  // Deletes a deferred thin once its device is closed. Under the lock.
  absl::Status ReapThin(const std::string& thin);
  // Retries every deferred removal. Takes the lock.
  void ReapDeferred();
  void ReaperLoop();

  const std::string root_;
  const Config config_;
  mutable MountRefs refs_;
  std::shared_ptr<LayerRecords> records_;
  // Records in <root>/records.db (no store): the open finishes interrupted
  // creates too (in a store, its check --repair does).
  const bool own_records_;
  std::string tag_;
  bool owns_pool_ = false;
  std::string pool_name_;
  std::unique_ptr<dm::Control> dm_;
  std::unique_ptr<thinpool::StateDir> state_;
  std::unique_ptr<thinpool::Pool> pool_;
  uint64_t block_bytes_ = 0;
  uint64_t base_bytes_ = 0;
  bool assume_zeroed_ = true;
  // Layers' trees are rootfs/ inside their filesystems (bases made by
  // earlier versions, as Docker's devicemapper), not the filesystems' roots.
  bool rootfs_subdir_ = false;

  mutable absl::Mutex reaper_mu_;
  bool stop_ ABSL_GUARDED_BY(reaper_mu_) = false;
  // Layers whose deactivation Put queued for the reaper thread.
  mutable std::set<std::string> queued_ ABSL_GUARDED_BY(reaper_mu_);
  bool deactivating_ ABSL_GUARDED_BY(reaper_mu_) = false;  // the reaper holds a batch
  std::thread reaper_;
};

absl::StatusOr<std::optional<Record>> DevmapperDriver::ReadRecord(const std::string& id) const {
  ASSIGN_OR_RETURN(std::optional<LayerRecord> lr, records_->Get(id));
  if (!lr) return std::optional<Record>();
  ASSIGN_OR_RETURN(Record r, FromLayerRecord(*lr));
  return std::optional<Record>(std::move(r));
}

absl::StatusOr<Record> DevmapperDriver::ReadyRecord(const std::string& id) const {
  RETURN_IF_ERROR(ValidateLayerId(id));
  ASSIGN_OR_RETURN(LayerRecord lr, records_->GetReady(id));
  return FromLayerRecord(lr);
}

absl::Status DevmapperDriver::DropRecord(const std::string& id, const DriverEntry* deferred) const {
  // pins/<id>: a mount reference of earlier versions' Mounts().
  std::string pin = absl::StrCat(root_, "/pins/", id);
  if (::unlink(pin.c_str()) != 0 && errno != ENOENT) return base::ErrnoError(errno, absl::StrCat("removing ", pin));
  // Without a deferred deletion the thin is gone (or was never made): the
  // drop need not wait for the disk, since an open that finds the record
  // again drops it (Recover: its thin is not in the pool's durable
  // registry). A deferred deletion's thin still exists: that commit is
  // durable, or the removed layer could come back after a power cut.
  RETURN_IF_ERROR(deferred != nullptr ? records_->DropWithEntry(id, *deferred)
                                      : records_->Drop(id, /*relaxed=*/true));
  std::string mnt = MountPath(id);
  if (::rmdir(mnt.c_str()) != 0 && errno != ENOENT && errno != EBUSY) {
    return base::ErrnoError(errno, absl::StrCat("removing ", mnt));
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------ open ---

absl::Status DevmapperDriver::Init() {
  for (const char* sub : {"", "/mnt", "/tmp"}) {
    RETURN_IF_ERROR(MkdirP(absl::StrCat(root_, sub), 0700));
  }
  // Leftover temporaries of a crashed writer.
  ASSIGN_OR_RETURN(std::vector<std::string> tmps, ListDir(TmpDir()));
  for (const std::string& t : tmps) (void)RemoveTree(absl::StrCat(TmpDir(), "/", t));

  std::string instance = absl::StrCat(root_, "/instance");
  ASSIGN_OR_RETURN(std::optional<std::string> tag, ReadSmallFile(instance));
  if (tag) {
    tag_ = std::string(absl::StripAsciiWhitespace(*tag));
  } else {
    std::random_device rd;
    tag_ = absl::StrFormat("%08x", rd());
    RETURN_IF_ERROR(base::WriteFileAtomic(instance, tag_ + "\n", /*durable=*/true));
  }
  if (tag_.size() != 8 || tag_.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::DataLossError(absl::StrCat("devicemapper: ", instance, " does not hold 8 hex digits"));
  }

  auto dm = dm::Control::Open();
  if (!dm.ok()) {
    return UnsupportedError(Unsupported::kKernelLacksFeature,
                            absl::StrCat("device-mapper: ", dm.status().message()));
  }
  dm_ = std::move(*dm);
  RETURN_IF_ERROR(OpenPool());

  {
    ASSIGN_OR_RETURN(FileLock lock, Lock());
    RETURN_IF_ERROR(MigrateFiles());
    RETURN_IF_ERROR(Recover());
    RETURN_IF_ERROR(RecoverDeactivations());
    RETURN_IF_ERROR(EnsureBase());
  }
  if (config_.reaper_interval > absl::ZeroDuration()) {
    reaper_ = std::thread([this] { ReaperLoop(); });
  }
  return absl::OkStatus();
}

// Under the lock. What earlier releases kept in files goes into the
// records in one transaction: the layer records (<root>/metadata/<id>),
// the deferred deletions (deferred/<thin>: "id=<layer>"), the queued
// deactivations (deactivate/<id>, empty) and the base device (base). The
// files go only after it committed (a crash in between: the next open
// migrates them again, and what is already in the records wins). A file
// that is not what its release wrote is DataLoss, and nothing is moved.
absl::Status DevmapperDriver::MigrateFiles() {
  const std::string metadata = absl::StrCat(root_, "/metadata");
  const std::string deferred = absl::StrCat(root_, "/deferred");
  const std::string deactivate = absl::StrCat(root_, "/deactivate");
  const std::string base = absl::StrCat(root_, "/base");
  auto malformed = [](const std::string& path, absl::string_view why) {
    return absl::DataLossError(absl::StrCat("devicemapper: ", path, " is malformed (", why,
                                            "); nothing was moved into the records"));
  };
  std::vector<LayerRecord> records;
  std::vector<DriverEntry> entries;
  ASSIGN_OR_RETURN(std::vector<std::string> ids, ListDir(metadata));
  for (const std::string& id : ids) {
    std::string path = absl::StrCat(metadata, "/", id);
    if (!ValidateLayerId(id).ok()) return malformed(path, "not a layer id");
    ASSIGN_OR_RETURN(std::optional<std::string> text, ReadSmallFile(path));
    if (!text) continue;
    std::optional<LayerRecord> r = ParseRecordFile(id, *text);
    if (!r) return malformed(path, "not a layer record");
    records.push_back(std::move(*r));
  }
  ASSIGN_OR_RETURN(std::vector<std::string> thins, ListDir(deferred));
  for (const std::string& thin : thins) {
    std::string path = absl::StrCat(deferred, "/", thin);
    if (!OwnsThin(thin) || !thinpool::ValidateThinName(thin).ok()) return malformed(path, "not a thin of this root");
    ASSIGN_OR_RETURN(std::optional<std::string> text, ReadSmallFile(path));
    if (!text) continue;
    std::string id = ParseKv(*text)["id"];
    if (!ValidateLayerId(id).ok()) return malformed(path, "no layer id");
    entries.push_back({kDeferredKind, thin, {{"id", id}}});
  }
  ASSIGN_OR_RETURN(std::vector<std::string> queued, ListDir(deactivate));
  for (const std::string& id : queued) {
    if (!ValidateLayerId(id).ok()) return malformed(absl::StrCat(deactivate, "/", id), "not a layer id");
    entries.push_back({kDeactivateKind, id, {}});
  }
  ASSIGN_OR_RETURN(std::optional<std::string> base_text, ReadSmallFile(base));
  if (base_text) {
    std::optional<DriverEntry> e = BaseEntry(BaseThin(), ParseKv(*base_text));
    if (!e) return malformed(base, absl::StrCat("not the record of base device ", BaseThin()));
    entries.push_back(std::move(*e));
  }
  RETURN_IF_ERROR(base::Annotate(records_->Migrate(records, entries),
                                 absl::StrCat("devicemapper: moving the files of ", root_, " into ",
                                              records_->path())));
  for (const std::string& dir : {metadata, deferred, deactivate}) RETURN_IF_ERROR(RemoveTree(dir));
  if (::unlink(base.c_str()) != 0 && errno != ENOENT) return base::ErrnoError(errno, absl::StrCat("removing ", base));
  return absl::OkStatus();
}

absl::Status DevmapperDriver::OpenPool() {
  owns_pool_ = config_.pool_name.empty();
  std::string state_dir = owns_pool_ ? absl::StrCat(root_, "/thinpool") : config_.state_dir;
  pool_name_ = owns_pool_ ? absl::StrCat("graph", tag_) : config_.pool_name;
  ASSIGN_OR_RETURN(state_, thinpool::StateDir::Open(state_dir));
  auto registered = state_->registry().GetPool(pool_name_);
  if (!registered.ok() && registered.status().code() != absl::StatusCode::kNotFound) {
    return registered.status();
  }
  if (registered.ok()) {
    ASSIGN_OR_RETURN(pool_, thinpool::Pool::Open(*state_, *dm_, pool_name_));
    RETURN_IF_ERROR(pool_->Activate());
  } else if (!owns_pool_) {
    return UnsupportedError(Unsupported::kConfiguration,
                            absl::StrCat("devicemapper: dm.thinpooldev=", pool_name_,
                                         ": no such pool in ", state_dir));
  } else {
    thinpool::PoolOptions po;
    po.data_bytes = config_.loop_data_bytes;
    if (config_.loop_metadata_bytes != 0) po.metadata_bytes = config_.loop_metadata_bytes;
    po.block_bytes = config_.block_bytes;
    // Fail writes at once when the pool is full rather than queueing them:
    // dm.min_free_space keeps layers from getting there.
    po.error_if_no_space = true;
    auto created = thinpool::Pool::Create(*state_, *dm_, pool_name_, po);
    if (!created.ok()) return base::Annotate(created.status(), "devicemapper: creating the loopback pool");
    pool_ = std::move(*created);
  }
  ASSIGN_OR_RETURN(thinpool::PoolRecord rec, pool_->Record());
  block_bytes_ = uint64_t{rec.block_sectors} * 512;
  // Without block zeroing a partly written new block keeps old data: the
  // filesystem must then write its inode tables itself.
  assume_zeroed_ = std::find(rec.features.begin(), rec.features.end(), "skip_block_zeroing") ==
                   rec.features.end();
  return absl::OkStatus();
}

absl::Status DevmapperDriver::EnsurePoolActive() const {
  ASSIGN_OR_RETURN(bool active, pool_->IsActive());
  if (active) return absl::OkStatus();
  return pool_->Activate();
}

// Under the lock. Makes the base device (thin + ext4, its root empty) unless
// a complete one exists; an incomplete one (crash) is deleted and made again.
// A base of earlier versions (no layout=root) keeps layers under rootfs/.
absl::Status DevmapperDriver::EnsureBase() {
  ASSIGN_OR_RETURN(std::optional<DriverEntry> entry, records_->GetEntry(kBaseKind, kBaseName));
  if (entry && !BaseEntry(BaseThin(), entry->fields)) {
    return absl::DataLossError(absl::StrCat("devicemapper: the base device's entry in ", records_->path(),
                                            " does not name ", BaseThin()));
  }
  auto info = pool_->GetThinInfo(BaseThin());
  if (!info.ok() && info.status().code() != absl::StatusCode::kNotFound) return info.status();
  if (entry && entry->Field("state") == "ready" && info.ok()) {
    base_bytes_ = info->size_bytes;
    rootfs_subdir_ = entry->Field("layout") != "root";
    return absl::OkStatus();
  }
  if (info.ok()) {
    RETURN_IF_ERROR(DeactivateThin(BaseThin()).status());
    RETURN_IF_ERROR(pool_->DeleteThin(BaseThin()));
  }
  // The intent need not reach the disk: the thin made next is in the pool's
  // registry, and an open that finds it without a ready entry makes it again.
  RETURN_IF_ERROR(records_->PutEntry({kBaseKind, kBaseName, {{"thin", BaseThin()}, {"state", "creating"}}},
                                     /*relaxed=*/true));
  ASSIGN_OR_RETURN(thinpool::ThinInfo base, pool_->CreateThin(BaseThin(), config_.base_bytes, /*activate=*/true));
  Failpoint("devmapper_base_after_thin");
  absl::Status made = MakeBaseFilesystem(base.device);
  ASSIGN_OR_RETURN(bool gone, DeactivateThin(BaseThin()));
  (void)gone;
  RETURN_IF_ERROR(made);
  Failpoint("devmapper_base_after_mkfs");
  RETURN_IF_ERROR(records_->PutEntry(
      {kBaseKind, kBaseName, {{"thin", BaseThin()}, {"layout", "root"}, {"state", "ready"}}}, /*relaxed=*/false));
  base_bytes_ = base.size_bytes;
  rootfs_subdir_ = false;
  return absl::OkStatus();
}

// ext4 on the fresh base device, its root the layer's tree: lost+found goes
// (as containerd's devmapper snapshotter does; e2fsck makes it again when it
// needs it), so a mount of the device is the layer's view.
absl::Status DevmapperDriver::MakeBaseFilesystem(const std::string& device) const {
  thinpool::Ext4Options eo;
  eo.label = "dmthin-base";
  eo.assume_zeroed = assume_zeroed_;
  RETURN_IF_ERROR(base::Annotate(thinpool::MakeExt4(device, eo), "devicemapper: making the base filesystem"));
  std::string mnt = absl::StrCat(TmpDir(), "/base-mnt");
  RETURN_IF_ERROR(MkdirP(mnt, 0700));
  if (::mount(device.c_str(), mnt.c_str(), "ext4", 0, nullptr) != 0) {
    return base::ErrnoError(errno, absl::StrCat("mounting the base device ", device, " on ", mnt));
  }
  std::string lost = absl::StrCat(mnt, "/lost+found");
  absl::Status made;
  if (::rmdir(lost.c_str()) != 0 && errno != ENOENT) made = base::ErrnoError(errno, "removing lost+found");
  RETURN_IF_ERROR(Unmount(mnt));
  ::rmdir(mnt.c_str());
  return made;
}

// Under the lock: finishes or undoes what a crashed process left. Create
// and Remove hold the lock from their intent to their end, so a record
// still "removing" here is a dead process's. A "creating" one may be a
// store's layer whose Ready waits for the store's commit: in a store, its
// check --repair undoes it (Remove); alone, the open finishes it if its
// thin is in the pool, else undoes it.
absl::Status DevmapperDriver::Recover() {
  ASSIGN_OR_RETURN(std::vector<LayerRecord> all, records_->List());
  // One listing of the pool (one registry read, one DM_LIST_DEVICES) for
  // every record and the orphan pass, not a GetThinInfo (registry reads and
  // a DM_DEV_STATUS) per layer: this runs at every open, so in every
  // graphctl process (31 s of a 5,000-layer `graphctl ls` under TCG).
  ASSIGN_OR_RETURN(std::vector<thinpool::ThinInfo> thins, pool_->ListThins());
  std::set<std::string> in_pool, ready_in_pool;
  for (const auto& t : thins) {
    in_pool.insert(t.name);
    if (t.state == thinpool::ThinState::kReady) ready_in_pool.insert(t.name);
  }
  std::set<std::string> referenced;
  for (const LayerRecord& lr : all) {
    ASSIGN_OR_RETURN(Record r, FromLayerRecord(lr));
    switch (r.state) {
      case RecordState::kCreating:
        referenced.insert(r.thin);  // its thin is this record's, not an orphan
        if (!own_records_) break;   // in a store, its check --repair undoes it
        // The snapshot is the whole layer: a create whose thin the pool has
        // (its registry reconciled with the kernel by the pool's open) is
        // finished; one without is undone.
        if (ready_in_pool.count(r.thin)) {
          RETURN_IF_ERROR(base::Annotate(records_->Ready(r.id, r.Fields()),
                                         absl::StrCat("devicemapper: finishing the creation of layer ", r.id)));
          break;
        }
        RETURN_IF_ERROR(base::Annotate(FinishRemoval(r),
                                       absl::StrCat("devicemapper: undoing the creation of layer ", r.id)));
        break;
      case RecordState::kRemoving:
        referenced.insert(r.thin);
        RETURN_IF_ERROR(FinishRemoval(r));
        break;
      case RecordState::kReady: {
        // A removal whose "removing" mark a power cut lost while the
        // pool's (durable) registry had already deleted the thin.
        if (!in_pool.count(r.thin)) {
          RETURN_IF_ERROR(DropRecord(r.id));
          break;
        }
        referenced.insert(r.thin);
        break;
      }
    }
  }
  ASSIGN_OR_RETURN(std::vector<DriverEntry> deferred, records_->Entries(kDeferredKind));
  for (const DriverEntry& e : deferred) {
    if (!OwnsThin(e.name) || !thinpool::ValidateThinName(e.name).ok()) {
      return absl::DataLossError(absl::StrCat("devicemapper: deferred deletion \"", e.name, "\" in ",
                                              records_->path(), " names no thin of this root"));
    }
    referenced.insert(e.name);
    RETURN_IF_ERROR(ReapThin(e.name));
  }
  // Orphans: our thins no record names (a record lost, or a thin made by a
  // process that crashed before writing its record). The base is handled by
  // EnsureBase. (FinishRemoval and ReapThin above delete only thins marked
  // referenced, so the listing made before them still serves.)
  for (const auto& t : thins) {
    if (!OwnsThin(t.name) || t.name == BaseThin() || referenced.count(t.name)) continue;
    auto gone = DeactivateThin(t.name);
    if (!gone.ok() || !*gone) continue;  // busy: next time
    RETURN_IF_ERROR(base::Annotate(pool_->DeleteThin(t.name),
                                   absl::StrCat("devicemapper: deleting orphaned thin device ", t.name)));
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------- helpers ---

absl::StatusOr<std::string> DevmapperDriver::PickThinName(const std::string& id) const {
  std::string stem = id.size() <= kMaxVerbatimId
                         ? absl::StrCat(tag_, "-", id)
                         : absl::StrCat(tag_, "-h", absl::StripPrefix(Sha256Digest(id), "sha256:"));
  for (int n = 1; n < 1000000; ++n) {
    std::string name = n == 1 ? stem : absl::StrCat(stem, "+", n);
    auto info = pool_->GetThinInfo(name);
    if (!info.ok() && info.status().code() == absl::StatusCode::kNotFound) return name;
    if (!info.ok()) return info.status();
  }
  return absl::ResourceExhaustedError(absl::StrCat("devicemapper: no free thin name for layer ", id));
}

absl::Status DevmapperDriver::CheckFreeSpace(absl::string_view what) const {
  ASSIGN_OR_RETURN(dm::Name name, dm::Name::Create(pool_->dm_name()));
  // noflush: no metadata commit just to look. One ioctl when the pool is
  // active (the usual case); only when it is not is it activated first.
  absl::StatusOr<dm::ThinPoolStatus> status = dm_->GetThinPoolStatus(name, /*noflush=*/true);
  if (!status.ok()) {
    RETURN_IF_ERROR(EnsurePoolActive());
    status = dm_->GetThinPoolStatus(name, /*noflush=*/true);
  }
  ASSIGN_OR_RETURN(dm::ThinPoolStatus k, std::move(status));
  if (!k.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "devicemapper: ", what, ": thin pool '", pool_name_, "' has failed (kernel status Fail/Error); "
        "deactivate it and run thin_check"));
  }
  if (k.mode == dm::ThinPoolStatus::Mode::kReadOnly) {
    return absl::FailedPreconditionError(absl::StrCat("devicemapper: ", what, ": thin pool '", pool_name_,
                                                      "' is read-only (metadata full or damaged)"));
  }
  if (k.mode == dm::ThinPoolStatus::Mode::kOutOfDataSpace) {
    return absl::ResourceExhaustedError(absl::StrCat("devicemapper: ", what, ": thin pool '", pool_name_,
                                                     "' is out of data space"));
  }
  auto check = [&](const char* kind, uint64_t used, uint64_t total, uint64_t unit) -> absl::Status {
    if (total == 0) return absl::OkStatus();
    uint64_t free = total > used ? total - used : 0;
    double pct = 100.0 * static_cast<double>(free) / static_cast<double>(total);
    if (pct >= config_.min_free_percent) return absl::OkStatus();
    return absl::ResourceExhaustedError(absl::StrFormat(
        "devicemapper: %s: thin pool '%s' has %s of %s %s space free (%.1f%%), below "
        "dm.min_free_space=%g%%; remove layers, grow the pool, or lower dm.min_free_space",
        std::string(what), pool_name_, base::FormatSize(free * unit), base::FormatSize(total * unit), kind,
        pct, config_.min_free_percent));
  };
  RETURN_IF_ERROR(check("data", k.used_data.value(), k.total_data.value(), block_bytes_));
  return check("metadata", k.used_metadata.value(), k.total_metadata.value(), dm::kMetaBlockSize);
}

absl::StatusOr<bool> DevmapperDriver::DeactivateThin(const std::string& thin) const {
  absl::Status s = pool_->DeactivateThin(thin);
  if (s.ok()) return true;
  if (s.code() == absl::StatusCode::kNotFound) return true;
  if (!IsBusy(s)) return s;
  if (!config_.deferred_removal) return s;
  ASSIGN_OR_RETURN(thinpool::ThinInfo info, pool_->GetThinInfo(thin));
  ASSIGN_OR_RETURN(dm::Name name, dm::Name::Create(info.dm_name));
  dm::RemoveOptions ro;
  ro.deferred = true;
  ro.retries = 0;
  auto removed = dm_->Remove(name, ro);
  if (!removed.ok()) {
    if (base::HasErrno(removed.status(), ENXIO) || base::HasErrno(removed.status(), ENODEV)) return true;
    return base::Annotate(removed.status(), absl::StrCat("devicemapper: deferred removal of ", info.dm_name));
  }
  return *removed == dm::Removal::kRemoved;
}

absl::StatusOr<thinpool::ThinInfo> DevmapperDriver::ActivateLayer(const Record& r) const {
  RETURN_IF_ERROR(EnsurePoolActive());
  ASSIGN_OR_RETURN(thinpool::ThinInfo info, pool_->ActivateThin(r.thin));
  // A device left to a deferred remove (Put while a leaked mount held it)
  // is wanted again: keep it.
  ASSIGN_OR_RETURN(dm::Name name, dm::Name::Create(info.dm_name));
  ASSIGN_OR_RETURN(dm::DeviceInfo di, dm_->Info(name));
  if (di.deferred_remove()) RETURN_IF_ERROR(dm_->CancelDeferredRemove(name));
  return info;
}

absl::Status DevmapperDriver::MountLayer(const Record& r, const std::string& mount_label) const {
  // Under the mount-count lock: a deactivation the reaper is doing has
  // finished (the lock waited for it); a queued one is cancelled, and the
  // device, if still active, is used as it is.
  CancelDeactivation(r.id);
  ASSIGN_OR_RETURN(thinpool::ThinInfo info, ActivateLayer(r));
  std::string mnt = MountPath(r.id);
  if (::mkdir(mnt.c_str(), 0755) != 0 && errno != EEXIST) {
    absl::Status s = base::ErrnoError(errno, absl::StrCat("creating ", mnt));
    (void)DeactivateThin(r.thin);
    return s;
  }
  std::vector<std::string> opts;
  if (!config_.mount_options.empty()) opts.push_back(config_.mount_options);
  if (!mount_label.empty()) {
    if (mount_label.find_first_of("\"\n") != std::string::npos) {
      (void)DeactivateThin(r.thin);
      return absl::InvalidArgumentError("devicemapper: mount label holds a quote");
    }
    opts.push_back(absl::StrCat("context=\"", mount_label, "\""));
  }
  std::string data = absl::StrJoin(opts, ",");
  if (::mount(info.device.c_str(), mnt.c_str(), "ext4", 0, data.empty() ? nullptr : data.c_str()) != 0) {
    absl::Status s = base::ErrnoError(errno, absl::StrCat("mounting ", info.device, " (layer ", r.id, ") on ", mnt));
    (void)DeactivateThin(r.thin);
    return s;
  }
  if (!rootfs_subdir_) return absl::OkStatus();
  std::string rootfs = absl::StrCat(mnt, "/rootfs");
  if (::mkdir(rootfs.c_str(), 0755) != 0 && errno != EEXIST) {
    absl::Status s = base::ErrnoError(errno, absl::StrCat("creating ", rootfs));
    (void)Unmount(mnt);
    (void)DeactivateThin(r.thin);
    return s;
  }
  return absl::OkStatus();
}

absl::Status DevmapperDriver::UnmountLayer(const Record& r) {
  // The umount stays on the caller's path: the caller may remove the mount
  // point's parent, or mount the device elsewhere, as soon as Put returns.
  RETURN_IF_ERROR(Unmount(MountPath(r.id)));
  // DM_DEV_REMOVE (two RCU grace periods in the kernel) goes to the reaper.
  if (reaper_.joinable() && QueueDeactivation(r).ok()) return absl::OkStatus();
  ASSIGN_OR_RETURN(bool gone, DeactivateThin(r.thin));
  (void)gone;  // a deferred remove finishes when the last user goes
  return absl::OkStatus();
}

absl::Status DevmapperDriver::QueueDeactivation(const Record& r) {
  // The entry first: a crash after it leaves an active device that the
  // next open deactivates (RecoverDeactivations). Relaxed (no wait for the
  // disk on the caller's path): a power cut takes the device with it.
  RETURN_IF_ERROR(records_->PutEntry({kDeactivateKind, r.id, {}}, /*relaxed=*/true));
  Failpoint("devmapper_after_put_queued");
  absl::MutexLock l(&reaper_mu_);
  queued_.insert(r.id);
  return absl::OkStatus();
}

void DevmapperDriver::CancelDeactivation(const std::string& id) const {
  {
    absl::MutexLock l(&reaper_mu_);
    queued_.erase(id);
  }
  // A read first: a Get with nothing queued (the common case) writes nothing.
  auto queued = records_->GetEntry(kDeactivateKind, id);
  if (!queued.ok() || *queued) (void)records_->DeleteEntry(kDeactivateKind, id);
}

absl::Status DevmapperDriver::DeactivateQueued(const std::string& id) {
  std::string mnt = MountPath(id);
  return refs_.WithLock(id, [&] { return Mounted(mnt); }, [&](int live) -> absl::Status {
    // Mounted again, or cancelled by a Get, Mounts or Remove meanwhile.
    if (live > 0) return absl::OkStatus();
    ASSIGN_OR_RETURN(std::optional<DriverEntry> queued, records_->GetEntry(kDeactivateKind, id));
    if (!queued) return absl::OkStatus();
    auto r = ReadyRecord(id);
    if (r.ok()) {
      ASSIGN_OR_RETURN(bool gone, DeactivateThin(r->thin));
      (void)gone;  // held open elsewhere: the kernel removes it at last close
      Failpoint("devmapper_after_queued_deactivate");
    } else if (r.status().code() != absl::StatusCode::kNotFound) {
      return r.status();  // the entry stays: the next open retries
    }
    return records_->DeleteEntry(kDeactivateKind, id);
  });
}

absl::Status DevmapperDriver::RecoverDeactivations() {
  ASSIGN_OR_RETURN(std::vector<DriverEntry> queued, records_->Entries(kDeactivateKind));
  for (const DriverEntry& e : queued) {
    if (!ValidateLayerId(e.name).ok()) {
      RETURN_IF_ERROR(records_->DeleteEntry(kDeactivateKind, e.name));  // names no layer: nothing to do
      continue;
    }
    RETURN_IF_ERROR(base::Annotate(DeactivateQueued(e.name), absl::StrCat("devicemapper: deactivating layer ",
                                                                          e.name, " after its last Put")));
  }
  return absl::OkStatus();
}

void DevmapperDriver::DrainDeactivations() {
  if (!reaper_.joinable()) return;
  absl::MutexLock l(&reaper_mu_);
  reaper_mu_.Await(absl::Condition(this, &DevmapperDriver::ReaperIdle));
}

absl::Status DevmapperDriver::FinishRemoval(Record r) {
  // The pool's registry alone says whether the thin exists (no ioctl: the
  // deactivation and the delete below look at the kernel).
  auto thin = state_->registry().GetThin(pool_name_, r.thin);
  if (!thin.ok()) {
    if (thin.status().code() != absl::StatusCode::kNotFound) return thin.status();
    return DropRecord(r.id);  // thin already gone
  }
  RETURN_IF_ERROR(EnsurePoolActive());
  ASSIGN_OR_RETURN(bool gone, DeactivateThin(r.thin));
  absl::Status deleted;
  if (gone) {
    thinpool::DeleteOptions dopt;
    dopt.discard = config_.blkdiscard;
    deleted = pool_->DeleteThin(r.thin, dopt);
    if (deleted.ok() || deleted.code() == absl::StatusCode::kNotFound) {
      Failpoint("devmapper_after_delete");
      return DropRecord(r.id);
    }
    if (!IsBusy(deleted)) return deleted;
  }
  // Busy: held open by a mount in another namespace (or an open fd).
  if (!config_.deferred_deletion) {
    // A whole layer stays one; an unfinished create stays to be undone.
    if (r.state != RecordState::kCreating) RETURN_IF_ERROR(records_->Restore(r.id));
    return absl::FailedPreconditionError(absl::StrCat(
        "devicemapper: layer ", r.id, " is busy (thin device ", r.thin,
        " is held open, e.g. by a mount in another mount namespace) and dm.use_deferred_deletion is off"));
  }
  // The layer goes now; its thin id waits for the reaper.
  // One transaction: the record goes and the thin's deferred deletion is
  // recorded.
  const DriverEntry deferred{kDeferredKind, r.thin, {{"id", r.id}}};
  RETURN_IF_ERROR(DropRecord(r.id, &deferred));
  Failpoint("devmapper_after_defer");
  return absl::OkStatus();
}

absl::Status DevmapperDriver::ReapThin(const std::string& thin) {
  auto info = pool_->GetThinInfo(thin);
  if (info.ok()) {
    RETURN_IF_ERROR(EnsurePoolActive());
    ASSIGN_OR_RETURN(bool gone, DeactivateThin(thin));
    if (!gone) return absl::OkStatus();  // still held open: next time
    thinpool::DeleteOptions dopt;
    dopt.discard = config_.blkdiscard;
    absl::Status deleted = pool_->DeleteThin(thin, dopt);
    if (IsBusy(deleted)) return absl::OkStatus();
    if (!deleted.ok() && deleted.code() != absl::StatusCode::kNotFound) return deleted;
    Failpoint("devmapper_after_reap_delete");
  } else if (info.status().code() != absl::StatusCode::kNotFound) {
    return info.status();
  }
  return records_->DeleteEntry(kDeferredKind, thin);
}

void DevmapperDriver::ReapDeferred() {
  auto deferred = records_->Entries(kDeferredKind);
  if (!deferred.ok() || deferred->empty()) return;
  auto lock = Lock();
  if (!lock.ok()) return;
  for (const DriverEntry& e : *deferred) {
    if (!OwnsThin(e.name) || !thinpool::ValidateThinName(e.name).ok()) continue;
    (void)ReapThin(e.name);
  }
}

// Wakes for a queued deactivation (at once), the driver's close (after
// doing what is queued) or every dm.reaper_interval (deferred deletions).
void DevmapperDriver::ReaperLoop() {
  for (;;) {
    std::set<std::string> batch;
    bool stop = false;
    {
      absl::MutexLock l(&reaper_mu_);
      reaper_mu_.AwaitWithTimeout(absl::Condition(this, &DevmapperDriver::HasReaperWork),
                                  config_.reaper_interval);
      batch.swap(queued_);
      stop = stop_;
      deactivating_ = !batch.empty();
    }
    for (const std::string& id : batch) (void)DeactivateQueued(id);
    {
      absl::MutexLock l(&reaper_mu_);
      deactivating_ = false;
      if (stop_ && queued_.empty()) return;
    }
    if (batch.empty() && !stop) ReapDeferred();
  }
}

// ------------------------------------------------------------ interface ---

absl::Status DevmapperDriver::Create(const std::string& id, const std::string& parent,
                                     const CreateOptions& options) {
  RETURN_IF_ERROR(ValidateLayerId(id));
  for (const auto& [k, v] : options.storage_options) {
    return absl::InvalidArgumentError(absl::StrCat(
        "devicemapper: unknown storage option \"", k, "\" (every layer has the base size, dm.basesize=",
        base::FormatSize(base_bytes_), ")"));
  }
  if (!parent.empty()) RETURN_IF_ERROR(ValidateLayerId(parent));
  ReapDeferred();
  ASSIGN_OR_RETURN(FileLock lock, Lock());
  ASSIGN_OR_RETURN(std::optional<Record> existing, ReadRecord(id));
  if (existing) {
    return absl::AlreadyExistsError(absl::StrCat(
        "layer ", id, " already exists", existing->state == RecordState::kRemoving ? " (being removed)" : ""));
  }
  std::string origin = BaseThin();
  if (!parent.empty()) {
    ASSIGN_OR_RETURN(std::optional<Record> p, ReadRecord(parent));
    if (!p || p->state != RecordState::kReady) {
      return absl::NotFoundError(absl::StrCat("parent layer ", parent, " does not exist"));
    }
    origin = p->thin;
  }
  RETURN_IF_ERROR(CheckFreeSpace(absl::StrCat("creating layer ", id)));
  Record r;
  r.id = id;
  r.parent = parent;
  r.rw = options.read_write;
  ASSIGN_OR_RETURN(r.thin, PickThinName(id));
  // The intent: a "creating" record naming the thin.
  //  - In a store: before the snapshot, relaxed (no wait for the disk: a
  //    power cut that loses it leaves at most a thin no record names, which
  //    the open's orphan pass deletes); the store's check --repair undoes a
  //    create it finds half done (Remove), and Ready waits for the store's
  //    durable commit of the layer.
  //  - Alone: the one commit that waits for the disk, beside the snapshot
  //    (its fdatasync overlaps the pool's intent and the kernel's metadata
  //    commits). Whatever a crash interrupts, the open (Recover) finds a
  //    consistent state: no record and maybe a thin (an orphan: deleted),
  //    or the intent and the thin ready in the pool's durable registry
  //    (the snapshot is the whole layer: rolled forward), or the intent
  //    without a thin (dropped). So Ready need not wait for the disk.
  std::future<absl::Status> intent;
  absl::Status recorded;
  if (own_records_) {
    intent = std::async(std::launch::async,
                        [this, &id, fields = r.Fields()] { return records_->Begin(id, fields, /*relaxed=*/false); });
    if (FailpointIs("devmapper_create_after_intent")) {  // crash tests: die before the snapshot
      recorded = intent.get();
      Failpoint("devmapper_create_after_intent");
    }
  } else {
    RETURN_IF_ERROR(records_->Begin(id, r.Fields(), /*relaxed=*/true));
    Failpoint("devmapper_create_after_intent");
  }
  // A container (read-write) layer is mounted next: activate its device now,
  // which thinpool overlaps with the snapshot's own commit. Image layers are
  // left inactive until someone mounts them.
  auto snap = pool_->Snapshot(origin, r.thin, /*activate=*/r.rw);
  if (intent.valid()) recorded = intent.get();
  absl::Status made = snap.ok() ? recorded : snap.status();
  if (made.ok()) {
    Failpoint("devmapper_after_snapshot");
    // In a store, held until the store commits the layer with it.
    made = records_->Ready(id, r.Fields(), /*relaxed=*/own_records_);
  }
  if (!made.ok()) {
    if (pool_->GetThinInfo(r.thin).ok()) {
      (void)DeactivateThin(r.thin);
      (void)pool_->DeleteThin(r.thin);
    }
    (void)DropRecord(id);
    return base::Annotate(made, absl::StrCat("devicemapper: creating layer ", id));
  }
  return absl::OkStatus();
}

absl::Status DevmapperDriver::Remove(const std::string& id) {
  RETURN_IF_ERROR(ValidateLayerId(id));
  ReapDeferred();
  ASSIGN_OR_RETURN(FileLock lock, Lock());
  // Whatever state the record is in: a store's check --repair removes the
  // layers of interrupted creates and removals too.
  ASSIGN_OR_RETURN(std::optional<Record> found, ReadRecord(id));
  if (!found) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
  Record r = *found;
  // Relaxed: a power cut that loses the mark leaves the record ready,
  // with its thin either untouched (the layer is whole: the removal did
  // not happen) or deleted in the pool's durable registry (the open drops
  // the record: Recover). A process crash loses nothing.
  if (r.state != RecordState::kRemoving) RETURN_IF_ERROR(records_->Removing(id, /*relaxed=*/true));
  Failpoint("devmapper_after_remove_mark");
  std::string mnt = MountPath(id);
  // A deactivation queued by the last Put: FinishRemoval deactivates now;
  // one the reaper is doing holds the mount-count lock, which Reset waits for.
  CancelDeactivation(id);
  absl::Status unmounted = refs_.Reset(id, [&] { return Unmount(mnt); });
  if (unmounted.ok() && Mounted(mnt)) unmounted = Unmount(mnt);
  if (!unmounted.ok()) {
    if (r.state == RecordState::kReady) (void)records_->Restore(id);
    return unmounted;
  }
  return FinishRemoval(r);
}

absl::StatusOr<std::string> DevmapperDriver::Get(const std::string& id, const std::string& mount_label) {
  ASSIGN_OR_RETURN(Record r, ReadyRecord(id));
  std::string mnt = MountPath(id);
  RETURN_IF_ERROR(refs_.Acquire(id, [&] { return Mounted(mnt); }, [&] { return MountLayer(r, mount_label); }));
  return rootfs_subdir_ ? absl::StrCat(mnt, "/rootfs") : mnt;
}

absl::Status DevmapperDriver::Put(const std::string& id) {
  RETURN_IF_ERROR(ValidateLayerId(id));
  ASSIGN_OR_RETURN(std::optional<Record> r, ReadRecord(id));
  if (!r) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
  return refs_.Release(id, [&] { return UnmountLayer(*r); });
}

absl::StatusOr<int> DevmapperDriver::MountCount(const std::string& id) const {
  RETURN_IF_ERROR(ValidateLayerId(id));
  std::string mnt = MountPath(id);
  return refs_.Live(id, [&] { return Mounted(mnt); });
}

bool DevmapperDriver::Exists(const std::string& id) const { return ReadyRecord(id).ok(); }

absl::StatusOr<std::vector<std::string>> DevmapperDriver::List() const {
  ASSIGN_OR_RETURN(std::vector<LayerRecord> all, records_->List());
  std::vector<std::string> out;
  for (const LayerRecord& r : all) {
    if (r.state == RecordState::kReady) out.push_back(r.id);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> DevmapperDriver::Status() const {
  std::vector<std::pair<std::string, std::string>> out;
  auto fs = BackingFsName(root_);
  out.push_back({"Pool Name", pool_name_});
  out.push_back({"Pool State Dir", state_->path()});
  out.push_back({"Pool Blocksize", base::FormatSize(block_bytes_)});
  out.push_back({"Base Device Size", base::FormatSize(base_bytes_)});
  out.push_back({"Backing Filesystem", fs.ok() ? *fs : "unknown"});
  out.push_back({"Filesystem", "ext4"});
  out.push_back({"Thin Prefix", tag_});
  auto rec = pool_->Record();
  if (rec.ok()) {
    bool files = rec->backing == thinpool::PoolBacking::kFiles;
    out.push_back({files ? "Data loop file" : "Data device", rec->data_path});
    out.push_back({files ? "Metadata loop file" : "Metadata device", rec->metadata_path});
  }
  auto st = pool_->Status();
  if (st.ok()) {
    auto sizes = [&](const char* what, uint64_t used, uint64_t total) {
      out.push_back({absl::StrCat(what, " Space Used"), base::FormatSize(used)});
      out.push_back({absl::StrCat(what, " Space Total"), base::FormatSize(total)});
      out.push_back({absl::StrCat(what, " Space Available"), base::FormatSize(total > used ? total - used : 0)});
    };
    sizes("Data", st->data_used_bytes, st->data_total_bytes);
    sizes("Metadata", st->metadata_used_bytes, st->metadata_total_bytes);
    out.push_back({"Pool Status", st->Summary()});
  } else {
    out.push_back({"Pool Status", std::string(st.status().message())});
  }
  out.push_back({"Thin Pool Minimum Free Space", absl::StrFormat("%g%%", config_.min_free_percent)});
  out.push_back({"Deferred Removal Enabled", config_.deferred_removal ? "true" : "false"});
  out.push_back({"Deferred Deletion Enabled", config_.deferred_deletion ? "true" : "false"});
  auto deferred = records_->Entries(kDeferredKind);
  out.push_back({"Deferred Deleted Device Count", deferred.ok() ? absl::StrCat(deferred->size()) : "unknown"});
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> DevmapperDriver::Metadata(const std::string& id) const {
  ASSIGN_OR_RETURN(Record r, ReadyRecord(id));
  ASSIGN_OR_RETURN(thinpool::ThinInfo info, pool_->GetThinInfo(r.thin));
  return std::map<std::string, std::string>{
      {"DeviceId", absl::StrCat(info.dev_id)},
      {"DeviceName", info.dm_name},
      {"DeviceSize", absl::StrCat(info.size_bytes)},
  };
}

// The thin device with its ext4, as containerd's devmapper snapshotter
// describes it: the caller mounts the device (its node exists while the thin
// is active; Mounts activates it, Commit and Remove deactivate it). Nothing
// is mounted here and no reference is taken.
absl::StatusOr<std::vector<MountSpec>> DevmapperDriver::Mounts(const std::string& id) const {
  ASSIGN_OR_RETURN(Record r, ReadyRecord(id));
  if (rootfs_subdir_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "devicemapper: layer ", id, " lives under rootfs/ of its filesystem (a store made by an earlier "
        "version), which a mount of the device cannot name; use Get"));
  }
  // Under the mount-count lock, as a Get's mount: a deactivation queued by
  // the last Put must not take the device from the caller.
  thinpool::ThinInfo info;
  std::string mnt = MountPath(id);
  RETURN_IF_ERROR(refs_.WithLock(id, [&] { return Mounted(mnt); }, [&](int) -> absl::Status {
    CancelDeactivation(id);
    ASSIGN_OR_RETURN(info, ActivateLayer(r));
    return absl::OkStatus();
  }));
  MountSpec m;
  m.type = "ext4";
  m.source = info.device;
  for (absl::string_view o : absl::StrSplit(config_.mount_options, ',', absl::SkipEmpty())) {
    m.options.emplace_back(o);
  }
  m.options.push_back(r.rw ? "rw" : "ro");
  return std::vector<MountSpec>{m};
}

absl::Status DevmapperDriver::Committed(const std::string& id) {
  ASSIGN_OR_RETURN(Record r, ReadyRecord(id));
  ASSIGN_OR_RETURN(int mounted, MountCount(id));
  if (mounted > 0) return absl::OkStatus();  // Get's mount keeps it; the last Put deactivates
  absl::Status s = pool_->DeactivateThin(r.thin);
  // Still open (a caller's mount of the described device): it stays active
  // until Remove.
  if (IsBusy(s) || s.code() == absl::StatusCode::kNotFound) return absl::OkStatus();
  return s;
}

absl::Status DevmapperDriver::Cleanup() {
  DrainDeactivations();
  absl::Status first;
  auto keep = [&](const absl::Status& s) {
    if (first.ok() && !s.ok()) first = s;
  };
  ASSIGN_OR_RETURN(std::vector<LayerRecord> all, records_->List());
  for (const LayerRecord& lr : all) {
    auto r = FromLayerRecord(lr);
    if (!r.ok()) continue;
    const Record& rec = *r;
    const std::string& id = rec.id;
    keep(refs_.Reset(id, [&] { return Unmount(MountPath(id)); }));
    if (Mounted(MountPath(id))) keep(Unmount(MountPath(id)));
    keep(DeactivateThin(rec.thin).status());
  }
  ReapDeferred();  // thins whose holders have gone meanwhile
  if (owns_pool_) {
    absl::Status s = pool_->Deactivate(/*force=*/false);
    // Active thins left (deferred removals, other users): keep the pool.
    if (!s.ok() && s.code() != absl::StatusCode::kFailedPrecondition) keep(s);
  }
  return first;
}

}  // namespace

DriverInfo DevmapperDriverInfo() {
  DriverInfo info;
  info.name = kName;
  info.priority = 30;
  info.probe = [](const DriverOptions& o) -> absl::Status {
    if (::geteuid() != 0) {
      return UnsupportedError(Unsupported::kPrivilege, "devicemapper needs root (device-mapper ioctls, mount)");
    }
    if (::access("/dev/mapper/control", F_OK) != 0 && ::access("/sys/class/misc/device-mapper", F_OK) != 0) {
      return UnsupportedError(Unsupported::kKernelLacksFeature,
                              "the kernel has no device-mapper (no /dev/mapper/control)");
    }
    ASSIGN_OR_RETURN(Config c, ParseConfig(o));
    struct stat st;
    bool made_before = ::stat(absl::StrCat(o.root, "/instance").c_str(), &st) == 0;
    if (c.pool_name.empty() && !c.loopback && !made_before) {
      return UnsupportedError(
          Unsupported::kConfiguration,
          absl::StrCat("devicemapper needs a pool: pass dm.thinpooldev=<dmthin pool> or dm.loopback=true "
                       "(or dm.loopdatasize=<size>) to make one on sparse files under ",
                       o.root));
    }
    return absl::OkStatus();
  };
  info.create = [](const DriverOptions& o) -> absl::StatusOr<std::unique_ptr<Driver>> {
    ASSIGN_OR_RETURN(Config c, ParseConfig(o));
    RETURN_IF_ERROR(LayerRecords::ClaimHome(o.root, o.records == nullptr, kName));
    ASSIGN_OR_RETURN(std::shared_ptr<LayerRecords> records, LayerRecords::ForDriver(o.root, o.records));
    auto d = std::make_unique<DevmapperDriver>(o.root, std::move(c), std::move(records), o.records == nullptr);
    RETURN_IF_ERROR(d->Init());
    return std::unique_ptr<Driver>(std::move(d));
  };
  return info;
}

}  // namespace graph
