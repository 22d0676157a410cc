#include "base/btrfs.h"

#include <dirent.h>
#include <endian.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace base::btrfs {
namespace {

const char* FsName(unsigned long magic) {
  switch (magic) {
    case EXT4_SUPER_MAGIC: return "ext2/3/4";
    case TMPFS_MAGIC: return "tmpfs";
    case XFS_SUPER_MAGIC: return "xfs";
    case OVERLAYFS_SUPER_MAGIC: return "overlay";
    case BTRFS_SUPER_MAGIC: return "btrfs";
    default: return nullptr;
  }
}

absl::Status CheckName(absl::string_view name, size_t max) {
  if (name.empty() || name == "." || name == ".." ||
      name.find('/') != absl::string_view::npos || name.size() > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid subvolume name \"", name, "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<base::UniqueFd> OpenDir(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return base::ErrnoError(errno, absl::StrCat("open ", path));
  return fd;
}

// Splits "/a/b/c" into ("/a/b", "c"); trailing slashes are ignored.
std::pair<std::string, std::string> SplitPath(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  if (slash == 0) return {"/", path.substr(1)};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

absl::Status DestroyByName(int parent_fd, const std::string& parent,
                           const std::string& name) {
  struct btrfs_ioctl_vol_args_v2 args2;
  std::memset(&args2, 0, sizeof(args2));
  std::memcpy(args2.name, name.data(), name.size());
  if (::ioctl(parent_fd, BTRFS_IOC_SNAP_DESTROY_V2, &args2) == 0) {
    return absl::OkStatus();
  }
  int err = errno;
  if (err == ENOTTY || err == EOPNOTSUPP) {  // kernels before 5.7
    struct btrfs_ioctl_vol_args args;
    std::memset(&args, 0, sizeof(args));
    std::memcpy(args.name, name.data(), name.size());
    if (::ioctl(parent_fd, BTRFS_IOC_SNAP_DESTROY, &args) == 0) {
      return absl::OkStatus();
    }
    err = errno;
  }
  return base::ErrnoError(
      err, absl::StrCat("BTRFS_IOC_SNAP_DESTROY ", parent, "/", name));
}

absl::Status ClearReadOnly(int fd, const std::string& path) {
  __u64 flags = 0;
  if (::ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) != 0) {
    return base::ErrnoError(errno, absl::StrCat("BTRFS_IOC_SUBVOL_GETFLAGS ", path));
  }
  if ((flags & BTRFS_SUBVOL_RDONLY) == 0) return absl::OkStatus();
  flags &= ~static_cast<__u64>(BTRFS_SUBVOL_RDONLY);
  if (::ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &flags) != 0) {
    return base::ErrnoError(errno, absl::StrCat("BTRFS_IOC_SUBVOL_SETFLAGS ", path));
  }
  return absl::OkStatus();
}

// Deletes the subvolumes nested below directory `dir_fd` (whose path is
// `path`), deepest first. Does not follow symlinks or cross mount points.
absl::Status DeleteNested(int dir_fd, const std::string& path, int depth) {
  if (depth > 4096) {
    return absl::FailedPreconditionError(
        absl::StrCat("directory tree too deep below ", path));
  }
  int dup_fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return base::ErrnoError(errno, "dup");
  DIR* dir = ::fdopendir(dup_fd);
  if (dir == nullptr) {
    int err = errno;
    ::close(dup_fd);
    return base::ErrnoError(err, absl::StrCat("fdopendir ", path));
  }
  std::vector<std::string> subdirs;
  errno = 0;
  while (struct dirent* ent = ::readdir(dir)) {
    if (std::strcmp(ent->d_name, ".") == 0 || std::strcmp(ent->d_name, "..") == 0) continue;
    if (ent->d_type == DT_DIR || ent->d_type == DT_UNKNOWN) subdirs.emplace_back(ent->d_name);
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) return base::ErrnoError(err, absl::StrCat("readdir ", path));

  for (const std::string& name : subdirs) {
    struct statx stx;
    if (::statx(dir_fd, name.c_str(), AT_SYMLINK_NOFOLLOW,
                STATX_TYPE | STATX_INO, &stx) != 0) {
      if (errno == ENOENT) continue;
      return base::ErrnoError(errno, absl::StrCat("statx ", path, "/", name));
    }
    if (!S_ISDIR(stx.stx_mode)) continue;
    if (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT &&
        stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot delete subvolume: ", path, "/", name, " is a mount point"));
    }
    base::UniqueFd child(::openat(dir_fd, name.c_str(),
                                  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!child) return base::ErrnoError(errno, absl::StrCat("open ", path, "/", name));
    std::string child_path = absl::StrCat(path, "/", name);
    if (stx.stx_ino == BTRFS_FIRST_FREE_OBJECTID) {
      // Entries cannot be removed from a read-only subvolume.
      RETURN_IF_ERROR(ClearReadOnly(child.get(), child_path));
    }
    RETURN_IF_ERROR(DeleteNested(child.get(), child_path, depth + 1));
    if (stx.stx_ino == BTRFS_FIRST_FREE_OBJECTID) {
      child.reset();
      RETURN_IF_ERROR(DestroyByName(dir_fd, path, name));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckOnBtrfs(const std::string& path) {
  struct statfs st;
  if (::statfs(path.c_str(), &st) != 0) {
    return base::ErrnoError(errno, absl::StrCat("statfs ", path));
  }
  if (static_cast<unsigned long>(st.f_type) == BTRFS_SUPER_MAGIC) return absl::OkStatus();
  const char* name = FsName(static_cast<unsigned long>(st.f_type));
  return absl::FailedPreconditionError(absl::StrCat(
      path, " is on ",
      name ? std::string(name)
           : absl::StrFormat("filesystem magic 0x%x", static_cast<unsigned long>(st.f_type)),
      ", not btrfs"));
}

absl::StatusOr<bool> IsSubvolume(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    return base::ErrnoError(errno, absl::StrCat("stat ", path));
  }
  if (!S_ISDIR(st.st_mode) || st.st_ino != BTRFS_FIRST_FREE_OBJECTID) return false;
  struct statfs sfs;
  if (::statfs(path.c_str(), &sfs) != 0) {
    return base::ErrnoError(errno, absl::StrCat("statfs ", path));
  }
  return static_cast<unsigned long>(sfs.f_type) == BTRFS_SUPER_MAGIC;
}

absl::Status CreateSubvolume(const std::string& dir, absl::string_view name) {
  RETURN_IF_ERROR(CheckName(name, BTRFS_PATH_NAME_MAX));
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDir(dir));
  struct btrfs_ioctl_vol_args args;
  std::memset(&args, 0, sizeof(args));
  std::memcpy(args.name, name.data(), name.size());
  if (::ioctl(fd.get(), BTRFS_IOC_SUBVOL_CREATE, &args) != 0) {
    return base::ErrnoError(errno,
                            absl::StrCat("BTRFS_IOC_SUBVOL_CREATE ", dir, "/", name));
  }
  return absl::OkStatus();
}

absl::Status SnapshotSubvolume(const std::string& source, const std::string& dir,
                               absl::string_view name, bool readonly) {
  RETURN_IF_ERROR(CheckName(name, BTRFS_SUBVOL_NAME_MAX));
  ASSIGN_OR_RETURN(base::UniqueFd src, OpenDir(source));
  ASSIGN_OR_RETURN(base::UniqueFd dst, OpenDir(dir));
  struct btrfs_ioctl_vol_args_v2 args;
  std::memset(&args, 0, sizeof(args));
  args.fd = src.get();
  args.flags = readonly ? BTRFS_SUBVOL_RDONLY : 0;
  std::memcpy(args.name, name.data(), name.size());
  if (::ioctl(dst.get(), BTRFS_IOC_SNAP_CREATE_V2, &args) != 0) {
    return base::ErrnoError(errno, absl::StrCat("BTRFS_IOC_SNAP_CREATE_V2 ", source,
                                                " -> ", dir, "/", name));
  }
  return absl::OkStatus();
}

absl::Status DeleteSubvolume(const std::string& path) {
  ASSIGN_OR_RETURN(bool is_subvol, IsSubvolume(path));
  if (!is_subvol) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is not a btrfs subvolume"));
  }
  auto [parent, name] = SplitPath(path);
  {
    ASSIGN_OR_RETURN(base::UniqueFd self, OpenDir(path));
    // A read-only subvolume cannot have its nested subvolumes removed from
    // it; clear the flag first (root may destroy it either way).
    RETURN_IF_ERROR(ClearReadOnly(self.get(), path));
    RETURN_IF_ERROR(DeleteNested(self.get(), path, 0));
  }
  ASSIGN_OR_RETURN(base::UniqueFd parent_fd, OpenDir(parent));
  return DestroyByName(parent_fd.get(), parent, name);
}

absl::StatusOr<bool> IsReadOnly(const std::string& path) {
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDir(path));
  __u64 flags = 0;
  if (::ioctl(fd.get(), BTRFS_IOC_SUBVOL_GETFLAGS, &flags) != 0) {
    return base::ErrnoError(errno, absl::StrCat("BTRFS_IOC_SUBVOL_GETFLAGS ", path));
  }
  return (flags & BTRFS_SUBVOL_RDONLY) != 0;
}

absl::Status SetReadOnly(const std::string& path, bool readonly) {
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDir(path));
  __u64 flags = 0;
  if (::ioctl(fd.get(), BTRFS_IOC_SUBVOL_GETFLAGS, &flags) != 0) {
    return base::ErrnoError(errno, absl::StrCat("BTRFS_IOC_SUBVOL_GETFLAGS ", path));
  }
  flags = readonly ? (flags | BTRFS_SUBVOL_RDONLY) : (flags & ~BTRFS_SUBVOL_RDONLY);
  if (::ioctl(fd.get(), BTRFS_IOC_SUBVOL_SETFLAGS, &flags) != 0) {
    return base::ErrnoError(errno, absl::StrCat("BTRFS_IOC_SUBVOL_SETFLAGS ", path));
  }
  return absl::OkStatus();
}

}  // namespace base::btrfs

namespace base::btrfs {

absl::StatusOr<uint64_t> SubvolumeId(const std::string& path) {
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDir(path));
  struct btrfs_ioctl_ino_lookup_args args;
  std::memset(&args, 0, sizeof(args));
  args.objectid = BTRFS_FIRST_FREE_OBJECTID;
  if (::ioctl(fd.get(), BTRFS_IOC_INO_LOOKUP, &args) != 0) {
    return base::ErrnoError(errno, absl::StrCat("BTRFS_IOC_INO_LOOKUP ", path));
  }
  return static_cast<uint64_t>(args.treeid);
}

absl::Status EnableQuota(const std::string& path) {
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDir(path));
  struct btrfs_ioctl_quota_ctl_args args;
  std::memset(&args, 0, sizeof(args));
  args.cmd = BTRFS_QUOTA_CTL_ENABLE;
  if (::ioctl(fd.get(), BTRFS_IOC_QUOTA_CTL, &args) != 0 && errno != EEXIST) {
    return base::ErrnoError(errno, absl::StrCat("BTRFS_IOC_QUOTA_CTL enable ", path));
  }
  return absl::OkStatus();
}

absl::Status SetQgroupLimit(const std::string& path, uint64_t max_referenced) {
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDir(path));
  struct btrfs_ioctl_qgroup_limit_args args;
  std::memset(&args, 0, sizeof(args));
  args.qgroupid = 0;  // the subvolume's own qgroup
  args.lim.flags = BTRFS_QGROUP_LIMIT_MAX_RFER;
  args.lim.max_rfer = max_referenced == 0 ? ~0ull : max_referenced;
  if (::ioctl(fd.get(), BTRFS_IOC_QGROUP_LIMIT, &args) != 0) {
    return base::ErrnoError(errno, absl::StrCat("BTRFS_IOC_QGROUP_LIMIT ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<QgroupUsage> GetQgroupUsage(const std::string& path) {
  ASSIGN_OR_RETURN(uint64_t id, SubvolumeId(path));
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDir(path));
  // Qgroup figures are updated at transaction commit.
  if (::ioctl(fd.get(), BTRFS_IOC_SYNC, nullptr) != 0) {
    return base::ErrnoError(errno, absl::StrCat("BTRFS_IOC_SYNC ", path));
  }
  QgroupUsage usage;
  bool found_info = false;
  for (uint32_t type : {static_cast<uint32_t>(BTRFS_QGROUP_INFO_KEY),
                        static_cast<uint32_t>(BTRFS_QGROUP_LIMIT_KEY)}) {
    struct btrfs_ioctl_search_args args;
    std::memset(&args, 0, sizeof(args));
    args.key.tree_id = BTRFS_QUOTA_TREE_OBJECTID;
    args.key.min_objectid = args.key.max_objectid = 0;
    args.key.min_type = args.key.max_type = type;
    args.key.min_offset = args.key.max_offset = id;
    args.key.max_transid = ~0ull;
    args.key.nr_items = 1;
    if (::ioctl(fd.get(), BTRFS_IOC_TREE_SEARCH, &args) != 0) {
      if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("quotas are off on ", path));
      return base::ErrnoError(errno, absl::StrCat("BTRFS_IOC_TREE_SEARCH quota tree ", path));
    }
    if (args.key.nr_items == 0) continue;
    struct btrfs_ioctl_search_header header;
    std::memcpy(&header, args.buf, sizeof(header));
    const char* item = args.buf + sizeof(header);
    if (type == BTRFS_QGROUP_INFO_KEY && header.len >= sizeof(btrfs_qgroup_info_item)) {
      struct btrfs_qgroup_info_item info;
      std::memcpy(&info, item, sizeof(info));
      usage.referenced = le64toh(info.rfer);
      usage.exclusive = le64toh(info.excl);
      found_info = true;
    } else if (type == BTRFS_QGROUP_LIMIT_KEY &&
               header.len >= sizeof(btrfs_qgroup_limit_item)) {
      struct btrfs_qgroup_limit_item lim;
      std::memcpy(&lim, item, sizeof(lim));
      if (le64toh(lim.flags) & BTRFS_QGROUP_LIMIT_MAX_RFER) {
        uint64_t max = le64toh(lim.max_rfer);
        usage.max_referenced = max == ~0ull ? 0 : max;
      }
    }
  }
  if (!found_info) {
    return absl::NotFoundError(absl::StrCat("no qgroup 0/", id, " for ", path));
  }
  return usage;
}

}  // namespace base::btrfs
