// zfs graph driver: one ZFS filesystem per layer, `<parent dataset>/<id>`.
// A base layer is a new filesystem (lzc_create); a child is a clone of a
// snapshot `<parent layer>@<child id>` of its parent (lzc_snapshot +
// lzc_clone), the snapshot then marked for deferred destruction so that it
// goes with its clone. Every layer has mountpoint=legacy and is mounted with
// mount(2) at `<root>/mnt/<id>` by Get, as Docker's zfs driver does; nothing
// runs the zfs or zpool commands.
//
// The parent dataset is `zfs.fsname` (an existing filesystem), or, with
// `zfs.loopback=true` or `zfs.poolsize=SIZE`, a pool the driver makes on a
// sparse file `<root>/zpool.img` (name `dmthin-<8 hex>`, kept in
// `<root>/zpool.name`), imported again from that file when it is not.
//
// The layer's record (graph/records.h: the store's registry, or
// <root>/records.db without a store) holds `dataset` (its full name),
// `parent` (the parent layer's id), `origin` (the snapshot it was cloned
// from, empty for a base layer) and `rw`; the driver reads them instead of
// deriving names from ids or asking ZFS for a layer's origin. Create:
// record `creating` → snapshot → clone → deferred-destroy mark → `ready`;
// Remove: `removing` → unmount → destroy → origin snapshot destroyed if
// still there → record dropped (failpoints zfs_*). A dataset exists whole
// or not at all (lzc_create and lzc_clone are atomic); a crash anywhere
// leaves a `creating` or `removing` record, which Remove finishes (the
// store's check --repair, or the driver itself at open when it has no
// store): the record names the origin snapshot a create that died before
// its clone left. Datasets under the parent that no record owns (a store
// of a release that kept no records) are adopted at open as ready
// read-write layers, their parent read from their origin, in one
// transaction. So a root is never opened the other way (a store's root by
// the driver alone would adopt the store's datasets into a records.db of
// its own): `<root>/records-home` says where its records are, and the
// other way is refused (LayerRecords::ClaimHome, FailedPrecondition).
//
// Diff/ApplyDiff/Changes use the naive (tree-compare) path with whiteouts
// applied as deletions, as Docker's zfs driver does.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/failpoint.h"
#include "base/fsutil.h"
#include "base/size.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "graph/driver.h"
#include "graph/drivers/make_dirs.h"
#include "graph/drivers/mountref.h"
#include "graph/drivers/naive_diff.h"
#include "graph/drivers/new_driver.h"
#include "graph/drivers/zfs_lib.h"
#include "graph/fsutil.h"
#include "graph/records.h"

namespace graph {
namespace {

constexpr char kName[] = "zfs";
constexpr uint64_t kDefaultPoolBytes = 10ull << 30;
// ZFS's smallest vdev.
constexpr uint64_t kMinPoolBytes = 64ull << 20;

using base::Failpoint;

absl::Status ZfsError(int err, absl::string_view what, const std::string& why = "") {
  return base::ErrnoError(err, why.empty() ? absl::StrCat("zfs: ", what)
                                           : absl::StrCat("zfs: ", what, " (", why, ")"));
}

// ------------------------------------------------------------- options ---

struct Config {
  std::string fsname;  // zfs.fsname; empty: the driver's own pool
  bool loopback = false;
  uint64_t pool_bytes = kDefaultPoolBytes;
};

absl::StatusOr<bool> ParseBool(const std::string& key, const std::string& value) {
  bool b;
  if (!absl::SimpleAtob(value, &b)) {
    return absl::InvalidArgumentError(absl::StrCat("zfs: ", key, " wants true or false, not \"", value, "\""));
  }
  return b;
}

// A dataset name zfs.fsname may give: components of [A-Za-z0-9_.:-], no
// snapshot or bookmark part, the pool's own name included.
absl::Status ValidateFsname(const std::string& name) {
  if (name.empty() || name.size() > 200 || name.front() == '/' || name.back() == '/' ||
      absl::StrContains(name, "//")) {
    return absl::InvalidArgumentError(absl::StrCat("zfs: zfs.fsname \"", name, "\" is not a dataset name"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && std::strchr("_.:-/", c) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("zfs: zfs.fsname \"", name, "\" is not a dataset name"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Config> ParseConfig(const DriverOptions& o) {
  Config c;
  for (const auto& [key, value] : o.options) {
    if (!absl::StartsWith(key, "zfs.")) continue;
    if (key == "zfs.fsname") {
      RETURN_IF_ERROR(ValidateFsname(value));
      c.fsname = value;
    } else if (key == "zfs.loopback") {
      ASSIGN_OR_RETURN(c.loopback, ParseBool(key, value));
    } else if (key == "zfs.poolsize") {
      absl::StatusOr<uint64_t> n = base::ParseSize(value);
      if (!n.ok() || *n < kMinPoolBytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("zfs: zfs.poolsize \"", value, "\" is not a size of at least 64M"));
      }
      c.pool_bytes = *n;
      c.loopback = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("zfs: unknown option \"", key, "\""));
    }
  }
  if (!c.fsname.empty() && c.loopback) {
    return absl::InvalidArgumentError("zfs: zfs.fsname names a dataset; zfs.loopback/zfs.poolsize make a pool: not both");
  }
  return c;
}

absl::StatusOr<std::optional<std::string>> ReadSmallFile(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::optional<std::string>();
    return base::ErrnoError(errno, absl::StrCat("zfs: opening ", path));
  }
  char buf[256];
  ssize_t n = ::read(fd.get(), buf, sizeof(buf));
  if (n < 0) return base::ErrnoError(errno, absl::StrCat("zfs: reading ", path));
  return std::optional<std::string>(std::string(absl::StripAsciiWhitespace(absl::string_view(buf, n))));
}

absl::Status Unmount(const std::string& target) {
  if (::umount2(target.c_str(), UMOUNT_NOFOLLOW) == 0) return absl::OkStatus();
  if (errno == EINVAL || errno == ENOENT) return absl::OkStatus();  // not mounted
  if (errno == EBUSY && ::umount2(target.c_str(), UMOUNT_NOFOLLOW | MNT_DETACH) == 0) {
    return absl::OkStatus();
  }
  return base::ErrnoError(errno, absl::StrCat("zfs: unmounting ", target));
}

bool Mounted(const std::string& path) {
  absl::StatusOr<bool> m = IsMountPoint(path);
  return m.ok() && *m;
}

absl::Status ProbeZfs(const DriverOptions& o) {
  ASSIGN_OR_RETURN(Config c, ParseConfig(o));
  if (::geteuid() != 0) {
    return UnsupportedError(Unsupported::kPrivilege, "zfs needs root (/dev/zfs, mount)");
  }
  if (::access("/dev/zfs", F_OK) != 0) {
    return UnsupportedError(Unsupported::kKernelLacksFilesystem,
                            "zfs: the kernel has no ZFS module loaded (no /dev/zfs)");
  }
  struct stat st;
  bool made_before = ::stat(absl::StrCat(o.root, "/zpool.name").c_str(), &st) == 0;
  if (c.fsname.empty() && !c.loopback && !made_before) {
    return UnsupportedError(
        Unsupported::kConfiguration,
        absl::StrCat("zfs needs a parent dataset: pass zfs.fsname=<pool/dataset>, or zfs.loopback=true "
                     "(or zfs.poolsize=<size>) to make a pool on a sparse file under ",
                     o.root));
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------- driver ---

class ZfsDriver : public Driver {
 public:
  ZfsDriver(std::string root, Config config, std::shared_ptr<LayerRecords> records, bool own_records)
      : root_(std::move(root)), config_(std::move(config)), refs_(absl::StrCat(root_, "/.refs")),
        records_(std::move(records)), own_records_(own_records) {}

  absl::Status Init() {
    RETURN_IF_ERROR(MakeDirs(absl::StrCat(root_, "/mnt"), kName));
    int err = 0;
    std::string why;
    zfs_ = zfslib::Handle::Open(&err, &why);
    if (zfs_ == nullptr) return ZfsError(err, "opening libzfs", why);
    if (!config_.fsname.empty()) {
      parent_ = config_.fsname;
    } else {
      RETURN_IF_ERROR(OpenOwnPool());
      parent_ = pool_;
    }
    pool_ = parent_.substr(0, parent_.find('/'));
    std::string type;
    int rc = zfs_->GetProperty(parent_, "type", false, &type, &why);
    if (rc != 0) {
      return UnsupportedError(Unsupported::kConfiguration,
                              absl::StrCat("zfs: parent dataset ", parent_, " cannot be opened: ", why));
    }
    if (type != "filesystem") {
      return absl::InvalidArgumentError(absl::StrCat("zfs: ", parent_, " is a ", type, ", not a filesystem"));
    }
    ASSIGN_OR_RETURN(std::vector<LayerRecord> all, AdoptUnrecorded());
    if (own_records_) {
      // Without a store nobody else finishes what a crash interrupted.
      for (const LayerRecord& r : all) {
        if (r.state != RecordState::kReady) (void)Remove(r.id);
      }
    }
    return absl::OkStatus();
  }

  std::string Name() const override { return kName; }

  absl::Status Create(const std::string& id, const std::string& parent,
                      const CreateOptions& options) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    zfslib::Props props;
    props.strings["mountpoint"] = "legacy";
    for (const auto& [key, value] : options.storage_options) {
      if (key != "size") {
        return absl::InvalidArgumentError(
            absl::StrCat("zfs: storage option \"", key, "\" is not supported (only size)"));
      }
      absl::StatusOr<uint64_t> bytes = base::ParseSize(value);
      if (!bytes.ok() || *bytes == 0) {
        return absl::InvalidArgumentError(absl::StrCat("zfs: size \"", value, "\" is not a size"));
      }
      props.numbers["quota"] = *bytes;
    }
    std::string ds = Dataset(id);
    if (zfs_->Exists(ds)) return absl::AlreadyExistsError(absl::StrCat("zfs: layer ", id, " already exists"));
    std::string snap;
    if (!parent.empty()) {
      RETURN_IF_ERROR(ValidateLayerId(parent));
      absl::StatusOr<std::string> pds = ReadyDataset(parent);
      if (!pds.ok()) return absl::NotFoundError(absl::StrCat("zfs: parent layer ", parent, " not found"));
      snap = absl::StrCat(*pds, "@", id);
    }
    std::map<std::string, std::string> fields = {
        {"dataset", ds}, {"parent", parent}, {"origin", snap}, {"rw", options.read_write ? "1" : "0"}};
    RETURN_IF_ERROR(records_->Begin(id, fields));
    Failpoint("zfs_create_after_intent");
    absl::Status made = parent.empty() ? MakeFilesystem(ds, props) : MakeClone(ds, snap, props);
    if (absl::IsAlreadyExists(made)) {
      // Someone else's dataset (no record owns it): not ours to destroy.
      (void)records_->Drop(id);
      return made;
    }
    if (made.ok()) made = records_->Ready(id, fields);
    if (!made.ok()) (void)Remove(id);
    return made;
  }

  // Finishes whatever state the record is in (a create or removal a crash
  // interrupted included); a dataset under the parent no record owns goes
  // too.
  absl::Status Remove(const std::string& id) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    ASSIGN_OR_RETURN(std::optional<LayerRecord> r, records_->Get(id));
    std::string ds = r ? r->Field("dataset") : Dataset(id);
    bool exists = zfs_->Exists(ds);
    if (!r && !exists) return absl::NotFoundError(absl::StrCat("zfs: layer ", id, " not found"));
    std::vector<zfslib::SnapshotInfo> snaps;
    std::string why;
    if (exists) {
      // Children first: a snapshot of this layer with a clone is a child layer.
      int rc = zfs_->ListSnapshots(ds, &snaps, &why);
      if (rc != 0) return ZfsError(rc, absl::StrCat("listing snapshots of ", ds), why);
      for (const zfslib::SnapshotInfo& s : snaps) {
        if (s.clones > 0) {
          return absl::FailedPreconditionError(absl::StrCat(
              "zfs: layer ", id, " has a child layer (", s.name.substr(s.name.find('@') + 1), ")"));
        }
      }
    }
    bool was_ready = r && r->state == RecordState::kReady;
    if (r && r->state != RecordState::kRemoving) RETURN_IF_ERROR(records_->Removing(id));
    Failpoint("zfs_remove_after_intent");
    std::string mnt = MountPath(id);
    RETURN_IF_ERROR(refs_.Reset(id, [&] { return Unmount(mnt); }));
    if (Mounted(mnt)) RETURN_IF_ERROR(Unmount(mnt));
    std::string origin;
    if (r) {
      origin = r->Field("origin");
    } else if (zfs_->GetProperty(ds, "origin", false, &origin, &why) != 0 || origin == "-") {
      origin.clear();
    }
    if (exists) {
      // Snapshots whose Create died before its clone.
      for (const zfslib::SnapshotInfo& s : snaps) {
        int rc = zfs_->Destroy(s.name);
        if (rc != 0 && rc != ENOENT) return ZfsError(rc, absl::StrCat("destroying ", s.name));
      }
      int rc = zfs_->Destroy(ds);
      if (rc == EBUSY) {
        // Held open (a process with its cwd there): the mount was detached,
        // the dataset is whole.
        if (was_ready) (void)records_->Restore(id);
        return ZfsError(rc, absl::StrCat("destroying ", ds, " (busy)"));
      }
      if (rc != 0 && rc != ENOENT) return ZfsError(rc, absl::StrCat("destroying ", ds));
      Failpoint("zfs_after_destroy");
    }
    // Normally gone with its clone (deferred destruction); not when Create
    // died before its clone or before marking it.
    if (!origin.empty() && zfs_->Exists(origin)) {
      int rc = zfs_->Destroy(origin);
      if (rc != 0 && rc != ENOENT && rc != EBUSY) return ZfsError(rc, absl::StrCat("destroying ", origin));
    }
    ::rmdir(mnt.c_str());
    return r ? records_->Drop(id) : absl::OkStatus();
  }

  absl::StatusOr<std::string> Get(const std::string& id, const std::string& mount_label) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    ASSIGN_OR_RETURN(std::string ds, ReadyDataset(id));
    std::string mnt = MountPath(id);
    RETURN_IF_ERROR(refs_.Acquire(id, [&] { return Mounted(mnt); }, [&]() -> absl::Status {
      if (::mkdir(mnt.c_str(), 0755) != 0 && errno != EEXIST) {
        return base::ErrnoError(errno, absl::StrCat("zfs: mkdir ", mnt));
      }
      std::string data = mount_label.empty() ? "" : absl::StrCat("context=\"", mount_label, "\"");
      if (::mount(ds.c_str(), mnt.c_str(), "zfs", 0, data.empty() ? nullptr : data.c_str()) != 0) {
        return base::ErrnoError(errno, absl::StrCat("zfs: mounting ", ds, " on ", mnt));
      }
      return absl::OkStatus();
    }));
    return mnt;
  }

  absl::Status Put(const std::string& id) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    RETURN_IF_ERROR(ReadyDataset(id).status());
    std::string mnt = MountPath(id);
    return refs_.Release(id, [&] { return Unmount(mnt); });
  }

  absl::StatusOr<int> MountCount(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    std::string mnt = MountPath(id);
    return refs_.Live(id, [&] { return Mounted(mnt); });
  }

  // A ready record and its dataset.
  bool Exists(const std::string& id) const override { return ReadyDataset(id).ok(); }

  // Ready layers, and datasets under the parent no record owns (for check).
  absl::StatusOr<std::vector<std::string>> List() const override {
    ASSIGN_OR_RETURN(std::vector<std::string> ids, DatasetIds());
    return records_->ReadyOrUnowned(ids);
  }

  // Docker's zfs driver's rows.
  std::vector<std::pair<std::string, std::string>> Status() const override {
    std::vector<std::pair<std::string, std::string>> out;
    auto prop = [&](const std::string& name, const std::string& p, bool literal = false) {
      std::string v, why;
      return zfs_->GetProperty(name, p, literal, &v, &why) == 0 ? v : std::string("?");
    };
    std::string health, why;
    if (zfs_->GetPoolProperty(pool_, "health", &health, &why) != 0) health = "?";
    out.emplace_back("Zpool", pool_);
    out.emplace_back("Zpool Health", health);
    out.emplace_back("Parent Dataset", parent_);
    out.emplace_back("Space Used By Parent", prop(parent_, "used", true));
    out.emplace_back("Space Available", prop(parent_, "available", true));
    std::string quota = prop(parent_, "quota", true);
    out.emplace_back("Parent Quota", quota == "0" ? "no" : quota);
    out.emplace_back("Compression", prop(parent_, "compression"));
    if (config_.fsname.empty()) out.emplace_back("Pool File", PoolFile());
    return out;
  }

  absl::StatusOr<std::map<std::string, std::string>> Metadata(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    ASSIGN_OR_RETURN(std::string ds, ReadyDataset(id));
    return std::map<std::string, std::string>{{"Dataset", ds}, {"Mountpoint", MountPath(id)}};
  }

  // Unmounts every layer the driver mounted; the pool stays imported.
  absl::Status Cleanup() override {
    absl::Status first;
    DIR* dir = ::opendir(absl::StrCat(root_, "/mnt").c_str());
    if (dir == nullptr) return absl::OkStatus();
    std::vector<std::string> ids;
    while (struct dirent* e = ::readdir(dir)) {
      if (ValidateLayerId(e->d_name).ok()) ids.emplace_back(e->d_name);
    }
    ::closedir(dir);
    for (const std::string& id : ids) {
      std::string mnt = MountPath(id);
      absl::Status s = refs_.Reset(id, [&] { return Unmount(mnt); });
      if (s.ok() && Mounted(mnt)) s = Unmount(mnt);
      if (first.ok() && !s.ok()) first = s;
    }
    return first;
  }

  absl::StatusOr<DiffResult> Diff(const std::string& id, const std::string& parent, ByteSink& sink) override {
    return NaiveDiff(*this, id, parent, sink);
  }

  absl::StatusOr<ApplyDiffResult> ApplyDiff(const std::string& id, const std::string& parent,
                                            ByteSource& source) override {
    (void)parent;  // the clone already holds the parent's files
    return NaiveApplyDiff(*this, id, source, WhiteoutFormat::kDelete);
  }

  absl::StatusOr<std::vector<Change>> Changes(const std::string& id, const std::string& parent) override {
    return NaiveChanges(*this, id, parent);
  }

  absl::StatusOr<int64_t> DiffSize(const std::string& id, const std::string& parent) override {
    return NaiveDiffSize(*this, id, parent);
  }

  // Bytes: the dataset's `used` (what it holds apart from its origin:
  // exactly "parents excluded"); inodes: the changed entries.
  absl::StatusOr<DiskUsage> Usage(const std::string& id, const std::string& parent) override {
    ASSIGN_OR_RETURN(std::string ds, ReadyDataset(id));
    ASSIGN_OR_RETURN(DiskUsage u, Driver::Usage(id, parent));
    std::string used, why;
    int64_t bytes = 0;
    if (zfs_->GetProperty(ds, "used", true, &used, &why) == 0 && absl::SimpleAtoi(used, &bytes)) {
      u.bytes = bytes;
    }
    return u;
  }

  // A mount of the dataset itself (legacy mountpoint), as containerd's zfs
  // snapshotter describes it; read-only for a layer made without
  // read_write (a view).
  absl::StatusOr<std::vector<MountSpec>> Mounts(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    absl::StatusOr<LayerRecord> r = records_->GetReady(id);
    if (!r.ok() || !zfs_->Exists(r->Field("dataset"))) {
      return absl::NotFoundError(absl::StrCat("zfs: layer ", id, " not found"));
    }
    return std::vector<MountSpec>{{"zfs", r->Field("dataset"), "", {r->Field("rw") == "1" ? "rw" : "ro"}}};
  }

 private:
  std::string Dataset(const std::string& id) const { return absl::StrCat(parent_, "/", id); }
  std::string MountPath(const std::string& id) const { return absl::StrCat(root_, "/mnt/", id); }
  std::string PoolFile() const { return absl::StrCat(root_, "/zpool.img"); }

  // The dataset of `id`'s ready record, if it exists; NotFound otherwise.
  absl::StatusOr<std::string> ReadyDataset(const std::string& id) const {
    if (!ValidateLayerId(id).ok()) return absl::NotFoundError(absl::StrCat("zfs: layer ", id, " not found"));
    absl::StatusOr<LayerRecord> r = records_->GetReady(id);
    if (!r.ok() || !zfs_->Exists(r->Field("dataset"))) {
      return absl::NotFoundError(absl::StrCat("zfs: layer ", id, " not found"));
    }
    return r->Field("dataset");
  }

  // The ids of the filesystems under the parent dataset, sorted.
  absl::StatusOr<std::vector<std::string>> DatasetIds() const {
    std::vector<std::string> names;
    std::string why;
    int rc = zfs_->ListFilesystems(parent_, &names, &why);
    if (rc != 0) return ZfsError(rc, absl::StrCat("listing ", parent_), why);
    std::vector<std::string> ids;
    std::string prefix = absl::StrCat(parent_, "/");
    for (const std::string& n : names) {
      if (!absl::StartsWith(n, prefix)) continue;
      std::string id = n.substr(prefix.size());
      if (ValidateLayerId(id).ok()) ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  absl::Status MakeFilesystem(const std::string& ds, const zfslib::Props& props) {
    int rc = zfs_->CreateFilesystem(ds, props);
    if (rc == EEXIST) return absl::AlreadyExistsError(absl::StrCat("zfs: dataset ", ds, " already exists"));
    if (rc != 0) return ZfsError(rc, absl::StrCat("creating ", ds));
    return absl::OkStatus();
  }

  // `ds` as a clone of a new snapshot `snap` of its parent, the snapshot
  // marked to go with its clone.
  absl::Status MakeClone(const std::string& ds, const std::string& snap, const zfslib::Props& props) {
    if (zfs_->Exists(snap)) {
      // Left by a Create of this id that died before its clone, in a
      // release without records: it has no clone (that would be `ds`).
      int rc = zfs_->Destroy(snap);
      if (rc != 0 && rc != ENOENT) return ZfsError(rc, absl::StrCat("destroying stale snapshot ", snap));
    }
    int rc = zfs_->Snapshot(snap);
    if (rc != 0) return ZfsError(rc, absl::StrCat("snapshotting ", snap));
    Failpoint("zfs_after_snapshot");
    rc = zfs_->Clone(ds, snap, props);
    if (rc == EEXIST) {
      (void)zfs_->Destroy(snap);
      return absl::AlreadyExistsError(absl::StrCat("zfs: dataset ", ds, " already exists"));
    }
    if (rc != 0) return ZfsError(rc, absl::StrCat("cloning ", snap, " to ", ds));
    Failpoint("zfs_after_clone");
    rc = zfs_->DeferDestroy(snap);
    if (rc != 0) return ZfsError(rc, absl::StrCat("marking ", snap, " for deferred destruction"));
    return absl::OkStatus();
  }

  // Datasets under the parent that no record owns (a store of a release
  // that kept no records) become ready read-write layers, their parent
  // and origin read from ZFS, in one transaction; records naming datasets
  // outside the parent are refused (zfs.fsname changed under a store).
  // Returns the records as they were before.
  absl::StatusOr<std::vector<LayerRecord>> AdoptUnrecorded() {
    ASSIGN_OR_RETURN(std::vector<std::string> ids, DatasetIds());
    ASSIGN_OR_RETURN(std::vector<LayerRecord> all, records_->List());
    std::set<std::string> recorded;
    std::string prefix = absl::StrCat(parent_, "/");
    for (const LayerRecord& r : all) {
      recorded.insert(r.id);
      if (!absl::StartsWith(r.Field("dataset"), prefix)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "zfs: layer ", r.id, " is recorded as dataset ", r.Field("dataset"), ", not under the parent dataset ",
            parent_, " (was zfs.fsname changed?)"));
      }
    }
    std::vector<LayerRecord> found;
    for (const std::string& id : ids) {
      if (recorded.count(id) != 0) continue;
      std::string ds = Dataset(id), origin, why;
      if (zfs_->GetProperty(ds, "origin", false, &origin, &why) != 0 || origin == "-") origin.clear();
      std::string parent;
      if (absl::StartsWith(origin, prefix) && origin.find('@') != std::string::npos) {
        parent = origin.substr(prefix.size(), origin.find('@') - prefix.size());
      }
      found.push_back({id, RecordState::kReady, {{"dataset", ds}, {"parent", parent}, {"origin", origin}, {"rw", "1"}}});
    }
    RETURN_IF_ERROR(base::Annotate(records_->Migrate(found), absl::StrCat("zfs: recording the datasets under ",
                                                                           parent_, " in ", records_->path())));
    return all;
  }

  // The embedded default: a pool on the sparse file <root>/zpool.img, its
  // name recorded before it is made (a crash in between leaves a file with
  // no label, made again on the next open).
  absl::Status OpenOwnPool() {
    std::string name_file = absl::StrCat(root_, "/zpool.name");
    ASSIGN_OR_RETURN(std::optional<std::string> name, ReadSmallFile(name_file));
    if (name) {
      pool_ = *name;
      if (!absl::StartsWith(pool_, "dmthin-") || pool_.size() != 15) {
        return absl::DataLossError(absl::StrCat("zfs: ", name_file, " does not hold a dmthin pool name"));
      }
    } else {
      std::random_device rd;
      pool_ = absl::StrFormat("dmthin-%08x", rd());
      RETURN_IF_ERROR(base::Annotate(base::WriteFileAtomic(name_file, pool_ + "\n", /*durable=*/true), "zfs"));
    }
    if (zfs_->PoolImported(pool_)) return absl::OkStatus();
    std::string file = PoolFile();
    struct stat st;
    int labels = 0;
    if (::stat(file.c_str(), &st) == 0) {
      int rc = zfslib::Handle::CountLabels(file, &labels);
      if (rc != 0) return ZfsError(rc, absl::StrCat("reading the labels of ", file));
    }
    std::string why;
    if (labels > 0) {
      int rc = zfs_->ImportFilePool(pool_, root_, &why);
      if (rc != 0) return ZfsError(rc, absl::StrCat("importing pool ", pool_, " from ", file), why);
      return absl::OkStatus();
    }
    // No pool there yet: (re)make the sparse file and the pool.
    {
      base::UniqueFd fd(::open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      if (!fd) return base::ErrnoError(errno, absl::StrCat("zfs: creating ", file));
      if (::ftruncate(fd.get(), static_cast<off_t>(config_.pool_bytes)) != 0) {
        return base::ErrnoError(errno, absl::StrCat("zfs: sizing ", file));
      }
    }
    Failpoint("zfs_before_pool_create");
    int rc = zfs_->CreateFilePool(pool_, file, {{"mountpoint", "legacy"}}, &why);
    if (rc != 0) return ZfsError(rc, absl::StrCat("creating pool ", pool_, " on ", file), why);
    return absl::OkStatus();
  }

  std::string root_;
  Config config_;
  std::string pool_;    // the pool holding parent_
  std::string parent_;  // the dataset holding the layers
  std::unique_ptr<zfslib::Handle> zfs_;
  mutable MountRefs refs_;
  std::shared_ptr<LayerRecords> records_;
  bool own_records_;
};

}  // namespace

DriverInfo ZfsDriverInfo() {
  DriverInfo info;
  info.name = kName;
  info.priority = 35;
  info.probe = ProbeZfs;
  info.create = [](const DriverOptions& o) -> absl::StatusOr<std::unique_ptr<Driver>> {
    RETURN_IF_ERROR(ProbeZfs(o));
    ASSIGN_OR_RETURN(Config c, ParseConfig(o));
    RETURN_IF_ERROR(LayerRecords::ClaimHome(o.root, o.records == nullptr, kName));
    ASSIGN_OR_RETURN(std::shared_ptr<LayerRecords> records, LayerRecords::ForDriver(o.root, o.records));
    return NewInitializedDriver<ZfsDriver>(o.root, std::move(c), std::move(records), o.records == nullptr);
  };
  return info;
}

}  // namespace graph
