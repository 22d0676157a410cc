#include "volume/dir_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/btrfs.h"
#include "base/fsutil.h"
#include "base/status.h"
#include "volume/project_quota.h"

namespace volume {
namespace {

// Project ids of directory volumes start here (below: left to the admin).
constexpr uint32_t kFirstProjectId = 100000;

// How a size is enforced on the data dir's filesystem.
enum class Limit { kNone, kBtrfsQgroup, kProjectQuota };

class DirectoryBackend : public VolumeBackend {
 public:
  DirectoryBackend(std::string data_dir, std::string fs, Limit limit, absl::Status no_limit)
      : data_dir_(std::move(data_dir)), fs_(std::move(fs)), btrfs_(limit == Limit::kBtrfsQgroup),
        limit_(limit), no_limit_(std::move(no_limit)) {}

  absl::StatusOr<std::string> CheckCreate(uint64_t size_bytes, const std::string& fs) override {
    if (!fs.empty() && fs != fs_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "directory volumes live on the data dir's filesystem (", fs_, " at ", data_dir_,
          "); a filesystem type (\"", fs, "\") needs the thin backend"));
    }
    if (size_bytes > 0) {
      RETURN_IF_ERROR(CanLimit());
      if (btrfs_) {
        RETURN_IF_ERROR(base::Annotate(base::btrfs::EnableQuota(data_dir_),
                                       "enabling btrfs quotas for a volume size"));
      }
    }
    return fs_;
  }

  absl::Status Create(const std::string& name, uint64_t size_bytes, const std::string&) override {
    std::string path = DataPath(name);
    if (btrfs_) {
      RETURN_IF_ERROR(base::btrfs::CreateSubvolume(data_dir_, name));
      if (size_bytes > 0) RETURN_IF_ERROR(base::btrfs::SetQgroupLimit(path, size_bytes));
      return absl::OkStatus();
    }
    if (::mkdir(path.c_str(), 0755) != 0) {
      return base::ErrnoError(errno, absl::StrCat("mkdir ", path));
    }
    return limit_ == Limit::kProjectQuota ? StartProject(path, size_bytes) : absl::OkStatus();
  }

  absl::Status Snapshot(const std::string& source, const std::string& name,
                        uint64_t size_bytes) override {
    if (btrfs_) {
      RETURN_IF_ERROR(base::btrfs::SnapshotSubvolume(DataPath(source), data_dir_, name,
                                                     /*readonly=*/false));
      if (size_bytes > 0) RETURN_IF_ERROR(base::btrfs::SetQgroupLimit(DataPath(name), size_bytes));
      return absl::OkStatus();
    }
    if (limit_ == Limit::kProjectQuota) {
      // A project of its own first, so the copy is charged to it.
      std::string path = DataPath(name);
      if (::mkdir(path.c_str(), 0755) != 0) {
        return base::ErrnoError(errno, absl::StrCat("mkdir ", path));
      }
      RETURN_IF_ERROR(StartProject(path, size_bytes));
      return base::CopyTreeInto(DataPath(source), path).status();
    }
    return base::CopyTree(DataPath(source), DataPath(name)).status();
  }

  absl::Status Remove(const std::string& name) override {
    std::string path = DataPath(name);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return absl::OkStatus();
      return base::ErrnoError(errno, absl::StrCat("stat ", path));
    }
    if (btrfs_) {
      ASSIGN_OR_RETURN(bool subvol, base::btrfs::IsSubvolume(path));
      if (subvol) return base::btrfs::DeleteSubvolume(path);
    }
    if (limit_ == Limit::kProjectQuota && S_ISDIR(st.st_mode)) {
      // The id may be handed out again: it must not keep this one's limit.
      ASSIGN_OR_RETURN(uint32_t id, GetProjectId(path));
      RETURN_IF_ERROR(base::RemoveTree(path));
      if (id >= kFirstProjectId) RETURN_IF_ERROR(SetProjectLimit(data_dir_, id, 0));
      return absl::OkStatus();
    }
    return base::RemoveTree(path);
  }

  absl::StatusOr<std::vector<std::string>> ListNames() override {
    DIR* dir = ::opendir(data_dir_.c_str());
    if (dir == nullptr) return base::ErrnoError(errno, absl::StrCat("opendir ", data_dir_));
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* ent = ::readdir(dir)) {
      if (std::strcmp(ent->d_name, ".") == 0 || std::strcmp(ent->d_name, "..") == 0) continue;
      names.emplace_back(ent->d_name);
    }
    int err = errno;
    ::closedir(dir);
    if (err != 0) return base::ErrnoError(err, absl::StrCat("readdir ", data_dir_));
    std::sort(names.begin(), names.end());
    return names;
  }

  absl::StatusOr<std::string> Mount(const std::string& name, const std::string&) override {
    std::string path = DataPath(name);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return base::ErrnoError(errno, absl::StrCat("stat ", path));
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(path, " is not a directory"));
    }
    return path;
  }
  absl::Status Unmount(const std::string&) override { return absl::OkStatus(); }
  absl::StatusOr<bool> Mounted(const std::string&) override { return true; }
  std::string DataPath(const std::string& name) const override {
    return absl::StrCat(data_dir_, "/", name);
  }
  bool NeedsMount() const override { return false; }

  absl::StatusOr<Usage> GetUsage(const std::string& name, uint64_t size_bytes) override {
    Usage usage;
    usage.size_bytes = size_bytes;
    std::string path = DataPath(name);
    if (btrfs_) {
      absl::StatusOr<base::btrfs::QgroupUsage> q = base::btrfs::GetQgroupUsage(path);
      if (q.ok()) {
        usage.used_bytes = q->referenced;
        return usage;
      }
      if (!absl::IsNotFound(q.status())) return q.status();
    }
    if (limit_ == Limit::kProjectQuota) {
      ASSIGN_OR_RETURN(uint32_t id, GetProjectId(path));
      if (id >= kFirstProjectId) {
        ASSIGN_OR_RETURN(usage.used_bytes, ProjectUsage(data_dir_, id));
        return usage;
      }
    }
    ASSIGN_OR_RETURN(base::TreeUsageResult tree, base::TreeUsage(path));
    usage.used_bytes = static_cast<uint64_t>(tree.bytes);
    return usage;
  }

  absl::Status Grow(const std::string& name, const std::string&, uint64_t,
                    uint64_t new_size) override {
    RETURN_IF_ERROR(CanLimit());
    if (limit_ == Limit::kProjectQuota) {
      ASSIGN_OR_RETURN(uint32_t id, GetProjectId(DataPath(name)));
      if (id < kFirstProjectId) {
        return absl::FailedPreconditionError(absl::StrCat(
            "volume ", name, " has no project of its own (made without a size before "
            "project quota was enforced); it cannot take a size"));
      }
      return SetProjectLimit(data_dir_, id, new_size);
    }
    RETURN_IF_ERROR(base::btrfs::EnableQuota(data_dir_));
    return base::btrfs::SetQgroupLimit(DataPath(name), new_size);
  }

 private:
  absl::Status CanLimit() const {
    if (limit_ != Limit::kNone) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot enforce a volume size on ", fs_, " at ", data_dir_,
        ": directory volumes take a size on btrfs (qgroup limit) or on ext4/xfs with "
        "project quota enforced, and here ", no_limit_.message(),
        "; use the thin backend, or create the volume without a size"));
  }

  // Gives the new volume directory `path` a project id of its own (one
  // above the highest a volume holds) and its limit. Every volume gets a
  // project, sized or not, so usage is the quota's and a later grow works.
  absl::Status StartProject(const std::string& path, uint64_t size_bytes) {
    uint32_t next = kFirstProjectId;
    ASSIGN_OR_RETURN(std::vector<std::string> names, ListNames());
    for (const std::string& n : names) {
      std::string other = DataPath(n);
      if (other == path) continue;
      absl::StatusOr<uint32_t> id = GetProjectId(other);
      if (id.ok() && *id >= next) next = *id + 1;
    }
    // Limit first: a project's files are never unlimited for a moment.
    RETURN_IF_ERROR(SetProjectLimit(data_dir_, next, size_bytes));
    return SetProjectId(path, next);
  }

  std::string data_dir_;
  std::string fs_;
  bool btrfs_;
  Limit limit_;
  absl::Status no_limit_;  // why nothing enforces a size (kNone)
};

}  // namespace

absl::StatusOr<std::unique_ptr<VolumeBackend>> NewDirectoryBackend(const std::string& data_dir) {
  if (::mkdir(data_dir.c_str(), 0711) != 0 && errno != EEXIST) {
    return base::ErrnoError(errno, absl::StrCat("mkdir ", data_dir));
  }
  struct stat st;
  if (::lstat(data_dir.c_str(), &st) != 0) return base::ErrnoError(errno, absl::StrCat("stat ", data_dir));
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("volume data dir ", data_dir,
                                                      " is not a directory (or is a symlink)"));
  }
  ASSIGN_OR_RETURN(std::string fs, base::BackingFsName(data_dir));
  Limit limit = Limit::kNone;
  absl::Status why;
  if (base::btrfs::CheckOnBtrfs(data_dir).ok()) {
    limit = Limit::kBtrfsQgroup;
  } else if (fs == "extfs" || fs == "ext4" || fs == "xfs") {
    why = CheckProjectQuota(data_dir);
    if (why.ok()) limit = Limit::kProjectQuota;
  } else {
    why = absl::FailedPreconditionError(absl::StrCat(fs, " has no quota to bound a directory"));
  }
  return std::unique_ptr<VolumeBackend>(new DirectoryBackend(data_dir, fs, limit, why));
}

}  // namespace volume
