#include "volume/project_quota.h"

#include <fcntl.h>
#include <linux/dqblk_xfs.h>
#include <linux/fs.h>
#include <linux/quota.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace volume {
namespace {

absl::StatusOr<base::UniqueFd> OpenDir(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return base::ErrnoError(errno, absl::StrCat("open ", path));
  return fd;
}

// quotactl_fd(2) (Linux 5.14): quotactl on the filesystem of an open file,
// no block device path needed.
int QuotactlFd(int fd, int cmd, int type, uint32_t id, void* addr) {
  return static_cast<int>(::syscall(SYS_quotactl_fd, fd, QCMD(cmd, type), id, addr));
}

}  // namespace

absl::Status CheckProjectQuota(const std::string& dir) {
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDir(dir));
  fs_quota_stat st;
  std::memset(&st, 0, sizeof(st));
  if (QuotactlFd(fd.get(), Q_XGETQSTAT, PRJQUOTA, 0, &st) != 0) {
    int err = errno;
    return base::ErrnoError(err, absl::StrCat(
        "no project quota at ", dir,
        err == ENOSYS ? " (the kernel or the filesystem has no quota support)"
                      : " (the filesystem has no project quota)"));
  }
  if (!(st.qs_flags & FS_QUOTA_PDQ_ENFD)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "project quota is not enforced at ", dir, " (mount it with prjquota)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> GetProjectId(const std::string& dir) {
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDir(dir));
  fsxattr fa;
  std::memset(&fa, 0, sizeof(fa));
  if (::ioctl(fd.get(), FS_IOC_FSGETXATTR, &fa) != 0) {
    return base::ErrnoError(errno, absl::StrCat("FS_IOC_FSGETXATTR on ", dir));
  }
  return fa.fsx_projid;
}

absl::Status SetProjectId(const std::string& dir, uint32_t id) {
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDir(dir));
  fsxattr fa;
  std::memset(&fa, 0, sizeof(fa));
  if (::ioctl(fd.get(), FS_IOC_FSGETXATTR, &fa) != 0) {
    return base::ErrnoError(errno, absl::StrCat("FS_IOC_FSGETXATTR on ", dir));
  }
  fa.fsx_projid = id;
  fa.fsx_xflags |= FS_XFLAG_PROJINHERIT;
  if (::ioctl(fd.get(), FS_IOC_FSSETXATTR, &fa) != 0) {
    return base::ErrnoError(errno, absl::StrCat("setting project id ", id, " on ", dir));
  }
  return absl::OkStatus();
}

absl::Status SetProjectLimit(const std::string& path, uint32_t id, uint64_t bytes) {
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDir(path));
  if_dqblk q;
  std::memset(&q, 0, sizeof(q));
  // Limits are in 1 KiB quota blocks; round up so the promise is kept.
  q.dqb_bhardlimit = (bytes + QIF_DQBLKSIZE - 1) / QIF_DQBLKSIZE;
  q.dqb_bsoftlimit = 0;
  q.dqb_valid = QIF_BLIMITS;
  if (QuotactlFd(fd.get(), Q_SETQUOTA, PRJQUOTA, id, &q) != 0) {
    return base::ErrnoError(errno, absl::StrCat("setting the limit of project ", id, " to ",
                                                bytes, " bytes at ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ProjectUsage(const std::string& path, uint32_t id) {
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDir(path));
  if_dqblk q;
  std::memset(&q, 0, sizeof(q));
  if (QuotactlFd(fd.get(), Q_GETQUOTA, PRJQUOTA, id, &q) != 0) {
    return base::ErrnoError(errno, absl::StrCat("reading the usage of project ", id, " at ", path));
  }
  return q.dqb_curspace;
}

}  // namespace volume
