#include "graph/drivers/mountref.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/fsutil.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace graph {
namespace {

// A count file's size: one filesystem block.
constexpr off_t kCountFileSize = 4096;

// An open, exclusively locked count file.
struct Locked {
  base::UniqueFd fd;
  int count = 0;
};

absl::StatusOr<Locked> Lock(const std::string& dir, const std::string& id, bool create) {
  if (create && ::mkdir(dir.c_str(), 0700) == 0) {
    // Counts are rewritten by every mount and umount: in place (no new
    // space) on btrfs, so umount works on a full filesystem.
    base::UniqueFd made(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (made) base::SetNoCow(made.get());
  } else if (create && errno != EEXIST) {
    return base::ErrnoError(errno, absl::StrCat("creating ", dir));
  }
  std::string path = absl::StrCat(dir, "/", id);
  Locked l;
  l.fd.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0600));
  if (!l.fd) return base::ErrnoError(errno, absl::StrCat("opening ", path));
  while (::flock(l.fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return base::ErrnoError(errno, absl::StrCat("locking ", path));
  }
  if (create) {
    // One whole block of zeros after the count: btrfs keeps a file smaller
    // than a block inline in its metadata, which it rewrites only with new
    // space, while a block of a no-copy-on-write file is rewritten in place
    // (a full filesystem still takes the next mount or umount). Best effort:
    // without space the count still works where the filesystem allows.
    struct stat st;
    if (::fstat(l.fd.get(), &st) == 0 && st.st_size < kCountFileSize) {
      std::string zeros(static_cast<size_t>(kCountFileSize - st.st_size), '\0');
      (void)!::pwrite(l.fd.get(), zeros.data(), zeros.size(), st.st_size);
    }
  }
  char buf[32] = {};
  ssize_t n = ::pread(l.fd.get(), buf, sizeof buf - 1, 0);
  if (n < 0) return base::ErrnoError(errno, absl::StrCat("reading ", path));
  l.count = n > 0 ? std::atoi(buf) : 0;
  if (l.count < 0) l.count = 0;
  return l;
}

absl::Status Store(Locked& l, int count) {
  // Fixed width, overwritten in place: truncating first would make ext4
  // flush the file on close (its replace-via-truncate heuristic), ~4 ms.
  char text[16];
  int n = std::snprintf(text, sizeof text, "%010d\n", count);
  if (::pwrite(l.fd.get(), text, static_cast<size_t>(n), 0) != n) {
    return base::ErrnoError(errno, "writing mount reference count");
  }
  l.count = count;
  return absl::OkStatus();
}

}  // namespace

absl::Status MountRefs::Acquire(const std::string& id, const std::function<bool()>& is_mounted,
                                const std::function<absl::Status()>& mount) {
  ASSIGN_OR_RETURN(Locked l, Lock(dir_, id, true));
  int count = l.count;
  if (count > 0 && !is_mounted()) count = 0;  // stale: a crash or a reboot
  if (count == 0) RETURN_IF_ERROR(mount());
  return Store(l, count + 1);
}

absl::Status MountRefs::Release(const std::string& id, const std::function<absl::Status()>& unmount) {
  absl::StatusOr<Locked> l = Lock(dir_, id, false);
  if (!l.ok()) {
    if (base::HasErrno(l.status(), ENOENT)) {
      return absl::FailedPreconditionError(absl::StrCat("layer ", id, " is not mounted (an umount without its mount)"));
    }
    return l.status();
  }
  if (l->count <= 0) {
    return absl::FailedPreconditionError(absl::StrCat("layer ", id, " is not mounted (an umount without its mount)"));
  }
  if (l->count == 1) RETURN_IF_ERROR(unmount());
  return Store(*l, l->count - 1);
}

absl::Status MountRefs::Reset(const std::string& id, const std::function<absl::Status()>& unmount) {
  absl::StatusOr<Locked> l = Lock(dir_, id, false);
  if (!l.ok()) {
    if (base::HasErrno(l.status(), ENOENT)) return absl::OkStatus();
    return l.status();
  }
  if (l->count > 0) {
    RETURN_IF_ERROR(unmount());
    RETURN_IF_ERROR(Store(*l, 0));  // for a holder waiting on the lock; a zero needs no write
  }
  std::string path = absl::StrCat(dir_, "/", id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return base::ErrnoError(errno, absl::StrCat("removing ", path));
  }
  return absl::OkStatus();
}

absl::Status MountRefs::WithLock(const std::string& id, const std::function<bool()>& is_mounted,
                                 const std::function<absl::Status(int live)>& fn) {
  absl::StatusOr<Locked> l = Lock(dir_, id, false);
  if (!l.ok()) {
    if (base::HasErrno(l.status(), ENOENT)) return fn(0);
    return l.status();
  }
  int live = l->count;
  if (live > 0 && !is_mounted()) live = 0;
  return fn(live);
}

absl::Status MountRefs::Prepare(const std::string& id) {
  ASSIGN_OR_RETURN(Locked l, Lock(dir_, id, true));
  return absl::OkStatus();
}

absl::StatusOr<int> MountRefs::Count(const std::string& id) const {
  std::string path = absl::StrCat(dir_, "/", id);
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return 0;
    return base::ErrnoError(errno, absl::StrCat("opening ", path));
  }
  char buf[32] = {};
  ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
  if (n < 0) return base::ErrnoError(errno, absl::StrCat("reading ", path));
  return n > 0 ? std::atoi(buf) : 0;
}

absl::StatusOr<int> MountRefs::Live(const std::string& id, const std::function<bool()>& is_mounted) const {
  ASSIGN_OR_RETURN(int n, Count(id));
  if (n > 0 && !is_mounted()) return 0;
  return n < 0 ? 0 : n;
}

}  // namespace graph
