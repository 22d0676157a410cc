// vfs: every layer is a full copy of its parent (reflinked where the
// filesystem can: btrfs, xfs with reflink, bcachefs). No mounts; works on
// any filesystem; whiteouts are applied by deleting. Layout:
//   <root>/dir/<id>          the layer's full tree
//   <root>/.refs/<id>        Get/Put reference counts
//   <root>/records-home      "store" or "own": where the records are; the
//                            other way is refused (LayerRecords::ClaimHome)
// The layer's record (graph/records.h) holds `parent` and `rw` ("1" for a
// read-write layer); earlier releases kept them in <root>/info/<id>
// ("parent=<id>\nrw=<0|1>\n"), moved into the records at open.
// Create: record `creating` → copy under a temporary name → rename →
// `ready`; Remove: `removing` → rename aside → delete → record dropped
// (failpoints vfs_*).
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/failpoint.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "graph/archive.h"
#include "graph/driver.h"
#include "graph/drivers/mountref.h"
#include "graph/drivers/naive_diff.h"
#include "graph/fsutil.h"
#include "graph/records.h"

namespace graph {
namespace {

using base::Failpoint;

absl::Status MkdirP(const std::string& path) {
  std::string cur;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    cur = absl::StrCat(cur, "/", part);
    if (path[0] != '/' && cur.size() == part.size() + 1) cur = std::string(part);
    if (::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) {
      return base::ErrnoError(errno, absl::StrCat("creating ", cur));
    }
  }
  return absl::OkStatus();
}

std::string RandomSuffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrCat(::getpid(), "-", rng() % 1000000000);
}

class VfsDriver : public Driver {
 public:
  VfsDriver(std::string root, std::shared_ptr<LayerRecords> records, bool own_records)
      : root_(std::move(root)), refs_(absl::StrCat(root_, "/.refs")), records_(std::move(records)),
        own_records_(own_records) {}

  absl::Status Init() {
    RETURN_IF_ERROR(MkdirP(absl::StrCat(root_, "/dir")));
    // Reap what a crashed Create/Remove left behind.
    std::vector<std::string> names;
    RETURN_IF_ERROR(ListNames(absl::StrCat(root_, "/dir"), &names, /*hidden=*/true));
    for (const std::string& n : names) {
      if (absl::StartsWith(n, ".")) (void)RemoveTree(absl::StrCat(root_, "/dir/", n));
    }
    RETURN_IF_ERROR(MigrateInfoFiles());
    if (own_records_) {
      // Without a store nobody else finishes what a crash interrupted.
      ASSIGN_OR_RETURN(std::vector<LayerRecord> all, records_->List());
      for (const LayerRecord& r : all) {
        if (r.state != RecordState::kReady) (void)Remove(r.id);
      }
    }
    return absl::OkStatus();
  }

  std::string Name() const override { return "vfs"; }

  absl::Status Create(const std::string& id, const std::string& parent, const CreateOptions& options) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    for (const auto& [k, v] : options.storage_options) {
      return absl::InvalidArgumentError(absl::StrCat("vfs: unknown storage option \"", k, "\""));
    }
    if (DirExists(id)) return absl::AlreadyExistsError(absl::StrCat("layer ", id, " already exists"));
    if (!parent.empty()) {
      RETURN_IF_ERROR(ValidateLayerId(parent));
      if (!Exists(parent)) return absl::NotFoundError(absl::StrCat("parent layer ", parent, " does not exist"));
    }
    std::map<std::string, std::string> fields = {{"parent", parent}, {"rw", options.read_write ? "1" : "0"}};
    RETURN_IF_ERROR(records_->Begin(id, fields));
    Failpoint("vfs_create_after_intent");
    std::string tmp = absl::StrCat(root_, "/dir/.create-", id, "-", RandomSuffix());
    absl::Status s = [&]() -> absl::Status {
      if (parent.empty()) {
        if (::mkdir(tmp.c_str(), 0755) != 0) return base::ErrnoError(errno, absl::StrCat("mkdir ", tmp));
      } else {
        RETURN_IF_ERROR(CopyTree(Dir(parent), tmp).status());
      }
      Failpoint("vfs_create_after_copy");
      if (::rename(tmp.c_str(), Dir(id).c_str()) != 0) return base::ErrnoError(errno, "publishing layer");
      Failpoint("vfs_create_after_publish");
      return records_->Ready(id, fields);
    }();
    if (!s.ok()) {
      (void)RemoveTree(tmp);
      (void)Remove(id);
    }
    return s;
  }

  // Finishes whatever state the record is in; a directory no record owns
  // (check --prune) goes too.
  absl::Status Remove(const std::string& id) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    ASSIGN_OR_RETURN(std::optional<LayerRecord> r, records_->Get(id));
    if (!r && !DirExists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
    if (r && r->state != RecordState::kRemoving) RETURN_IF_ERROR(records_->Removing(id));
    Failpoint("vfs_remove_after_intent");
    RETURN_IF_ERROR(refs_.Reset(id, [] { return absl::OkStatus(); }));
    if (DirExists(id)) {
      // Rename first so a crash never leaves a half-removed tree in place.
      std::string doomed = absl::StrCat(root_, "/dir/.remove-", id, "-", RandomSuffix());
      if (::rename(Dir(id).c_str(), doomed.c_str()) != 0) return base::ErrnoError(errno, "hiding layer for removal");
      Failpoint("vfs_remove_after_hide");
      RETURN_IF_ERROR(RemoveTree(doomed));
    }
    return r ? records_->Drop(id) : absl::OkStatus();
  }

  absl::StatusOr<std::string> Get(const std::string& id, const std::string& mount_label) override {
    (void)mount_label;
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
    RETURN_IF_ERROR(refs_.Acquire(id, [] { return true; }, [] { return absl::OkStatus(); }));
    return Dir(id);
  }

  absl::Status Put(const std::string& id) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    return refs_.Release(id, [] { return absl::OkStatus(); });
  }

  absl::StatusOr<int> MountCount(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    return refs_.Count(id);  // no mount: a count stays until Put or Remove
  }

  // A ready record and its tree.
  bool Exists(const std::string& id) const override {
    if (!ValidateLayerId(id).ok() || !DirExists(id)) return false;
    return records_->GetReady(id).ok();
  }

  // Ready layers, and trees no record owns (for check; Remove deletes them).
  absl::StatusOr<std::vector<std::string>> List() const override {
    std::vector<std::string> names;
    RETURN_IF_ERROR(ListNames(absl::StrCat(root_, "/dir"), &names, false));
    return records_->ReadyOrUnowned(names);
  }

  std::vector<std::pair<std::string, std::string>> Status() const override {
    absl::StatusOr<std::string> fs = BackingFsName(root_);
    return {{"Backing Filesystem", fs.ok() ? *fs : "unknown"}, {"Root Dir", root_}};
  }

  absl::StatusOr<std::map<std::string, std::string>> Metadata(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
    std::map<std::string, std::string> m = {{"Dir", Dir(id)}};
    absl::StatusOr<LayerRecord> r = records_->GetReady(id);
    m["Parent"] = r.ok() ? r->Field("parent") : "";
    return m;
  }

  absl::Status Cleanup() override { return absl::OkStatus(); }

  absl::StatusOr<DiffResult> Diff(const std::string& id, const std::string& parent, ByteSink& sink) override {
    return NaiveDiff(*this, id, parent, sink);
  }
  absl::StatusOr<ApplyDiffResult> ApplyDiff(const std::string& id, const std::string& parent,
                                            ByteSource& source) override {
    (void)parent;
    return NaiveApplyDiff(*this, id, source, WhiteoutFormat::kDelete);
  }
  absl::StatusOr<std::vector<Change>> Changes(const std::string& id, const std::string& parent) override {
    return NaiveChanges(*this, id, parent);
  }
  // Usage: a walk of the full copy, as containerd's native snapshotter.
  absl::StatusOr<DiskUsage> Usage(const std::string& id, const std::string&) override {
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " not found"));
    return TreeUsage(Dir(id));
  }

  absl::StatusOr<int64_t> DiffSize(const std::string& id, const std::string& parent) override {
    return NaiveDiffSize(*this, id, parent);
  }

  absl::StatusOr<std::vector<MountSpec>> Mounts(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
    absl::StatusOr<LayerRecord> r = records_->GetReady(id);
    bool rw = r.ok() && r->Field("rw") == "1";
    return std::vector<MountSpec>{{"bind", Dir(id), "", {"rbind", rw ? "rw" : "ro"}}};
  }

 private:
  std::string Dir(const std::string& id) const { return absl::StrCat(root_, "/dir/", id); }
  bool DirExists(const std::string& id) const {
    struct stat st;
    return ::lstat(Dir(id).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }

  // Earlier releases' <root>/info/<id> files ("parent=..\nrw=0|1\n"): into
  // the records in one transaction, then the files and the directory go.
  absl::Status MigrateInfoFiles() {
    std::string info_dir = absl::StrCat(root_, "/info");
    struct stat st;
    if (::lstat(info_dir.c_str(), &st) != 0) return absl::OkStatus();
    std::vector<std::string> names;
    RETURN_IF_ERROR(ListNames(info_dir, &names, false));
    std::vector<LayerRecord> found;
    for (const std::string& n : names) {
      if (!ValidateLayerId(n).ok() || !DirExists(n)) continue;
      std::ifstream in(absl::StrCat(info_dir, "/", n));
      LayerRecord r;
      r.id = n;
      r.state = RecordState::kReady;
      std::string line;
      while (std::getline(in, line)) {
        size_t eq = line.find('=');
        if (eq != std::string::npos) r.fields[line.substr(0, eq)] = line.substr(eq + 1);
      }
      found.push_back(std::move(r));
    }
    RETURN_IF_ERROR(base::Annotate(records_->Migrate(found), absl::StrCat("vfs: moving the layer records of ",
                                                                           root_, " into ", records_->path())));
    return RemoveTree(info_dir);
  }

  static absl::Status ListNames(const std::string& dir, std::vector<std::string>* out, bool hidden) {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return base::ErrnoError(errno, absl::StrCat("opendir ", dir));
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n == "." || n == "..") continue;
      if (absl::StartsWith(n, ".") != hidden) continue;
      out->push_back(n);
    }
    ::closedir(d);
    std::sort(out->begin(), out->end());
    return absl::OkStatus();
  }

  std::string root_;
  MountRefs refs_;
  std::shared_ptr<LayerRecords> records_;
  bool own_records_;
};

}  // namespace

DriverInfo VfsDriverInfo() {
  DriverInfo info;
  info.name = "vfs";
  info.priority = 100;
  info.probe = [](const DriverOptions&) { return absl::OkStatus(); };
  info.create = [](const DriverOptions& o) -> absl::StatusOr<std::unique_ptr<Driver>> {
    for (const auto& [k, v] : o.options) {
      return absl::InvalidArgumentError(absl::StrCat("vfs: unknown option \"", k, "\""));
    }
    RETURN_IF_ERROR(LayerRecords::ClaimHome(o.root, o.records == nullptr, "vfs"));
    ASSIGN_OR_RETURN(std::shared_ptr<LayerRecords> records, LayerRecords::ForDriver(o.root, o.records));
    auto d = std::make_unique<VfsDriver>(o.root, std::move(records), o.records == nullptr);
    RETURN_IF_ERROR(d->Init());
    return std::unique_ptr<Driver>(std::move(d));
  };
  return info;
}

}  // namespace graph
