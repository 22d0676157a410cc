#include "thinpool/loop_device.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/status.h"

namespace thinpool {
namespace {

constexpr int kMaxAttachAttempts = 64;

std::string DevicePath(int number) { return absl::StrCat("/dev/loop", number); }

std::string SysfsDir(int number) {
  return absl::StrCat("/sys/block/loop", number);
}

// Reads a small sysfs attribute, without the trailing newline.
std::optional<std::string> ReadSysfs(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string value((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  while (!value.empty() && (value.back() == '\n' || value.back() == ' ')) {
    value.pop_back();
  }
  return value;
}

// The kernel reports lo_device with its "huge" encoding; decode to dev_t.
dev_t DecodeKernelDev(uint64_t dev) {
  unsigned major_num = (dev & 0xfff00) >> 8;
  unsigned minor_num = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  return makedev(major_num, minor_num);
}

void SleepJitter(int attempt) {
  thread_local std::minstd_rand rng(std::random_device{}());
  int max_ms = std::min(2 + attempt * 2, 50);
  std::this_thread::sleep_for(
      std::chrono::milliseconds(1 + rng() % static_cast<unsigned>(max_ms)));
}

// Opens /dev/loopN, creating the node from sysfs if devtmpfs lacks it (as in
// minimal containers).
absl::StatusOr<base::UniqueFd> OpenLoopNode(int number, int flags) {
  std::string path = DevicePath(number);
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    auto dev = ReadSysfs(SysfsDir(number) + "/dev");
    unsigned maj = 0, min = 0;
    if (dev && std::sscanf(dev->c_str(), "%u:%u", &maj, &min) == 2) {
      if (::mknod(path.c_str(), S_IFBLK | 0660, makedev(maj, min)) < 0 &&
          errno != EEXIST) {
        return base::ErrnoError(errno, absl::StrCat("creating node ", path));
      }
      fd = ::open(path.c_str(), flags | O_CLOEXEC);
    } else {
      errno = ENOENT;
    }
  }
  if (fd < 0) return base::ErrnoError(errno, absl::StrCat("opening ", path));
  return base::UniqueFd(fd);
}

absl::StatusOr<loop_info64> GetStatus(int fd, const std::string& path) {
  loop_info64 info{};
  if (::ioctl(fd, LOOP_GET_STATUS64, &info) < 0) {
    return base::ErrnoError(errno, absl::StrCat("LOOP_GET_STATUS64 on ", path));
  }
  return info;
}

LoopInfo ToLoopInfo(int number, const loop_info64& raw) {
  LoopInfo info;
  info.number = number;
  info.device = DevicePath(number);
  info.backing_file =
      ReadSysfs(SysfsDir(number) + "/loop/backing_file")
          .value_or(std::string(reinterpret_cast<const char*>(raw.lo_file_name),
                                strnlen(reinterpret_cast<const char*>(
                                            raw.lo_file_name),
                                        LO_NAME_SIZE)));
  info.backing_dev = DecodeKernelDev(raw.lo_device);
  info.backing_inode = raw.lo_inode;
  info.offset = raw.lo_offset;
  info.size_limit = raw.lo_sizelimit;
  info.read_only = raw.lo_flags & LO_FLAGS_READ_ONLY;
  info.autoclear = raw.lo_flags & LO_FLAGS_AUTOCLEAR;
  info.direct_io = raw.lo_flags & LO_FLAGS_DIRECT_IO;
  return info;
}

// Numbers of all loop devices known to sysfs.
std::vector<int> LoopNumbers() {
  std::vector<int> numbers;
  DIR* dir = ::opendir("/sys/block");
  if (dir == nullptr) return numbers;
  while (dirent* entry = ::readdir(dir)) {
    absl::string_view name(entry->d_name);
    if (!absl::ConsumePrefix(&name, "loop")) continue;
    int n = 0;
    if (absl::SimpleAtoi(name, &n) && n >= 0) numbers.push_back(n);
  }
  ::closedir(dir);
  std::sort(numbers.begin(), numbers.end());
  return numbers;
}

// Binds `backing_fd` to the open, locked loop device `loop_fd`. EBUSY means
// someone else bound it first.
absl::Status Configure(int loop_fd, const std::string& loop_path,
                       int backing_fd, const std::string& backing_file,
                       const LoopOptions& options, bool direct_io) {
  uint32_t flags = 0;
  if (options.read_only) flags |= LO_FLAGS_READ_ONLY;
  if (options.autoclear) flags |= LO_FLAGS_AUTOCLEAR;
  if (direct_io) flags |= LO_FLAGS_DIRECT_IO;

  if (!options.force_legacy_setup) {
    loop_config config{};
    config.fd = static_cast<uint32_t>(backing_fd);
    config.block_size = options.block_size;
    config.info.lo_flags = flags;
    std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name),
                 backing_file.c_str(), LO_NAME_SIZE - 1);
    if (::ioctl(loop_fd, LOOP_CONFIGURE, &config) == 0) return absl::OkStatus();
    if (errno != ENOTTY && errno != EINVAL) {
      return base::ErrnoError(
          errno, absl::StrCat("LOOP_CONFIGURE ", loop_path, " with ",
                              backing_file));
    }
    if (direct_io) {
      // EINVAL may be the direct I/O request; let the caller retry without.
      return base::ErrnoError(
          errno, absl::StrCat("LOOP_CONFIGURE ", loop_path, " with ",
                              backing_file, " (direct I/O)"));
    }
    // ENOTTY/EINVAL without direct I/O: a kernel older than 5.8. Fall back.
  }

  if (::ioctl(loop_fd, LOOP_SET_FD, backing_fd) < 0) {
    return base::ErrnoError(
        errno, absl::StrCat("LOOP_SET_FD ", loop_path, " with ", backing_file));
  }
  auto undo = [&](absl::Status status) {
    ::ioctl(loop_fd, LOOP_CLR_FD, 0);
    return status;
  };
  loop_info64 info{};
  info.lo_flags = options.autoclear ? LO_FLAGS_AUTOCLEAR : 0;
  std::strncpy(reinterpret_cast<char*>(info.lo_file_name),
               backing_file.c_str(), LO_NAME_SIZE - 1);
  // LOOP_SET_STATUS64 can fail with EAGAIN while page cache is being flushed.
  for (int attempt = 0;; ++attempt) {
    if (::ioctl(loop_fd, LOOP_SET_STATUS64, &info) == 0) break;
    if (errno == EAGAIN && attempt < 20) {
      SleepJitter(attempt);
      continue;
    }
    return undo(base::ErrnoError(
        errno, absl::StrCat("LOOP_SET_STATUS64 on ", loop_path)));
  }
  if (options.block_size != 0 &&
      ::ioctl(loop_fd, LOOP_SET_BLOCK_SIZE, options.block_size) < 0) {
    return undo(base::ErrnoError(
        errno, absl::StrCat("LOOP_SET_BLOCK_SIZE ", options.block_size, " on ",
                            loop_path)));
  }
  if (direct_io) {
    // Best effort: the backing filesystem may not allow it.
    (void)::ioctl(loop_fd, LOOP_SET_DIRECT_IO, 1UL);
  }
  return absl::OkStatus();
}

}  // namespace

LoopDevice::LoopDevice(base::UniqueFd fd, int number, dev_t devnum, bool owned)
    : fd_(std::move(fd)),
      number_(number),
      path_(DevicePath(number)),
      devnum_(devnum),
      owned_(owned) {}

LoopDevice& LoopDevice::operator=(LoopDevice&& other) noexcept {
  if (this != &other) {
    if (owned_ && fd_.valid()) (void)Detach();
    fd_ = std::move(other.fd_);
    number_ = other.number_;
    path_ = std::move(other.path_);
    devnum_ = other.devnum_;
    owned_ = std::exchange(other.owned_, false);
  }
  return *this;
}

LoopDevice::~LoopDevice() {
  if (owned_ && fd_.valid()) (void)Detach();
}

absl::StatusOr<LoopDevice> LoopDevice::Attach(const std::string& backing_file,
                                              const LoopOptions& options) {
  if (backing_file.empty()) {
    return absl::InvalidArgumentError("loop attach: empty backing file path");
  }
  int open_flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  bool direct_io = options.direct_io;
  int fd = -1;
  if (direct_io) {
    fd = ::open(backing_file.c_str(), open_flags | O_DIRECT);
    if (fd < 0 && errno == EINVAL) direct_io = false;  // e.g. tmpfs
  }
  if (fd < 0) fd = ::open(backing_file.c_str(), open_flags);
  if (fd < 0) {
    return base::ErrnoError(
        errno, absl::StrCat("opening loop backing file ", backing_file));
  }
  base::UniqueFd backing(fd);
  struct stat st;
  if (::fstat(backing.get(), &st) < 0) {
    return base::ErrnoError(errno, absl::StrCat("stat ", backing_file));
  }
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "loop attach: ", backing_file, " is not a regular file or block device"));
  }

  int control_fd = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (control_fd < 0) {
    return base::ErrnoError(errno, "opening /dev/loop-control");
  }
  base::UniqueFd control(control_fd);

  absl::Status last_error;
  for (int attempt = 0; attempt < kMaxAttachAttempts; ++attempt) {
    int number = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (number < 0) {
      return base::ErrnoError(errno, "LOOP_CTL_GET_FREE on /dev/loop-control");
    }
    auto loop = OpenLoopNode(number, O_RDWR);
    if (!loop.ok()) {
      // The device may have been removed (LOOP_CTL_REMOVE) in between.
      if (base::HasErrno(loop.status(), ENXIO) ||
          base::HasErrno(loop.status(), ENOENT)) {
        last_error = loop.status();
        SleepJitter(attempt);
        continue;
      }
      return loop.status();
    }
    // Hold off udev (it takes LOCK_SH before probing) while we configure.
    if (::flock(loop->get(), LOCK_EX) < 0) {
      return base::ErrnoError(errno,
                              absl::StrCat("flock ", DevicePath(number)));
    }
    absl::Status status = Configure(loop->get(), DevicePath(number),
                                    backing.get(), backing_file, options,
                                    direct_io);
    if (!status.ok() && direct_io && base::HasErrno(status, EINVAL)) {
      direct_io = false;
      status = Configure(loop->get(), DevicePath(number), backing.get(),
                         backing_file, options, false);
    }
    if (status.ok()) {
      struct stat lst;
      if (::fstat(loop->get(), &lst) < 0) {
        int err = errno;
        ::ioctl(loop->get(), LOOP_CLR_FD, 0);
        return base::ErrnoError(err, absl::StrCat("stat ", DevicePath(number)));
      }
      (void)::flock(loop->get(), LOCK_UN);
      return LoopDevice(std::move(*loop), number, lst.st_rdev, /*owned=*/true);
    }
    if (base::HasErrno(status, EBUSY)) {
      // Lost the race for this free device to another attacher: try again.
      last_error = status;
      SleepJitter(attempt);
      continue;
    }
    return status;
  }
  return base::Annotate(last_error,
                        absl::StrCat("no free loop device for ", backing_file,
                                     " after ", kMaxAttachAttempts,
                                     " attempts"));
}

absl::StatusOr<LoopDevice> LoopDevice::Open(const std::string& device) {
  absl::string_view rest(device);
  int number = -1;
  if (!absl::ConsumePrefix(&rest, "/dev/loop") ||
      !absl::SimpleAtoi(rest, &number) || number < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a loop device path: '", device, "'"));
  }
  ASSIGN_OR_RETURN(base::UniqueFd fd, OpenLoopNode(number, O_RDWR));
  RETURN_IF_ERROR(GetStatus(fd.get(), device).status());
  struct stat st;
  if (::fstat(fd.get(), &st) < 0) {
    return base::ErrnoError(errno, absl::StrCat("stat ", device));
  }
  return LoopDevice(std::move(fd), number, st.st_rdev, /*owned=*/false);
}

absl::StatusOr<std::vector<LoopInfo>> LoopDevice::List() {
  std::vector<LoopInfo> result;
  for (int number : LoopNumbers()) {
    // Unbound devices have no loop/ directory in sysfs: skip without opening.
    if (::access((SysfsDir(number) + "/loop/backing_file").c_str(), F_OK) != 0) {
      continue;
    }
    auto fd = OpenLoopNode(number, O_RDONLY);
    if (!fd.ok()) continue;  // detached or removed in between
    auto raw = GetStatus(fd->get(), DevicePath(number));
    if (!raw.ok()) {
      if (base::HasErrno(raw.status(), ENXIO)) continue;
      return raw.status();
    }
    result.push_back(ToLoopInfo(number, *raw));
  }
  return result;
}

absl::StatusOr<std::optional<LoopDevice>> LoopDevice::FindByBackingFile(
    const std::string& backing_file) {
  struct stat st;
  if (::stat(backing_file.c_str(), &st) < 0) {
    return base::ErrnoError(errno, absl::StrCat("stat ", backing_file));
  }
  for (int number : LoopNumbers()) {
    if (::access((SysfsDir(number) + "/loop/backing_file").c_str(), F_OK) != 0) {
      continue;
    }
    auto fd = OpenLoopNode(number, O_RDWR);
    if (!fd.ok()) continue;
    auto raw = GetStatus(fd->get(), DevicePath(number));
    if (!raw.ok()) continue;
    if (DecodeKernelDev(raw->lo_device) != st.st_dev ||
        raw->lo_inode != st.st_ino) {
      continue;
    }
    struct stat lst;
    if (::fstat(fd->get(), &lst) < 0) {
      return base::ErrnoError(errno, absl::StrCat("stat ", DevicePath(number)));
    }
    return std::optional<LoopDevice>(
        LoopDevice(std::move(*fd), number, lst.st_rdev, /*owned=*/false));
  }
  return std::optional<LoopDevice>();
}

absl::StatusOr<LoopInfo> LoopDevice::Info() const {
  if (!fd_.valid()) return absl::FailedPreconditionError("loop handle is empty");
  ASSIGN_OR_RETURN(loop_info64 raw, GetStatus(fd_.get(), path_));
  return ToLoopInfo(number_, raw);
}

absl::StatusOr<uint64_t> LoopDevice::SizeBytes() const {
  uint64_t size = 0;
  if (::ioctl(fd_.get(), BLKGETSIZE64, &size) < 0) {
    return base::ErrnoError(errno, absl::StrCat("BLKGETSIZE64 on ", path_));
  }
  return size;
}

bool LoopDevice::direct_io() const {
  auto dio = ReadSysfs(SysfsDir(number_) + "/loop/dio");
  return dio.has_value() && *dio == "1";
}

absl::Status LoopDevice::RefreshCapacity() {
  if (::ioctl(fd_.get(), LOOP_SET_CAPACITY, 0) < 0) {
    return base::ErrnoError(errno, absl::StrCat("LOOP_SET_CAPACITY on ", path_));
  }
  return absl::OkStatus();
}

absl::Status LoopDevice::SetAutoclear(bool autoclear) {
  ASSIGN_OR_RETURN(loop_info64 info, GetStatus(fd_.get(), path_));
  if (autoclear) {
    info.lo_flags |= LO_FLAGS_AUTOCLEAR;
  } else {
    info.lo_flags &= ~LO_FLAGS_AUTOCLEAR;
  }
  for (int attempt = 0;; ++attempt) {
    if (::ioctl(fd_.get(), LOOP_SET_STATUS64, &info) == 0) break;
    if (errno == EAGAIN && attempt < 20) {
      SleepJitter(attempt);
      continue;
    }
    return base::ErrnoError(errno,
                            absl::StrCat("LOOP_SET_STATUS64 on ", path_));
  }
  return absl::OkStatus();
}

absl::Status LoopDevice::Detach(absl::Duration timeout) {
  if (!fd_.valid()) return absl::FailedPreconditionError("loop handle is empty");
  owned_ = false;
  const std::string path = path_;
  const int number = number_;
  auto raw = GetStatus(fd_.get(), path);
  if (!raw.ok()) {
    fd_.reset();
    if (base::HasErrno(raw.status(), ENXIO)) return absl::OkStatus();  // gone
    return raw.status();
  }
  const dev_t backing_dev = DecodeKernelDev(raw->lo_device);
  const ino_t backing_ino = raw->lo_inode;

  absl::Time deadline = absl::Now() + timeout;
  // Old kernels answer EBUSY while someone else has the device open; new ones
  // turn on autoclear instead and succeed.
  for (int attempt = 0;; ++attempt) {
    if (::ioctl(fd_.get(), LOOP_CLR_FD, 0) == 0) break;
    int err = errno;
    if (err == ENXIO) {
      fd_.reset();
      return absl::OkStatus();
    }
    if (err == EBUSY && absl::Now() < deadline) {
      SleepJitter(attempt);
      continue;
    }
    if (err == EBUSY) {
      (void)SetAutoclear(true);
      fd_.reset();
      return base::ErrnoError(
          EBUSY, absl::StrCat("detaching ", path,
                              ": still in use; autoclear set, the kernel "
                              "detaches it when the last user closes it"));
    }
    fd_.reset();
    return base::ErrnoError(err, absl::StrCat("LOOP_CLR_FD on ", path));
  }
  // The actual teardown happens when the last opener (normally us) closes it.
  fd_.reset();
  for (int attempt = 0;; ++attempt) {
    auto probe = OpenLoopNode(number, O_RDONLY);
    if (!probe.ok()) return absl::OkStatus();  // ENXIO: being torn down / gone
    auto now = GetStatus(probe->get(), path);
    if (!now.ok()) return absl::OkStatus();  // ENXIO: unbound
    if (DecodeKernelDev(now->lo_device) != backing_dev ||
        now->lo_inode != backing_ino) {
      return absl::OkStatus();  // detached and already reused by someone else
    }
    probe->reset();
    if (absl::Now() >= deadline) {
      return base::ErrnoError(
          EBUSY, absl::StrCat("detaching ", path,
                              ": still in use by another opener; it will be "
                              "detached when the last user closes it"));
    }
    SleepJitter(attempt);
  }
}

void LoopDevice::Release() {
  owned_ = false;
  fd_.reset();
}

absl::Status DetachLoopDevice(const std::string& device,
                              absl::Duration timeout) {
  ASSIGN_OR_RETURN(LoopDevice loop, LoopDevice::Open(device));
  return loop.Detach(timeout);
}

}  // namespace thinpool
