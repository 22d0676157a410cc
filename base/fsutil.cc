#include "base/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace base {
namespace {

// OpenBeneath that also refuses to cross into another mount (tree removal
// and copies stay on one filesystem).
int OpenBeneathOneFs(int dirfd, const std::string& path, int flags) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV |
                RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how));
}

// Lists the names in directory `fd` (without . and ..).
absl::StatusOr<std::vector<std::string>> ListDir(int fd, const std::string& what) {
  int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return base::ErrnoError(errno, absl::StrCat("dup for ", what));
  DIR* dir = ::fdopendir(dup);
  if (dir == nullptr) {
    int err = errno;
    ::close(dup);
    return base::ErrnoError(err, absl::StrCat("opendir ", what));
  }
  ::rewinddir(dir);
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* d = ::readdir(dir)) {
    if (d->d_name[0] == '.' &&
        (d->d_name[1] == 0 || (d->d_name[1] == '.' && d->d_name[2] == 0))) {
      continue;
    }
    names.emplace_back(d->d_name);
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) return base::ErrnoError(err, absl::StrCat("readdir ", what));
  return names;
}

}  // namespace

absl::Status WriteFileAtomic(const std::string& path, absl::string_view data, bool durable, mode_t mode) {
  static std::atomic<uint64_t> counter{0};
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string tmp = absl::StrCat(slash == std::string::npos ? "" : path.substr(0, slash + 1), ".", name,
                                       ".tmp-", ::getpid(), "-", counter++);
  base::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!fd) return base::ErrnoError(errno, absl::StrCat("creating ", tmp));
  absl::Status s;
  for (size_t done = 0; s.ok() && done < data.size();) {
    ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      s = base::ErrnoError(n < 0 ? errno : EIO, absl::StrCat("writing ", tmp));
    } else {
      done += static_cast<size_t>(n);
    }
  }
  if (s.ok() && durable && ::fsync(fd.get()) != 0) s = base::ErrnoError(errno, absl::StrCat("fsync ", tmp));
  fd.reset();
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = base::ErrnoError(errno, absl::StrCat("renaming ", tmp, " to ", path));
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  if (durable) {
    base::UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!d || ::fsync(d.get()) != 0) return base::ErrnoError(errno, absl::StrCat("fsync ", dir));
  }
  return absl::OkStatus();
}

absl::Status RemoveTree(int dirfd, const std::string& name) {
  if (::unlinkat(dirfd, name.c_str(), 0) == 0 || errno == ENOENT) {
    return absl::OkStatus();
  }
  if (errno != EISDIR) {
    return base::ErrnoError(errno, absl::StrCat("unlink ", name));
  }
  // Iterative depth-first removal: one fd open at a time, paths resolved
  // beneath `dirfd` without symlinks or mount crossings.
  std::vector<std::pair<std::string, bool>> stack = {{name, false}};
  while (!stack.empty()) {
    auto& [path, visited] = stack.back();
    if (visited) {
      if (::unlinkat(dirfd, path.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
        return base::ErrnoError(errno, absl::StrCat("rmdir ", path));
      }
      stack.pop_back();
      continue;
    }
    visited = true;
    std::string dir = path;  // `path` may dangle once the stack grows
    base::UniqueFd fd(OpenBeneathOneFs(dirfd, dir, O_RDONLY | O_DIRECTORY));
    if (!fd) {
      if (errno == ENOENT) continue;
      return base::ErrnoError(errno, absl::StrCat("open ", dir, " for removal"));
    }
    ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(fd.get(), dir));
    for (const std::string& child : names) {
      if (::unlinkat(fd.get(), child.c_str(), 0) == 0 || errno == ENOENT) continue;
      if (errno != EISDIR) {
        return base::ErrnoError(errno, absl::StrCat("unlink ", dir, "/", child));
      }
      stack.emplace_back(absl::StrCat(dir, "/", child), false);
    }
  }
  return absl::OkStatus();
}

absl::Status RemoveTree(const std::string& path) {
  std::string parent = ".";
  std::string name = path;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  size_t slash = name.rfind('/');
  if (slash != std::string::npos) {
    parent = slash == 0 ? "/" : name.substr(0, slash);
    name = name.substr(slash + 1);
  }
  if (name.empty() || name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat("refusing to remove \"", path, "\""));
  }
  base::UniqueFd fd(::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoError(errno, absl::StrCat("open ", parent));
  }
  return base::Annotate(RemoveTree(fd.get(), name), absl::StrCat("removing ", path));
}

absl::StatusOr<TreeUsageResult> TreeUsage(const std::string& path) {
  base::UniqueFd root(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root) return base::ErrnoError(errno, absl::StrCat("open ", path));
  struct stat st;
  if (::fstat(root.get(), &st) != 0) return base::ErrnoError(errno, absl::StrCat("stat ", path));
  const dev_t dev = st.st_dev;
  TreeUsageResult usage;
  std::set<std::pair<dev_t, ino_t>> linked;  // inodes with nlink > 1 already counted
  auto count = [&](const struct stat& s) {
    if (!S_ISDIR(s.st_mode) && s.st_nlink > 1 && !linked.emplace(s.st_dev, s.st_ino).second) return;
    usage.bytes += static_cast<int64_t>(s.st_blocks) * 512;
    usage.inodes++;
  };
  count(st);
  std::vector<std::string> dirs = {""};
  while (!dirs.empty()) {
    std::string rel = std::move(dirs.back());
    dirs.pop_back();
    base::UniqueFd fd(rel.empty() ? ::fcntl(root.get(), F_DUPFD_CLOEXEC, 0)
                                  : OpenBeneathOneFs(root.get(), rel, O_RDONLY | O_DIRECTORY));
    if (!fd) {
      if (errno == ENOENT || errno == EXDEV) continue;  // removed meanwhile; a mount
      return base::ErrnoError(errno, absl::StrCat("open ", path, "/", rel));
    }
    ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(fd.get(), absl::StrCat(path, "/", rel)));
    for (const std::string& name : names) {
      struct stat cs;
      if (::fstatat(fd.get(), name.c_str(), &cs, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;
        return base::ErrnoError(errno, absl::StrCat("stat ", path, "/", rel, "/", name));
      }
      if (cs.st_dev != dev) continue;
      count(cs);
      if (S_ISDIR(cs.st_mode)) dirs.push_back(rel.empty() ? name : absl::StrCat(rel, "/", name));
    }
  }
  return usage;
}

absl::StatusOr<std::string> BackingFsName(const std::string& path) {
  struct statfs sf;
  if (::statfs(path.c_str(), &sf) != 0) return base::ErrnoError(errno, absl::StrCat("statfs ", path));
  switch (static_cast<unsigned long>(sf.f_type)) {
    case 0xEF53: return std::string("extfs");
    case 0x58465342: return std::string("xfs");
    case 0x9123683E: return std::string("btrfs");
    case 0x01021994: return std::string("tmpfs");
    case 0x794C7630: return std::string("overlayfs");
    case 0x2FC12FC1: return std::string("zfs");
    case 0x6969: return std::string("nfs");
    case 0x01021997: return std::string("v9fs");
    case 0xF2F52010: return std::string("f2fs");
    case 0x61756673: return std::string("aufs");
    case 0x65735546: return std::string("fuse");
    default: return absl::StrCat("0x", absl::Hex(static_cast<unsigned long>(sf.f_type)));
  }
}

absl::StatusOr<bool> IsMountPoint(const std::string& path) {
  struct statx stx = {};
  if (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_BASIC_STATS, &stx) != 0) {
    return base::ErrnoError(errno, absl::StrCat("statx ", path));
  }
  if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) == 0) {
    return absl::UnimplementedError("statx does not report STATX_ATTR_MOUNT_ROOT on this kernel");
  }
  return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
}

namespace {

class TreeCopier {
 public:
  absl::Status CopyDir(int sdir, int ddir, const std::string& rel);
  CopyStats stats;

 private:
  absl::Status CopyXattrs(int sfd, int dfd, const std::string& sproc, const std::string& dproc);
  absl::Status CopyData(int sfd, int dfd, const struct stat& st);
  std::map<std::pair<dev_t, ino_t>, std::string> links_;  // src inode -> dst rel path
  bool clone_ok_ = true;
  bool cfr_ok_ = true;
  std::vector<char> buf_;

 public:
  int droot_ = -1;
  absl::Status CopyRootXattrs(int s, int d) { return CopyXattrs(s, d, "", ""); }
};

absl::Status TreeCopier::CopyXattrs(int sfd, int dfd, const std::string& sproc, const std::string& dproc) {
  char names[16384];
  ssize_t n = sfd >= 0 ? ::flistxattr(sfd, names, sizeof names) : ::llistxattr(sproc.c_str(), names, sizeof names);
  if (n < 0) {
    if (errno == ENOTSUP) return absl::OkStatus();
    return base::ErrnoError(errno, "listxattr");
  }
  std::vector<char> value(65536);
  for (ssize_t pos = 0; pos < n;) {
    const char* key = names + pos;
    pos += static_cast<ssize_t>(std::strlen(key)) + 1;
    ssize_t v = sfd >= 0 ? ::fgetxattr(sfd, key, value.data(), value.size())
                         : ::lgetxattr(sproc.c_str(), key, value.data(), value.size());
    if (v < 0) {
      if (errno == ENODATA) continue;
      return base::ErrnoError(errno, absl::StrCat("getxattr ", key));
    }
    int r = dfd >= 0 ? ::fsetxattr(dfd, key, value.data(), static_cast<size_t>(v), 0)
                     : ::lsetxattr(dproc.c_str(), key, value.data(), static_cast<size_t>(v), 0);
    if (r != 0) return base::ErrnoError(errno, absl::StrCat("setxattr ", key));
  }
  return absl::OkStatus();
}

absl::Status TreeCopier::CopyData(int sfd, int dfd, const struct stat& st) {
  if (st.st_size == 0) return absl::OkStatus();
  if (clone_ok_) {
    if (::ioctl(dfd, FICLONE, sfd) == 0) {
      ++stats.reflinked;
      stats.bytes += static_cast<uint64_t>(st.st_size);
      return absl::OkStatus();
    }
    if (errno != EOPNOTSUPP && errno != EXDEV && errno != EINVAL && errno != ENOTTY) {
      return base::ErrnoError(errno, "FICLONE");
    }
    clone_ok_ = false;  // this filesystem cannot: stop asking
  }
  off_t end = st.st_size;
  off_t pos = 0;
  while (pos < end) {
    off_t data = ::lseek(sfd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      return base::ErrnoError(errno, "SEEK_DATA");
    }
    off_t hole = ::lseek(sfd, data, SEEK_HOLE);
    if (hole < 0) return base::ErrnoError(errno, "SEEK_HOLE");
    loff_t in = data, out = data;
    while (in < hole) {
      ssize_t n = -1;
      if (cfr_ok_) {
        n = ::copy_file_range(sfd, &in, dfd, &out, static_cast<size_t>(hole - in), 0);
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno != EXDEV && errno != EINVAL && errno != EOPNOTSUPP && errno != ENOSYS) {
            return base::ErrnoError(errno, "copy_file_range");
          }
          cfr_ok_ = false;  // across filesystems (or unsupported): copy by hand
        }
      }
      if (!cfr_ok_) {
        if (buf_.empty()) buf_.resize(1 << 20);
        n = ::pread(sfd, buf_.data(), std::min<size_t>(buf_.size(), static_cast<size_t>(hole - in)), in);
        if (n < 0) {
          if (errno == EINTR) continue;
          return base::ErrnoError(errno, "read");
        }
        for (ssize_t done = 0; done < n;) {
          ssize_t w = ::pwrite(dfd, buf_.data() + done, static_cast<size_t>(n - done), out + done);
          if (w < 0) {
            if (errno == EINTR) continue;
            return base::ErrnoError(errno, "write");
          }
          done += w;
        }
        in += n;
        out += n;
      }
      if (n == 0) break;
      stats.bytes += static_cast<uint64_t>(n);
    }
    pos = hole;
  }
  if (::ftruncate(dfd, end) != 0) return base::ErrnoError(errno, "ftruncate");
  return absl::OkStatus();
}

absl::Status TreeCopier::CopyDir(int sdir, int ddir, const std::string& rel) {
  ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(sdir, rel.empty() ? "." : rel));
  for (const std::string& name : names) {
    std::string path = rel.empty() ? name : absl::StrCat(rel, "/", name);
    struct stat st;
    if (::fstatat(sdir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return base::ErrnoError(errno, absl::StrCat("stat ", path));
    }
    const char* n = name.c_str();
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    if (S_ISDIR(st.st_mode)) {
      if (::mkdirat(ddir, n, 0700) != 0) return base::ErrnoError(errno, absl::StrCat("mkdir ", path));
      base::UniqueFd s(::openat(sdir, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      base::UniqueFd d(::openat(ddir, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!s || !d) return base::ErrnoError(errno, absl::StrCat("opening directory ", path));
      RETURN_IF_ERROR(CopyDir(s.get(), d.get(), path));
      if (::fchown(d.get(), st.st_uid, st.st_gid) != 0 && errno != EPERM) {
        return base::ErrnoError(errno, absl::StrCat("chown ", path));
      }
      if (::fchmod(d.get(), st.st_mode & 07777) != 0) return base::ErrnoError(errno, absl::StrCat("chmod ", path));
      RETURN_IF_ERROR(CopyXattrs(s.get(), d.get(), "", ""));
      if (::futimens(d.get(), times) != 0) return base::ErrnoError(errno, absl::StrCat("utimens ", path));
      continue;
    }
    if (S_ISREG(st.st_mode)) {
      ++stats.files;
      if (st.st_nlink > 1) {
        auto key = std::make_pair(st.st_dev, st.st_ino);
        auto it = links_.find(key);
        if (it != links_.end()) {
          if (::linkat(droot_, it->second.c_str(), ddir, n, 0) != 0) {
            return base::ErrnoError(errno, absl::StrCat("link ", path));
          }
          continue;
        }
        links_.emplace(key, path);
      }
      base::UniqueFd s(::openat(sdir, n, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!s) return base::ErrnoError(errno, absl::StrCat("open ", path));
      base::UniqueFd d(::openat(ddir, n, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!d) return base::ErrnoError(errno, absl::StrCat("create ", path));
      RETURN_IF_ERROR(base::Annotate(CopyData(s.get(), d.get(), st), path));
      if (::fchown(d.get(), st.st_uid, st.st_gid) != 0 && errno != EPERM) {
        return base::ErrnoError(errno, absl::StrCat("chown ", path));
      }
      if (::fchmod(d.get(), st.st_mode & 07777) != 0) return base::ErrnoError(errno, absl::StrCat("chmod ", path));
      RETURN_IF_ERROR(base::Annotate(CopyXattrs(s.get(), d.get(), "", ""), path));
      if (::futimens(d.get(), times) != 0) return base::ErrnoError(errno, absl::StrCat("utimens ", path));
      continue;
    }
    if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t len = ::readlinkat(sdir, n, target.data(), target.size());
      if (len < 0) return base::ErrnoError(errno, absl::StrCat("readlink ", path));
      target.resize(static_cast<size_t>(len));
      if (::symlinkat(target.c_str(), ddir, n) != 0) return base::ErrnoError(errno, absl::StrCat("symlink ", path));
    } else {
      if (::mknodat(ddir, n, st.st_mode, st.st_rdev) != 0) return base::ErrnoError(errno, absl::StrCat("mknod ", path));
    }
    if (::fchownat(ddir, n, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0 && errno != EPERM) {
      return base::ErrnoError(errno, absl::StrCat("chown ", path));
    }
    if (!S_ISLNK(st.st_mode) && ::fchmodat(ddir, n, st.st_mode & 07777, 0) != 0) {
      return base::ErrnoError(errno, absl::StrCat("chmod ", path));
    }
    std::string sproc = absl::StrCat("/proc/self/fd/", sdir, "/", name);
    std::string dproc = absl::StrCat("/proc/self/fd/", ddir, "/", name);
    RETURN_IF_ERROR(base::Annotate(CopyXattrs(-1, -1, sproc, dproc), path));
    if (::utimensat(ddir, n, times, AT_SYMLINK_NOFOLLOW) != 0) {
      return base::ErrnoError(errno, absl::StrCat("utimens ", path));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CopyStats> CopyTree(const std::string& src, const std::string& dst) {
  if (::mkdir(dst.c_str(), 0700) != 0) return base::ErrnoError(errno, absl::StrCat("mkdir ", dst));
  return CopyTreeInto(src, dst);
}

absl::StatusOr<CopyStats> CopyTreeInto(const std::string& src, const std::string& dst) {
  base::UniqueFd s(::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!s) return base::ErrnoError(errno, absl::StrCat("opening ", src));
  struct stat st;
  if (::fstat(s.get(), &st) != 0) return base::ErrnoError(errno, absl::StrCat("stat ", src));
  base::UniqueFd d(::open(dst.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!d) return base::ErrnoError(errno, absl::StrCat("opening ", dst));
  TreeCopier c;
  c.droot_ = d.get();
  RETURN_IF_ERROR(base::Annotate(c.CopyDir(s.get(), d.get(), ""), absl::StrCat("copying ", src, " to ", dst)));
  if (::fchown(d.get(), st.st_uid, st.st_gid) != 0 && errno != EPERM) return base::ErrnoError(errno, "chown");
  if (::fchmod(d.get(), st.st_mode & 07777) != 0) return base::ErrnoError(errno, "chmod");
  RETURN_IF_ERROR(c.CopyRootXattrs(s.get(), d.get()));
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (::futimens(d.get(), times) != 0) return base::ErrnoError(errno, "utimens");
  return c.stats;
}

int OpenBeneath(int dirfd, const std::string& path, int flags) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(
      syscall(SYS_openat2, dirfd, path.empty() ? "." : path.c_str(), &how, sizeof how));
}

absl::StatusOr<std::vector<DirEntry>> ListDirBeneath(int root, const std::string& rel) {
  base::UniqueFd fd(OpenBeneath(root, rel, O_RDONLY | O_DIRECTORY));
  if (!fd) return base::ErrnoError(errno, absl::StrCat("opening directory \"", rel, "\""));
  DIR* d = ::fdopendir(fd.get());
  if (d == nullptr) return base::ErrnoError(errno, "fdopendir");
  (void)fd.release();  // owned by `d` now
  std::vector<DirEntry> out;
  while (struct dirent* ent = ::readdir(d)) {
    std::string n = ent->d_name;
    if (n == "." || n == "..") continue;
    DirEntry e{n, {}};
    if (::fstatat(::dirfd(d), n.c_str(), &e.st, AT_SYMLINK_NOFOLLOW) != 0) {
      int err = errno;
      ::closedir(d);
      return base::ErrnoError(err, absl::StrCat("stat \"", rel, "/", n, "\""));
    }
    out.push_back(std::move(e));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(),
            [](const DirEntry& x, const DirEntry& y) { return x.name < y.name; });
  return out;
}

void SetNoCow(int fd) {
  int flags = 0;
  if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && (flags & FS_NOCOW_FL) == 0) {
    flags |= FS_NOCOW_FL;
    (void)::ioctl(fd, FS_IOC_SETFLAGS, &flags);
  }
}

}  // namespace base
