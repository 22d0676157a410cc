// vfs: every layer is a full copy of its parent (reflinked where the
// filesystem can: btrfs, xfs with reflink, bcachefs). No mounts; works on
// any filesystem; whiteouts are applied by deleting. Layout:
//   <root>/dir/<id>          the layer's full tree
//   <root>/info/<id>         "parent=<id>\nrw=<0|1>\n"
//   <root>/.refs/<id>        Get/Put reference counts
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
#include "base/status.h"
#include "base/unique_fd.h"
#include "graph/archive.h"
#include "graph/driver.h"
#include "graph/drivers/mountref.h"
#include "graph/drivers/naive_diff.h"
#include "graph/fsutil.h"

namespace graph {
namespace {

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
  explicit VfsDriver(std::string root)
      : root_(std::move(root)), refs_(absl::StrCat(root_, "/.refs")) {}

  absl::Status Init() {
    RETURN_IF_ERROR(MkdirP(absl::StrCat(root_, "/dir")));
    RETURN_IF_ERROR(MkdirP(absl::StrCat(root_, "/info")));
    // Reap what a crashed Create/Remove left behind.
    std::vector<std::string> names;
    RETURN_IF_ERROR(ListNames(absl::StrCat(root_, "/dir"), &names, /*hidden=*/true));
    for (const std::string& n : names) {
      if (absl::StartsWith(n, ".")) (void)RemoveTree(absl::StrCat(root_, "/dir/", n));
    }
    return absl::OkStatus();
  }

  std::string Name() const override { return "vfs"; }

  absl::Status Create(const std::string& id, const std::string& parent, const CreateOptions& options) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    for (const auto& [k, v] : options.storage_options) {
      return absl::InvalidArgumentError(absl::StrCat("vfs: unknown storage option \"", k, "\""));
    }
    if (Exists(id)) return absl::AlreadyExistsError(absl::StrCat("layer ", id, " already exists"));
    if (!parent.empty()) {
      RETURN_IF_ERROR(ValidateLayerId(parent));
      if (!Exists(parent)) return absl::NotFoundError(absl::StrCat("parent layer ", parent, " does not exist"));
    }
    std::string tmp = absl::StrCat(root_, "/dir/.create-", id, "-", RandomSuffix());
    if (parent.empty()) {
      if (::mkdir(tmp.c_str(), 0755) != 0) return base::ErrnoError(errno, absl::StrCat("mkdir ", tmp));
    } else {
      absl::StatusOr<CopyStats> st = CopyTree(Dir(parent), tmp);
      if (!st.ok()) {
        (void)RemoveTree(tmp);
        return st.status();
      }
    }
    std::string info = absl::StrCat("parent=", parent, "\nrw=", options.read_write ? 1 : 0, "\n");
    absl::Status s = WriteFile(Info(id), info);
    if (s.ok() && ::rename(tmp.c_str(), Dir(id).c_str()) != 0) s = base::ErrnoError(errno, "publishing layer");
    if (!s.ok()) {
      (void)RemoveTree(tmp);
      (void)::unlink(Info(id).c_str());
    }
    return s;
  }

  absl::Status Remove(const std::string& id) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
    RETURN_IF_ERROR(refs_.Reset(id, [] { return absl::OkStatus(); }));
    // Rename first so a crash never leaves a half-removed layer visible.
    std::string doomed = absl::StrCat(root_, "/dir/.remove-", id, "-", RandomSuffix());
    if (::rename(Dir(id).c_str(), doomed.c_str()) != 0) return base::ErrnoError(errno, "hiding layer for removal");
    (void)::unlink(Info(id).c_str());
    return RemoveTree(doomed);
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

  bool Exists(const std::string& id) const override {
    if (!ValidateLayerId(id).ok()) return false;
    struct stat st;
    return ::lstat(Dir(id).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }

  absl::StatusOr<std::vector<std::string>> List() const override {
    std::vector<std::string> names;
    RETURN_IF_ERROR(ListNames(absl::StrCat(root_, "/dir"), &names, false));
    return names;
  }

  std::vector<std::pair<std::string, std::string>> Status() const override {
    absl::StatusOr<std::string> fs = BackingFsName(root_);
    return {{"Backing Filesystem", fs.ok() ? *fs : "unknown"}, {"Root Dir", root_}};
  }

  absl::StatusOr<std::map<std::string, std::string>> Metadata(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
    std::map<std::string, std::string> m = {{"Dir", Dir(id)}};
    auto info = ReadInfo(id);
    m["Parent"] = info["parent"];
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
    bool rw = ReadInfo(id)["rw"] == "1";
    return std::vector<MountSpec>{{"bind", Dir(id), "", {"rbind", rw ? "rw" : "ro"}}};
  }

 private:
  std::string Dir(const std::string& id) const { return absl::StrCat(root_, "/dir/", id); }
  std::string Info(const std::string& id) const { return absl::StrCat(root_, "/info/", id); }

  std::map<std::string, std::string> ReadInfo(const std::string& id) const {
    std::map<std::string, std::string> out;
    std::ifstream in(Info(id));
    std::string line;
    while (std::getline(in, line)) {
      size_t eq = line.find('=');
      if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return out;
  }

  static absl::Status WriteFile(const std::string& path, const std::string& data) {
    std::string tmp = absl::StrCat(path, ".tmp");
    base::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) return base::ErrnoError(errno, absl::StrCat("creating ", tmp));
    if (::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size())) {
      return base::ErrnoError(errno, absl::StrCat("writing ", tmp));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) return base::ErrnoError(errno, absl::StrCat("renaming ", tmp));
    return absl::OkStatus();
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
    auto d = std::make_unique<VfsDriver>(o.root);
    RETURN_IF_ERROR(d->Init());
    return std::unique_ptr<Driver>(std::move(d));
  };
  return info;
}

}  // namespace graph
