#include "graph/drivers/aufs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "graph/archive.h"
#include "graph/driver.h"
#include "graph/drivers/make_dirs.h"
#include "graph/drivers/mountref.h"
#include "graph/drivers/naive_diff.h"
#include "graph/drivers/new_driver.h"
#include "graph/fsutil.h"

namespace graph {
namespace aufs {

absl::Status KernelSupport() {
  std::ifstream in("/proc/filesystems");
  if (!in) return base::ErrnoError(errno, "aufs: read /proc/filesystems");
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, '\t');
    if (!fields.empty() && fields.back() == "aufs") return absl::OkStatus();
  }
  return UnsupportedError(Unsupported::kKernelLacksFilesystem,
                          "aufs is not supported by this kernel (no aufs in "
                          "/proc/filesystems; aufs is an out-of-tree module)");
}

std::vector<std::string> MountData(const std::string& top, bool top_writable,
                                   const std::vector<std::string>& lowers,
                                   size_t page_size) {
  // dio: direct I/O through to the branches; xino on tmpfs keeps inode
  // numbers stable without writing to the branches; dirperm1 checks
  // permissions on the topmost directory only (as Docker did).
  std::string first = absl::StrCat("br:", top, top_writable ? "=rw" : "=ro+wh");
  const std::string tail = ",dio,xino=/dev/shm/aufs.xino,dirperm1";
  std::vector<std::string> out;
  size_t i = 0;
  for (; i < lowers.size(); ++i) {
    std::string next = absl::StrCat(":", lowers[i], "=ro+wh");
    if (first.size() + next.size() + tail.size() + 1 > page_size) break;
    first += next;
  }
  out.push_back(first + tail);
  for (; i < lowers.size(); ++i) {
    out.push_back(absl::StrCat("append:", lowers[i], "=ro+wh"));
  }
  return out;
}

bool IsAufsMetaName(const std::string& name) {
  return name == ".wh..wh.plnk" || name == ".wh..wh.aufs" || name == ".wh..wh.orph";
}

}  // namespace aufs

namespace {

absl::Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return base::ErrnoError(errno, absl::StrCat("aufs: mkdir ", path));
  }
  return absl::OkStatus();
}

absl::Status ProbeAufs(const DriverOptions& options) {
  for (const auto& [key, value] : options.options) {
    if (key.rfind("aufs.", 0) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("aufs: unknown option \"", key, "\""));
    }
  }
  RETURN_IF_ERROR(aufs::KernelSupport());
  if (::geteuid() != 0) {
    return UnsupportedError(Unsupported::kPrivilege, "aufs: mounting needs root");
  }
  return absl::OkStatus();
}

class AufsDriver : public Driver {
 public:
  explicit AufsDriver(std::string root) : root_(std::move(root)), refs_(root_ + "/.refs") {}

  absl::Status Init() {
    for (const std::string& d : {root_ + "/diff", root_ + "/layers", root_ + "/mnt"}) {
      RETURN_IF_ERROR(MakeDirs(d, "aufs"));
    }
    return absl::OkStatus();
  }

  std::string Name() const override { return "aufs"; }

  absl::Status Create(const std::string& id, const std::string& parent,
                      const CreateOptions& options) override {
    RETURN_IF_ERROR(aufs::KernelSupport());
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!options.storage_options.empty()) {
      return absl::InvalidArgumentError("aufs: storage options are not supported");
    }
    if (Exists(id)) return absl::AlreadyExistsError(absl::StrCat("aufs: layer ", id, " already exists"));
    std::vector<std::string> ancestors;
    if (!parent.empty()) {
      RETURN_IF_ERROR(ValidateLayerId(parent));
      if (!Exists(parent)) return absl::NotFoundError(absl::StrCat("aufs: parent ", parent, " not found"));
      ASSIGN_OR_RETURN(ancestors, Ancestors(parent));
      ancestors.insert(ancestors.begin(), parent);
    }
    // Write the ancestry first (to a temp name, renamed into place last) so
    // a layer with a diff dir always has its full chain recorded.
    std::string layers = LayersFile(id);
    std::string tmp = layers + ".tmp";
    {
      base::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      if (!fd) return base::ErrnoError(errno, absl::StrCat("aufs: create ", tmp));
      std::string data = ancestors.empty() ? "" : absl::StrCat(absl::StrJoin(ancestors, "\n"), "\n");
      if (::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()) ||
          ::fsync(fd.get()) != 0) {
        return base::ErrnoError(errno, absl::StrCat("aufs: write ", tmp));
      }
    }
    RETURN_IF_ERROR(MakeDir(MntDir(id)));
    if (::mkdir(DiffDir(id).c_str(), 0755) != 0) {
      return base::ErrnoError(errno, absl::StrCat("aufs: mkdir ", DiffDir(id)));
    }
    if (::rename(tmp.c_str(), layers.c_str()) != 0) {
      return base::ErrnoError(errno, absl::StrCat("aufs: rename ", tmp));
    }
    return absl::OkStatus();
  }

  absl::Status Remove(const std::string& id) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("aufs: layer ", id, " not found"));
    RETURN_IF_ERROR(refs_.Reset(id, [&] { return Unmount(id); }));
    RETURN_IF_ERROR(Unmount(id));
    RETURN_IF_ERROR(RemoveTree(DiffDir(id)));
    if (::unlink(LayersFile(id).c_str()) != 0 && errno != ENOENT) {
      return base::ErrnoError(errno, absl::StrCat("aufs: unlink ", LayersFile(id)));
    }
    if (::rmdir(MntDir(id).c_str()) != 0 && errno != ENOENT) {
      return base::ErrnoError(errno, absl::StrCat("aufs: rmdir ", MntDir(id)));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Get(const std::string& id, const std::string& mount_label) override {
    RETURN_IF_ERROR(aufs::KernelSupport());
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("aufs: layer ", id, " not found"));
    RETURN_IF_ERROR(refs_.Acquire(id, [&] { return IsMounted(id); }, [&]() -> absl::Status {
      if (IsMounted(id)) return absl::OkStatus();  // stale count, mount still there
      ASSIGN_OR_RETURN(std::vector<std::string> data, Data(id));
      std::string first = data[0];
      if (!mount_label.empty()) first += absl::StrCat(",context=\"", mount_label, "\"");
      if (::mount("none", MntDir(id).c_str(), "aufs", 0, first.c_str()) != 0) {
        return base::ErrnoError(errno, absl::StrCat("aufs: mount ", MntDir(id)));
      }
      for (size_t i = 1; i < data.size(); ++i) {
        if (::mount("none", MntDir(id).c_str(), "aufs", MS_REMOUNT, data[i].c_str()) != 0) {
          int err = errno;
          ::umount2(MntDir(id).c_str(), MNT_DETACH);
          return base::ErrnoError(err, absl::StrCat("aufs: remount ", MntDir(id), " ", data[i]));
        }
      }
      return absl::OkStatus();
    }));
    return MntDir(id);
  }

  absl::Status Put(const std::string& id) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    return refs_.Release(id, [&] { return Unmount(id); });
  }

  absl::StatusOr<int> MountCount(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    return refs_.Live(id, [&] { return IsMounted(id); });
  }

  bool Exists(const std::string& id) const override {
    if (!ValidateLayerId(id).ok()) return false;
    struct stat st;
    return ::lstat(DiffDir(id).c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
           ::lstat(LayersFile(id).c_str(), &st) == 0;
  }

  absl::StatusOr<std::vector<std::string>> List() const override {
    std::string dir_path = root_ + "/diff";
    DIR* dir = ::opendir(dir_path.c_str());
    if (dir == nullptr) return base::ErrnoError(errno, absl::StrCat("aufs: opendir ", dir_path));
    std::vector<std::string> ids;
    while (struct dirent* e = ::readdir(dir)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      ids.emplace_back(e->d_name);
    }
    ::closedir(dir);
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  std::vector<std::pair<std::string, std::string>> Status() const override {
    absl::Status k = aufs::KernelSupport();
    absl::StatusOr<std::vector<std::string>> ids = List();
    return {{"Root Dir", root_},
            {"Backing Filesystem", "(any)"},
            {"Dirs", ids.ok() ? std::to_string(ids->size()) : "?"},
            {"Kernel Support", k.ok() ? "yes" : std::string(k.message())}};
  }

  absl::StatusOr<std::map<std::string, std::string>> Metadata(const std::string& id) const override {
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("aufs: layer ", id, " not found"));
    return std::map<std::string, std::string>{{"DiffDir", DiffDir(id)}, {"MergedDir", MntDir(id)}};
  }

  absl::Status Cleanup() override {
    ASSIGN_OR_RETURN(std::vector<std::string> ids, List());
    absl::Status first;
    for (const std::string& id : ids) {
      absl::Status s = refs_.Reset(id, [&] { return Unmount(id); });
      if (s.ok()) s = Unmount(id);
      if (!s.ok() && first.ok()) first = s;
    }
    return first;
  }

  // The diff dir already holds OCI-form whiteouts: export it natively.
  absl::StatusOr<DiffResult> Diff(const std::string& id, const std::string& parent,
                                  ByteSink& sink) override {
    ASSIGN_OR_RETURN(bool native, IsNativeParent(id, parent));
    if (!native) return NaiveDiff(*this, id, parent, sink);
    base::UniqueFd fd(::open(DiffDir(id).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return base::ErrnoError(errno, absl::StrCat("aufs: open ", DiffDir(id)));
    return WriteLayerTree(fd.get(), WhiteoutFormat::kAufs, sink);
  }

  // Applies straight into the diff dir, keeping `.wh.` files as aufs wants.
  absl::StatusOr<ApplyDiffResult> ApplyDiff(const std::string& id, const std::string& parent,
                                            ByteSource& source) override {
    RETURN_IF_ERROR(aufs::KernelSupport());
    ASSIGN_OR_RETURN(bool native, IsNativeParent(id, parent));
    if (!native) {
      return absl::InvalidArgumentError(absl::StrCat(
          "aufs: ApplyDiff onto ", id, " with parent ", parent, " other than its own"));
    }
    base::UniqueFd fd(::open(DiffDir(id).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return base::ErrnoError(errno, absl::StrCat("aufs: open ", DiffDir(id)));
    ApplyOptions options;
    options.whiteouts = WhiteoutFormat::kAufs;
    return ApplyLayer(fd.get(), source, options);
  }

  absl::StatusOr<std::vector<Change>> Changes(const std::string& id,
                                              const std::string& parent) override {
    return NaiveChanges(*this, id, parent);
  }

  // Usage: a walk of the diff dir.
  absl::StatusOr<DiskUsage> Usage(const std::string& id, const std::string&) override {
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " not found"));
    return TreeUsage(DiffDir(id));
  }

  absl::StatusOr<int64_t> DiffSize(const std::string& id, const std::string& parent) override {
    return NaiveDiffSize(*this, id, parent);
  }

  absl::StatusOr<std::vector<MountSpec>> Mounts(const std::string& id) const override {
    RETURN_IF_ERROR(aufs::KernelSupport());
    ASSIGN_OR_RETURN(std::vector<std::string> data, Data(id));
    if (data.size() > 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "aufs: layer ", id, " has too many ancestors for one mount; use Get"));
    }
    return std::vector<MountSpec>{{"aufs", "none", "", absl::StrSplit(data[0], ',')}};
  }

 private:
  std::string DiffDir(const std::string& id) const { return absl::StrCat(root_, "/diff/", id); }
  std::string MntDir(const std::string& id) const { return absl::StrCat(root_, "/mnt/", id); }
  std::string LayersFile(const std::string& id) const { return absl::StrCat(root_, "/layers/", id); }

  absl::StatusOr<std::vector<std::string>> Ancestors(const std::string& id) const {
    std::ifstream in(LayersFile(id));
    if (!in) return base::ErrnoError(errno, absl::StrCat("aufs: read ", LayersFile(id)));
    std::vector<std::string> out;
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      RETURN_IF_ERROR(ValidateLayerId(line));
      out.push_back(line);
    }
    return out;
  }

  absl::StatusOr<bool> IsNativeParent(const std::string& id, const std::string& parent) const {
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("aufs: layer ", id, " not found"));
    ASSIGN_OR_RETURN(std::vector<std::string> ancestors, Ancestors(id));
    return ancestors.empty() ? parent.empty() : ancestors[0] == parent;
  }

  absl::StatusOr<std::vector<std::string>> Data(const std::string& id) const {
    ASSIGN_OR_RETURN(std::vector<std::string> ancestors, Ancestors(id));
    std::vector<std::string> lowers;
    for (const std::string& a : ancestors) lowers.push_back(DiffDir(a));
    // The top branch is writable for image layers too: ApplyDiff writes
    // them, and Docker mounted every layer that way.
    const bool writable = true;
    long page = ::sysconf(_SC_PAGESIZE);
    return aufs::MountData(DiffDir(id), writable, lowers,
                           page > 0 ? static_cast<size_t>(page) : 4096);
  }

  std::string root_;
  bool IsMounted(const std::string& id) const {
    absl::StatusOr<bool> m = IsMountPoint(MntDir(id));
    return m.ok() && *m;
  }
  absl::Status Unmount(const std::string& id) const {
    if (IsMounted(id) && ::umount2(MntDir(id).c_str(), 0) != 0 && errno != EINVAL) {
      return base::ErrnoError(errno, absl::StrCat("aufs: umount ", MntDir(id)));
    }
    return absl::OkStatus();
  }

  MountRefs refs_;
};

}  // namespace

DriverInfo AufsDriverInfo() {
  DriverInfo info;
  info.name = "aufs";
  info.priority = 40;
  info.probe = ProbeAufs;
  // Constructing the driver does not need the kernel module (its state can
  // be listed and removed without it); Create, Get and ApplyDiff do.
  info.create = [](const DriverOptions& options) {
    return NewInitializedDriver<AufsDriver>(options.root);
  };
  return info;
}

}  // namespace graph
