// btrfs graph driver: one subvolume per layer under <root>/subvolumes/<id>;
// a child layer is a writable snapshot of its parent (BTRFS_IOC_* ioctls,
// no btrfs-progs). Nothing is mounted: Get returns the subvolume directory.
// Diff/ApplyDiff/Changes use the naive (tree-compare) path with whiteouts
// applied as deletions, as Docker's btrfs driver does.
//
// The layer's record (graph/records.h) holds `parent` and `rw`. Create:
// record `creating` → subvolume made → `ready`; Remove: `removing` →
// subvolume deleted → record dropped (failpoints btrfs_*). Earlier releases
// kept no records: their subvolumes get one (read-write, as they were
// served) when the driver opens. `<root>/records-home` says where the
// records are ("store" or "own"); the other way is refused
// (LayerRecords::ClaimHome): alone on a store's root the driver would adopt
// the store's subvolumes into a records.db of its own.
#include <dirent.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/failpoint.h"
#include "base/status.h"
#include "graph/driver.h"
#include "graph/records.h"
#include "base/btrfs.h"
#include "graph/fsutil.h"
#include "graph/drivers/make_dirs.h"
#include "graph/drivers/mountref.h"
#include "graph/drivers/naive_diff.h"
#include "graph/drivers/new_driver.h"

namespace graph {
namespace {

using base::Failpoint;

// The nearest existing ancestor of `path` (the driver root may not exist yet
// when probed).
std::string ExistingAncestor(std::string path) {
  struct stat st;
  while (!path.empty() && ::stat(path.c_str(), &st) != 0) {
    auto slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    path = slash == 0 ? "/" : path.substr(0, slash);
  }
  return path.empty() ? "." : path;
}

absl::Status ProbeBtrfs(const DriverOptions& options) {
  for (const auto& [key, value] : options.options) {
    if (key.rfind("btrfs.", 0) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("btrfs: unknown option \"", key, "\""));
    }
  }
  if (::geteuid() != 0) {
    return UnsupportedError(Unsupported::kPrivilege,
                            "btrfs: deleting subvolumes needs root");
  }
  std::string where = ExistingAncestor(options.root.empty() ? "." : options.root);
  absl::Status on = base::btrfs::CheckOnBtrfs(where);
  if (!on.ok()) {
    if (absl::IsFailedPrecondition(on)) {
      return UnsupportedError(Unsupported::kBackingFilesystem,
                              absl::StrCat("btrfs: ", on.message()));
    }
    return on;
  }
  return absl::OkStatus();
}

class BtrfsDriver : public Driver {
 public:
  BtrfsDriver(std::string root, std::shared_ptr<LayerRecords> records, bool own_records)
      : root_(std::move(root)), subvols_(root_ + "/subvolumes"), refs_(root_ + "/.refs"),
        records_(std::move(records)), own_records_(own_records) {}

  absl::Status Init() {
    RETURN_IF_ERROR(MakeDirs(subvols_, "btrfs"));
    RETURN_IF_ERROR(base::btrfs::CheckOnBtrfs(subvols_));
    // Subvolumes of a release without records: adopted as they were served.
    ASSIGN_OR_RETURN(std::vector<std::string> subs, Subvolumes());
    ASSIGN_OR_RETURN(std::vector<LayerRecord> all, records_->List());
    std::set<std::string> recorded;
    for (const LayerRecord& r : all) recorded.insert(r.id);
    std::vector<LayerRecord> found;
    for (const std::string& id : subs) {
      if (recorded.count(id) == 0 && ValidateLayerId(id).ok()) {
        found.push_back({id, RecordState::kReady, {{"parent", ""}, {"rw", "1"}}});
      }
    }
    RETURN_IF_ERROR(records_->Migrate(found));
    if (own_records_) {
      // Without a store nobody else finishes what a crash interrupted.
      for (const LayerRecord& r : all) {
        if (r.state != RecordState::kReady) (void)Remove(r.id);
      }
    }
    return absl::OkStatus();
  }

  std::string Name() const override { return "btrfs"; }

  absl::Status Create(const std::string& id, const std::string& parent,
                      const CreateOptions& options) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    for (const auto& [key, value] : options.storage_options) {
      return absl::InvalidArgumentError(absl::StrCat(
          "btrfs: storage option \"", key, "\" is not supported (no quota groups)"));
    }
    if (IsSubvolume(id)) {
      return absl::AlreadyExistsError(absl::StrCat("btrfs: layer ", id, " already exists"));
    }
    if (!parent.empty()) {
      RETURN_IF_ERROR(ValidateLayerId(parent));
      if (!Exists(parent)) {
        return absl::NotFoundError(absl::StrCat("btrfs: parent layer ", parent, " not found"));
      }
    }
    std::map<std::string, std::string> fields = {{"parent", parent}, {"rw", options.read_write ? "1" : "0"}};
    RETURN_IF_ERROR(records_->Begin(id, fields));
    Failpoint("btrfs_create_after_intent");
    absl::Status made = parent.empty() ? base::btrfs::CreateSubvolume(subvols_, id)
                                       : base::btrfs::SnapshotSubvolume(Dir(parent), subvols_, id, /*readonly=*/false);
    if (made.ok()) {
      Failpoint("btrfs_create_after_subvolume");
      // Its mount count file now, while there is space: a mount on a full
      // filesystem then rewrites it in place (.refs is no-copy-on-write).
      made = refs_.Prepare(id);
    }
    if (made.ok()) made = records_->Ready(id, fields);
    if (!made.ok()) (void)Remove(id);
    return made;
  }

  // Finishes whatever state the record is in; a subvolume no record owns
  // goes too.
  absl::Status Remove(const std::string& id) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    ASSIGN_OR_RETURN(std::optional<LayerRecord> r, records_->Get(id));
    if (!r && !IsSubvolume(id)) return absl::NotFoundError(absl::StrCat("btrfs: layer ", id, " not found"));
    if (r && r->state != RecordState::kRemoving) RETURN_IF_ERROR(records_->Removing(id));
    Failpoint("btrfs_remove_after_intent");
    RETURN_IF_ERROR(refs_.Reset(id, [] { return absl::OkStatus(); }));
    if (IsSubvolume(id)) {
      RETURN_IF_ERROR(base::btrfs::DeleteSubvolume(Dir(id)));
      Failpoint("btrfs_remove_after_delete");
    }
    return r ? records_->Drop(id) : absl::OkStatus();
  }

  absl::StatusOr<std::string> Get(const std::string& id, const std::string& mount_label) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!mount_label.empty()) {
      return absl::InvalidArgumentError("btrfs: mount labels need a mount; btrfs layers are not mounted");
    }
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("btrfs: layer ", id, " not found"));
    // Nothing to mount (the subvolume is the view), but the count is kept
    // across processes as for every driver: the store will not remove a
    // layer someone has "mounted".
    RETURN_IF_ERROR(refs_.Acquire(id, [] { return true; }, [] { return absl::OkStatus(); }));
    return Dir(id);
  }

  absl::Status Put(const std::string& id) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("btrfs: layer ", id, " not found"));
    return refs_.Release(id, [] { return absl::OkStatus(); });
  }

  absl::StatusOr<int> MountCount(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    return refs_.Count(id);
  }

  // A ready record and its subvolume.
  bool Exists(const std::string& id) const override {
    if (!ValidateLayerId(id).ok() || !IsSubvolume(id)) return false;
    return records_->GetReady(id).ok();
  }

  // Ready layers, and subvolumes no record owns (for check).
  absl::StatusOr<std::vector<std::string>> List() const override {
    ASSIGN_OR_RETURN(std::vector<std::string> subs, Subvolumes());
    return records_->ReadyOrUnowned(subs);
  }

 private:
  bool IsSubvolume(const std::string& id) const {
    absl::StatusOr<bool> sub = base::btrfs::IsSubvolume(Dir(id));
    return sub.ok() && *sub;
  }

  absl::StatusOr<std::vector<std::string>> Subvolumes() const {
    DIR* dir = ::opendir(subvols_.c_str());
    if (dir == nullptr) return base::ErrnoError(errno, absl::StrCat("btrfs: opendir ", subvols_));
    std::vector<std::string> ids;
    errno = 0;
    while (struct dirent* e = ::readdir(dir)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      ids.emplace_back(e->d_name);
    }
    int err = errno;
    ::closedir(dir);
    if (err != 0) return base::ErrnoError(err, absl::StrCat("btrfs: readdir ", subvols_));
    std::sort(ids.begin(), ids.end());
    return ids;
  }

 public:
  std::vector<std::pair<std::string, std::string>> Status() const override {
    std::vector<std::pair<std::string, std::string>> out;
    out.emplace_back("Backing Filesystem", "btrfs");
    out.emplace_back("Supports d_type", "true");
    out.emplace_back("Native Diff", "false");
    out.emplace_back("Subvolume Root", subvols_);
    absl::StatusOr<std::vector<std::string>> ids = List();
    out.emplace_back("Layers", ids.ok() ? std::to_string(ids->size()) : "?");
    struct statfs st;
    if (::statfs(subvols_.c_str(), &st) == 0) {
      out.emplace_back("Space Available",
                       std::to_string(static_cast<uint64_t>(st.f_bavail) * st.f_bsize));
    }
    return out;
  }

  absl::StatusOr<std::map<std::string, std::string>> Metadata(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("btrfs: layer ", id, " not found"));
    return std::map<std::string, std::string>{{"Dir", Dir(id)}};
  }

  absl::Status Cleanup() override { return absl::OkStatus(); }

  absl::StatusOr<DiffResult> Diff(const std::string& id, const std::string& parent,
                                  ByteSink& sink) override {
    return NaiveDiff(*this, id, parent, sink);
  }

  absl::StatusOr<ApplyDiffResult> ApplyDiff(const std::string& id, const std::string& parent,
                                            ByteSource& source) override {
    (void)parent;  // the snapshot already holds the parent's files
    return NaiveApplyDiff(*this, id, source, WhiteoutFormat::kDelete);
  }

  absl::StatusOr<std::vector<Change>> Changes(const std::string& id,
                                              const std::string& parent) override {
    return NaiveChanges(*this, id, parent);
  }

  // Usage: a walk of the subvolume (no qgroups: shared extents count in each).
  absl::StatusOr<DiskUsage> Usage(const std::string& id, const std::string&) override {
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " not found"));
    return TreeUsage(Dir(id));
  }

  absl::StatusOr<int64_t> DiffSize(const std::string& id, const std::string& parent) override {
    return NaiveDiffSize(*this, id, parent);
  }

  absl::StatusOr<std::vector<MountSpec>> Mounts(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    absl::StatusOr<LayerRecord> r = records_->GetReady(id);
    if (!r.ok() || !IsSubvolume(id)) return absl::NotFoundError(absl::StrCat("btrfs: layer ", id, " not found"));
    return std::vector<MountSpec>{{"bind", Dir(id), "", {"rbind", r->Field("rw") == "1" ? "rw" : "ro"}}};
  }

 private:
  std::string Dir(const std::string& id) const { return absl::StrCat(subvols_, "/", id); }

  std::string root_;
  std::string subvols_;
  MountRefs refs_;
  std::shared_ptr<LayerRecords> records_;
  bool own_records_;
};

}  // namespace

DriverInfo BtrfsDriverInfo() {
  DriverInfo info;
  info.name = "btrfs";
  info.priority = 20;
  info.probe = ProbeBtrfs;
  info.create = [](const DriverOptions& options) -> absl::StatusOr<std::unique_ptr<Driver>> {
    RETURN_IF_ERROR(ProbeBtrfs(options));
    RETURN_IF_ERROR(LayerRecords::ClaimHome(options.root, options.records == nullptr, "btrfs"));
    ASSIGN_OR_RETURN(std::shared_ptr<LayerRecords> records, LayerRecords::ForDriver(options.root, options.records));
    return NewInitializedDriver<BtrfsDriver>(options.root, std::move(records), options.records == nullptr);
  };
  return info;
}

}  // namespace graph
