#include "tests/support/graph_conformance.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace graph::testing {
namespace {

absl::Status RemoveBelow(int dir_fd, const std::string& path, int depth) {
  if (depth > 10000) return absl::InternalError(absl::StrCat("too deep: ", path));
  int dup_fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return base::ErrnoError(errno, "dup");
  DIR* dir = ::fdopendir(dup_fd);
  if (dir == nullptr) {
    ::close(dup_fd);
    return base::ErrnoError(errno, absl::StrCat("fdopendir ", path));
  }
  std::vector<std::string> names;
  while (struct dirent* ent = ::readdir(dir)) {
    if (std::strcmp(ent->d_name, ".") && std::strcmp(ent->d_name, "..")) {
      names.emplace_back(ent->d_name);
    }
  }
  ::closedir(dir);
  for (const std::string& name : names) {
    struct statx stx;
    if (::statx(dir_fd, name.c_str(), AT_SYMLINK_NOFOLLOW, STATX_TYPE, &stx) != 0) {
      if (errno == ENOENT) continue;
      return base::ErrnoError(errno, absl::StrCat("statx ", path, "/", name));
    }
    std::string child = absl::StrCat(path, "/", name);
    if (S_ISDIR(stx.stx_mode)) {
      if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
          (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
        return absl::FailedPreconditionError(absl::StrCat(child, " is a mount point"));
      }
      base::UniqueFd fd(::openat(dir_fd, name.c_str(),
                                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) return base::ErrnoError(errno, absl::StrCat("open ", child));
      RETURN_IF_ERROR(RemoveBelow(fd.get(), child, depth + 1));
      fd.reset();
      if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
        return base::ErrnoError(errno, absl::StrCat("rmdir ", child));
      }
    } else if (::unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      return base::ErrnoError(errno, absl::StrCat("unlink ", child));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string UniqueName(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return absl::StrCat(prefix, "-", ::getpid(), "-", counter++);
}

bool KernelHasFilesystem(const std::string& fstype) {
  std::ifstream in("/proc/filesystems");
  std::string line;
  while (std::getline(in, line)) {
    auto tab = line.rfind('\t');
    std::string name = tab == std::string::npos ? line : line.substr(tab + 1);
    if (name == fstype) return true;
  }
  return false;
}

absl::Status RunProgram(const std::vector<std::string>& argv, std::string* output) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return base::ErrnoError(errno, "pipe2");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    return base::ErrnoError(err, "fork");
  }
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(pipefd[1], 1);
    ::dup2(pipefd[1], 2);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(pipefd[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (output != nullptr) *output = out;
  if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(
      absl::StrJoin(argv, " "), " failed (",
      WIFEXITED(wstatus) ? absl::StrCat("exit ", WEXITSTATUS(wstatus))
                         : absl::StrCat("signal ", WTERMSIG(wstatus)),
      "): ", out));
}

absl::Status RemoveTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoError(errno, absl::StrCat("stat ", path));
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlink(path.c_str()) != 0) return base::ErrnoError(errno, absl::StrCat("unlink ", path));
    return absl::OkStatus();
  }
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return base::ErrnoError(errno, absl::StrCat("open ", path));
  RETURN_IF_ERROR(RemoveBelow(fd.get(), path, 0));
  fd.reset();
  if (::rmdir(path.c_str()) != 0) return base::ErrnoError(errno, absl::StrCat("rmdir ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ScratchDir>> ScratchDir::Create(const std::string& prefix,
                                                                const std::string& parent) {
  std::string base = parent;
  if (base.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    base = (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
  }
  std::string tmpl = absl::StrCat(base, "/", prefix, "-", ::getpid(), "-XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return base::ErrnoError(errno, absl::StrCat("mkdtemp ", tmpl));
  }
  return std::unique_ptr<ScratchDir>(new ScratchDir(tmpl));
}

ScratchDir::~ScratchDir() {
  absl::Status s = RemoveTree(path_);
  if (!s.ok()) std::fprintf(stderr, "warning: cleanup of %s: %s\n", path_.c_str(),
                            std::string(s.message()).c_str());
}

absl::StatusOr<std::unique_ptr<ScratchBtrfs>> ScratchBtrfs::Create(uint64_t size_mb) {
  if (!KernelHasFilesystem("btrfs")) {
    return absl::FailedPreconditionError("kernel has no btrfs (/proc/filesystems)");
  }
  if (::access("/dev/loop-control", R_OK | W_OK) != 0) {
    return absl::FailedPreconditionError("no /dev/loop-control (loop devices unavailable)");
  }
  std::unique_ptr<ScratchBtrfs> fs(new ScratchBtrfs());
  ASSIGN_OR_RETURN(fs->dir_, ScratchDir::Create("graph-btrfs"));
  fs->image_ = fs->dir_->path() + "/image";
  fs->mountpoint_ = fs->dir_->path() + "/mnt";
  {
    base::UniqueFd img(::open(fs->image_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!img) return base::ErrnoError(errno, "create btrfs image");
    if (::ftruncate(img.get(), static_cast<off_t>(size_mb) << 20) != 0) {
      return base::ErrnoError(errno, "size btrfs image");
    }
  }
  std::string out;
  absl::Status mkfs = RunProgram({"mkfs.btrfs", "-q", "-f", fs->image_}, &out);
  if (!mkfs.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("mkfs.btrfs: ", mkfs.message()));
  }
  if (::mkdir(fs->mountpoint_.c_str(), 0755) != 0) return base::ErrnoError(errno, "mkdir mnt");

  base::UniqueFd backing(::open(fs->image_.c_str(), O_RDWR | O_CLOEXEC));
  if (!backing) return base::ErrnoError(errno, "open btrfs image");
  base::UniqueFd ctl(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!ctl) return base::ErrnoError(errno, "open /dev/loop-control");
  base::UniqueFd loop;
  for (int attempt = 0; attempt < 20 && !loop; ++attempt) {
    int nr = ::ioctl(ctl.get(), LOOP_CTL_GET_FREE);
    if (nr < 0) return base::ErrnoError(errno, "LOOP_CTL_GET_FREE");
    std::string dev = absl::StrCat("/dev/loop", nr);
    base::UniqueFd fd(::open(dev.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd) {
      if (errno == ENOENT) {  // node not yet created without udev
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      return base::ErrnoError(errno, absl::StrCat("open ", dev));
    }
    struct loop_config cfg;
    std::memset(&cfg, 0, sizeof(cfg));
    cfg.fd = static_cast<__u32>(backing.get());
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    std::strncpy(reinterpret_cast<char*>(cfg.info.lo_file_name), fs->image_.c_str(),
                 LO_NAME_SIZE - 1);
    if (::ioctl(fd.get(), LOOP_CONFIGURE, &cfg) != 0) {
      if (errno == EBUSY) continue;  // raced with another user
      return base::ErrnoError(errno, absl::StrCat("LOOP_CONFIGURE ", dev));
    }
    fs->loop_ = dev;
    loop = std::move(fd);
  }
  if (!loop) return absl::UnavailableError("no free loop device");
  if (::mount(fs->loop_.c_str(), fs->mountpoint_.c_str(), "btrfs", 0, nullptr) != 0) {
    return base::ErrnoError(errno, absl::StrCat("mount ", fs->loop_, " (btrfs)"));
  }
  fs->mounted_ = true;
  return fs;  // closing `loop` leaves the mount as the only user: autoclear
}

ScratchBtrfs::~ScratchBtrfs() {
  if (mounted_) {
    if (::umount2(mountpoint_.c_str(), 0) != 0) {
      std::fprintf(stderr, "warning: umount %s: %s; detaching lazily\n",
                   mountpoint_.c_str(), std::strerror(errno));
      ::umount2(mountpoint_.c_str(), MNT_DETACH);
    }
  }
  dir_.reset();
}

}  // namespace graph::testing
