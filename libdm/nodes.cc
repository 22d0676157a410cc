#include "nodes.h"

#include <dirent.h>
#include <fcntl.h>
#include <libudev.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/status.h"

namespace dm::internal {
namespace {

bool UdevdProcessAlive() {
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return false;
  bool found = false;
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream comm(absl::StrCat("/proc/", e->d_name, "/comm"));
    std::string name;
    if (std::getline(comm, name) && (name == "systemd-udevd" || name == "udevd")) {
      found = true;
      break;
    }
  }
  ::closedir(d);
  return found;
}

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace

bool UdevRunning() {
  struct stat st;
  if (::stat("/run/udev/control", &st) != 0) return false;
  return UdevdProcessAlive();
}

bool NodeIs(const std::string& path, DevNum dev) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return false;
  return S_ISBLK(st.st_mode) && st.st_rdev == dev.ToDevT();
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

absl::Status MakeNode(const std::string& path, DevNum dev) {
  if (NodeIs(path, dev)) return absl::OkStatus();
  std::string dir = DirOf(path);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    return base::ErrnoError(errno, absl::StrCat("mkdir ", dir));
  static std::atomic<unsigned> counter{0};
  std::string tmp = absl::StrCat(dir, "/.dmthin-node-", ::getpid(), "-", counter++);
  mode_t old = ::umask(0);
  int r = ::mknod(tmp.c_str(), S_IFBLK | 0600, dev.ToDevT());
  int err = errno;
  ::umask(old);
  if (r != 0) return base::ErrnoError(err, absl::StrCat("mknod ", tmp, " ", dev.ToString()));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    return base::ErrnoError(err, absl::StrCat("rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

absl::Status RemoveNode(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoError(errno, absl::StrCat("lstat ", path));
  }
  if (!S_ISBLK(st.st_mode) && !S_ISLNK(st.st_mode))
    return absl::FailedPreconditionError(
        absl::StrCat("refusing to remove ", path, ": not a block device node or symlink"));
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return base::ErrnoError(errno, absl::StrCat("unlink ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<UdevWaiter>> UdevWaiter::Start() {
  std::unique_ptr<UdevWaiter> w(new UdevWaiter());
  w->udev_ = udev_new();
  if (w->udev_ == nullptr) return base::ErrnoError(errno ? errno : ENOMEM, "udev_new");
  w->monitor_ = udev_monitor_new_from_netlink(w->udev_, "udev");
  if (w->monitor_ == nullptr)
    return base::ErrnoError(errno ? errno : EIO, "udev_monitor_new_from_netlink(udev)");
  int r = udev_monitor_filter_add_match_subsystem_devtype(w->monitor_, "block", nullptr);
  if (r < 0) return base::ErrnoError(-r, "udev_monitor_filter_add_match_subsystem_devtype");
  r = udev_monitor_enable_receiving(w->monitor_);
  if (r < 0) return base::ErrnoError(-r, "udev_monitor_enable_receiving");
  return w;
}

UdevWaiter::~UdevWaiter() {
  if (monitor_) udev_monitor_unref(monitor_);
  if (udev_) udev_unref(udev_);
}

absl::StatusOr<bool> UdevWaiter::Wait(absl::FunctionRef<bool()> done, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  int fd = udev_monitor_get_fd(monitor_);
  for (;;) {
    if (done()) return true;
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    struct pollfd p = {fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoError(errno, "poll udev monitor");
    }
    // Drain whatever arrived; the condition is rechecked either way.
    while (n > 0) {
      struct udev_device* d = udev_monitor_receive_device(monitor_);
      if (d == nullptr) break;
      udev_device_unref(d);
      struct pollfd again = {fd, POLLIN, 0};
      n = ::poll(&again, 1, 0);
    }
  }
}

}  // namespace dm::internal
