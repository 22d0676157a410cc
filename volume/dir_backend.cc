#include "volume/dir_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/btrfs.h"
#include "base/fsutil.h"
#include "base/status.h"

namespace volume {
namespace {

// Summed allocation of a tree (st_blocks; hard links counted once each
// time they are met), staying on one filesystem.
uint64_t g_walk_bytes = 0;
int AddBlocks(const char*, const struct stat* st, int, struct FTW*) {
  g_walk_bytes += static_cast<uint64_t>(st->st_blocks) * 512;
  return 0;
}

absl::StatusOr<uint64_t> TreeBytes(const std::string& path) {
  // nftw takes a plain callback; the store serialises its calls (store lock
  // and mutex), so one static accumulator is enough.
  g_walk_bytes = 0;
  if (::nftw(path.c_str(), AddBlocks, 32, FTW_PHYS | FTW_MOUNT) != 0) {
    return base::ErrnoError(errno, absl::StrCat("walking ", path));
  }
  return g_walk_bytes;
}

class DirectoryBackend : public VolumeBackend {
 public:
  DirectoryBackend(std::string data_dir, std::string fs, bool btrfs)
      : data_dir_(std::move(data_dir)), fs_(std::move(fs)), btrfs_(btrfs) {}

  absl::StatusOr<std::string> CheckCreate(uint64_t size_bytes, const std::string& fs) override {
    if (!fs.empty() && fs != fs_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "directory volumes live on the data dir's filesystem (", fs_, " at ", data_dir_,
          "); a filesystem type (\"", fs, "\") needs the thin backend"));
    }
    if (size_bytes > 0) {
      if (!btrfs_) {
        return absl::FailedPreconditionError(absl::StrCat(
            "cannot enforce a volume size on ", fs_, " at ", data_dir_,
            ": directory volumes take a size only on btrfs (qgroup limit); "
            "use the thin backend, or create the volume without a size"));
      }
      RETURN_IF_ERROR(base::Annotate(base::btrfs::EnableQuota(data_dir_),
                                     "enabling btrfs quotas for a volume size"));
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
    return absl::OkStatus();
  }

  absl::Status Snapshot(const std::string& source, const std::string& name,
                        uint64_t size_bytes) override {
    if (btrfs_) {
      RETURN_IF_ERROR(base::btrfs::SnapshotSubvolume(DataPath(source), data_dir_, name,
                                                     /*readonly=*/false));
      if (size_bytes > 0) RETURN_IF_ERROR(base::btrfs::SetQgroupLimit(DataPath(name), size_bytes));
      return absl::OkStatus();
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
    ASSIGN_OR_RETURN(usage.used_bytes, TreeBytes(path));
    return usage;
  }

  absl::Status Grow(const std::string& name, const std::string&, uint64_t,
                    uint64_t new_size) override {
    if (!btrfs_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot enforce a volume size on ", fs_, " at ", data_dir_));
    }
    RETURN_IF_ERROR(base::btrfs::EnableQuota(data_dir_));
    return base::btrfs::SetQgroupLimit(DataPath(name), new_size);
  }

 private:
  std::string data_dir_;
  std::string fs_;
  bool btrfs_;
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
  bool btrfs = base::btrfs::CheckOnBtrfs(data_dir).ok();
  return std::unique_ptr<VolumeBackend>(new DirectoryBackend(data_dir, fs, btrfs));
}

}  // namespace volume
