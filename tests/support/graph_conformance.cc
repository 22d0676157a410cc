#include "tests/support/graph_conformance.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "graph/store.h"
#include "gtest/gtest.h"

namespace graph::testing {

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

absl::StatusOr<std::unique_ptr<ScratchBtrfs>> ScratchBtrfs::Create(uint64_t size_mb) {
  return CreateOf("btrfs", {"mkfs.btrfs", "-q", "-f"}, "", size_mb);
}

absl::StatusOr<std::unique_ptr<ScratchBtrfs>> ScratchBtrfs::CreateOf(
    const std::string& fstype, std::vector<std::string> mkfs, const std::string& data,
    uint64_t size_mb) {
  if (!KernelHasFilesystem(fstype)) {
    return absl::FailedPreconditionError(
        absl::StrCat("kernel has no ", fstype, " (/proc/filesystems)"));
  }
  if (::access("/dev/loop-control", R_OK | W_OK) != 0) {
    return absl::FailedPreconditionError("no /dev/loop-control (loop devices unavailable)");
  }
  std::unique_ptr<ScratchBtrfs> fs(new ScratchBtrfs());
  ASSIGN_OR_RETURN(fs->dir_, ScratchDir::Create(absl::StrCat("scratch-", fstype)));
  fs->image_ = fs->dir_->path() + "/image";
  fs->mountpoint_ = fs->dir_->path() + "/mnt";
  {
    base::UniqueFd img(::open(fs->image_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!img) return base::ErrnoError(errno, "create scratch image");
    if (::ftruncate(img.get(), static_cast<off_t>(size_mb) << 20) != 0) {
      return base::ErrnoError(errno, "size scratch image");
    }
  }
  std::string out;
  mkfs.push_back(fs->image_);
  absl::Status made = RunProgram(mkfs, &out);
  if (!made.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(mkfs[0], ": ", made.message()));
  }
  if (::mkdir(fs->mountpoint_.c_str(), 0755) != 0) return base::ErrnoError(errno, "mkdir mnt");

  base::UniqueFd backing(::open(fs->image_.c_str(), O_RDWR | O_CLOEXEC));
  if (!backing) return base::ErrnoError(errno, "open scratch image");
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
  if (::mount(fs->loop_.c_str(), fs->mountpoint_.c_str(), fstype.c_str(), 0,
              data.empty() ? nullptr : data.c_str()) != 0) {
    return base::ErrnoError(errno, absl::StrCat("mount ", fs->loop_, " (", fstype,
                                                data.empty() ? "" : " -o ", data, ")"));
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

// ===================================================================== fs ===

namespace graph::testing {
namespace {

std::string Rel(const std::string& p) {
  size_t i = 0;
  while (i < p.size() && p[i] == '/') ++i;
  return p.substr(i);
}

std::string Join(const std::string& root, const std::string& p) {
  return absl::StrCat(root, "/", Rel(p));
}

}  // namespace

FsOp CreateFile(const std::string& path, const std::string& content, mode_t mode) {
  return FsOp{FsOp::kFile, path, content, mode};
}
FsOp CreateDir(const std::string& path, mode_t mode) { return FsOp{FsOp::kDir, path, "", mode}; }
FsOp RemoveAll(const std::string& path) { return FsOp{FsOp::kRemoveAll, path, ""}; }
FsOp Chown(const std::string& path, uid_t uid, gid_t gid) {
  return FsOp{FsOp::kChown, path, "", 0, uid, gid};
}
FsOp Chmod(const std::string& path, mode_t mode) { return FsOp{FsOp::kChmod, path, "", mode}; }
FsOp Rename(const std::string& from, const std::string& to) { return FsOp{FsOp::kRename, from, to}; }
FsOp Link(const std::string& existing, const std::string& link) {
  return FsOp{FsOp::kLink, existing, link};
}
FsOp Symlink(const std::string& target, const std::string& link) {
  return FsOp{FsOp::kSymlink, link, target};
}

absl::Status Apply(const Applier& ops, const std::string& root) {
  for (const FsOp& op : ops) {
    std::string p = Join(root, op.path);
    switch (op.kind) {
      case FsOp::kFile: {
        base::UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (!fd) return base::ErrnoError(errno, absl::StrCat("create ", p));
        if (::write(fd.get(), op.arg.data(), op.arg.size()) != static_cast<ssize_t>(op.arg.size())) {
          return base::ErrnoError(errno, absl::StrCat("write ", p));
        }
        if (::fchmod(fd.get(), op.mode) != 0) return base::ErrnoError(errno, absl::StrCat("chmod ", p));
        break;
      }
      case FsOp::kDir:
        if (::mkdir(p.c_str(), 0700) != 0 && errno != EEXIST) {
          return base::ErrnoError(errno, absl::StrCat("mkdir ", p));
        }
        if (::chmod(p.c_str(), op.mode) != 0) return base::ErrnoError(errno, absl::StrCat("chmod ", p));
        break;
      case FsOp::kRemoveAll:
        RETURN_IF_ERROR(RemoveTree(p));
        break;
      case FsOp::kChown:
        if (::lchown(p.c_str(), op.uid, op.gid) != 0) return base::ErrnoError(errno, absl::StrCat("chown ", p));
        break;
      case FsOp::kChmod:
        if (::chmod(p.c_str(), op.mode) != 0) return base::ErrnoError(errno, absl::StrCat("chmod ", p));
        break;
      case FsOp::kRename:
        if (::rename(p.c_str(), Join(root, op.arg).c_str()) != 0) {
          return base::ErrnoError(errno, absl::StrCat("rename ", p));
        }
        break;
      case FsOp::kLink:
        if (::link(p.c_str(), Join(root, op.arg).c_str()) != 0) {
          return base::ErrnoError(errno, absl::StrCat("link ", p));
        }
        break;
      case FsOp::kSymlink:
        if (::symlink(op.arg.c_str(), p.c_str()) != 0) {
          return base::ErrnoError(errno, absl::StrCat("symlink ", p));
        }
        break;
    }
  }
  return absl::OkStatus();
}

namespace {

struct TreeEntry {
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  off_t size = 0;
  dev_t rdev = 0;
  std::string data;  // file content or symlink target
};

absl::Status Walk(const std::string& root, const std::string& rel,
                  std::map<std::string, TreeEntry>& out) {
  std::string dir_path = rel.empty() ? root : absl::StrCat(root, "/", rel);
  DIR* dir = ::opendir(dir_path.c_str());
  if (dir == nullptr) return base::ErrnoError(errno, absl::StrCat("opendir ", dir_path));
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(dir)) {
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) names.emplace_back(e->d_name);
  }
  ::closedir(dir);
  for (const std::string& n : names) {
    std::string r = rel.empty() ? n : absl::StrCat(rel, "/", n);
    std::string full = absl::StrCat(root, "/", r);
    struct stat st;
    if (::lstat(full.c_str(), &st) != 0) return base::ErrnoError(errno, absl::StrCat("lstat ", full));
    TreeEntry e;
    e.mode = st.st_mode;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.rdev = (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) ? st.st_rdev : 0;
    if (S_ISREG(st.st_mode)) {
      e.size = st.st_size;
      std::ifstream in(full, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      e.data = ss.str();
    } else if (S_ISLNK(st.st_mode)) {
      char buf[4096];
      ssize_t len = ::readlink(full.c_str(), buf, sizeof(buf));
      if (len < 0) return base::ErrnoError(errno, absl::StrCat("readlink ", full));
      e.data.assign(buf, static_cast<size_t>(len));
    }
    out["/" + r] = e;
    if (S_ISDIR(st.st_mode)) RETURN_IF_ERROR(Walk(root, r, out));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckDirectoryEqual(const std::string& expected, const std::string& actual) {
  std::map<std::string, TreeEntry> want, got;
  RETURN_IF_ERROR(Walk(expected, "", want));
  RETURN_IF_ERROR(Walk(actual, "", got));
  std::vector<std::string> diffs;
  for (const auto& [path, w] : want) {
    auto it = got.find(path);
    if (it == got.end()) {
      diffs.push_back(absl::StrCat(path, ": missing"));
      continue;
    }
    const TreeEntry& g = it->second;
    if (w.mode != g.mode) {
      diffs.push_back(absl::StrFormat("%s: mode %o, want %o", path, g.mode, w.mode));
    }
    if (w.uid != g.uid || w.gid != g.gid) {
      diffs.push_back(absl::StrFormat("%s: owner %d:%d, want %d:%d", path, g.uid, g.gid, w.uid, w.gid));
    }
    if (w.rdev != g.rdev) diffs.push_back(absl::StrCat(path, ": device numbers differ"));
    if (w.data != g.data) {
      diffs.push_back(absl::StrCat(path, ": content \"", absl::CHexEscape(g.data.substr(0, 40)),
                                   "\", want \"", absl::CHexEscape(w.data.substr(0, 40)), "\""));
    }
  }
  for (const auto& [path, g] : got) {
    if (want.count(path) == 0) diffs.push_back(absl::StrCat(path, ": unexpected"));
  }
  if (diffs.empty()) return absl::OkStatus();
  if (diffs.size() > 10) diffs.resize(10);
  return absl::FailedPreconditionError(absl::StrCat(
      "trees differ (", actual, " vs expected ", expected, "): ", absl::StrJoin(diffs, "; ")));
}

namespace {

struct Flag {
  const char* name;
  unsigned long set;
  unsigned long clear;
};
constexpr Flag kFlags[] = {
    {"ro", MS_RDONLY, 0},       {"rw", 0, MS_RDONLY},        {"nosuid", MS_NOSUID, 0},
    {"nodev", MS_NODEV, 0},     {"noexec", MS_NOEXEC, 0},    {"bind", MS_BIND, 0},
    {"rbind", MS_BIND | MS_REC, 0}, {"relatime", MS_RELATIME, 0}, {"noatime", MS_NOATIME, 0},
    {"sync", MS_SYNCHRONOUS, 0}, {"remount", MS_REMOUNT, 0}, {"defaults", 0, 0},
};

std::string CommonDir(const std::vector<std::string>& paths) {
  if (paths.empty()) return "";
  std::string prefix = paths[0];
  for (const std::string& p : paths) {
    size_t n = 0;
    while (n < prefix.size() && n < p.size() && prefix[n] == p[n]) ++n;
    prefix.resize(n);
  }
  auto slash = prefix.rfind('/');
  if (slash == std::string::npos || slash == 0) return "";
  return prefix.substr(0, slash);
}

absl::Status MountOne(const MountSpec& m, const std::string& target) {
  unsigned long flags = 0;
  std::vector<std::string> data;
  for (const std::string& opt : m.options) {
    bool known = false;
    for (const Flag& f : kFlags) {
      if (opt == f.name) {
        flags = (flags | f.set) & ~f.clear;
        known = true;
      }
    }
    if (!known) data.push_back(opt);
  }
  std::string where = m.target.empty() ? target : absl::StrCat(target, "/", Rel(m.target));
  bool bind = m.type == "bind" || m.type == "rbind" || (flags & MS_BIND);
  if (bind) {
    unsigned long bflags = MS_BIND | (m.type == "rbind" ? MS_REC : 0) | (flags & MS_REC);
    if (::mount(m.source.c_str(), where.c_str(), nullptr, bflags, nullptr) != 0) {
      return base::ErrnoError(errno, absl::StrCat("bind mount ", m.source, " on ", where));
    }
    if (flags & MS_RDONLY) {
      if (::mount(nullptr, where.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
        int err = errno;
        ::umount2(where.c_str(), MNT_DETACH);
        return base::ErrnoError(err, absl::StrCat("remount read-only ", where));
      }
    }
    return absl::OkStatus();
  }
  std::string joined = absl::StrJoin(data, ",");
  long page = ::sysconf(_SC_PAGESIZE);
  std::string chdir_to;
  if (m.type == "overlay" && static_cast<long>(joined.size()) >= page) {
    // Shorten: relative paths from the common parent of every dir named.
    std::vector<std::string> dirs;
    for (const std::string& opt : data) {
      for (const char* key : {"lowerdir=", "upperdir=", "workdir="}) {
        if (opt.rfind(key, 0) == 0) {
          for (absl::string_view d : absl::StrSplit(opt.substr(std::strlen(key)), ':')) {
            dirs.emplace_back(d);
          }
        }
      }
    }
    chdir_to = CommonDir(dirs);
    if (!chdir_to.empty()) {
      std::string prefix = chdir_to + "/";
      std::vector<std::string> rewritten;
      for (const std::string& opt : data) {
        auto eq = opt.find('=');
        std::string key = eq == std::string::npos ? "" : opt.substr(0, eq + 1);
        if (key != "lowerdir=" && key != "upperdir=" && key != "workdir=") {
          rewritten.push_back(opt);
          continue;
        }
        std::vector<std::string> parts;
        for (absl::string_view d : absl::StrSplit(opt.substr(key.size()), ':')) {
          std::string s(d);
          if (s.rfind(prefix, 0) == 0) s = s.substr(prefix.size());
          parts.push_back(s);
        }
        rewritten.push_back(key + absl::StrJoin(parts, ":"));
      }
      joined = absl::StrJoin(rewritten, ",");
    }
  }
  base::UniqueFd cwd;
  if (!chdir_to.empty()) {
    cwd.reset(::open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cwd || ::chdir(chdir_to.c_str()) != 0) return base::ErrnoError(errno, "chdir for mount");
  }
  int rc = ::mount(m.source.c_str(), where.c_str(), m.type.c_str(), flags,
                   joined.empty() ? nullptr : joined.c_str());
  int err = errno;
  if (cwd && ::fchdir(cwd.get()) != 0) return base::ErrnoError(errno, "fchdir back");
  if (rc != 0) {
    return base::ErrnoError(err, absl::StrCat("mount -t ", m.type, " ", m.source, " on ", where,
                                              " (", joined.size(), " bytes of options)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MountAll(const std::vector<MountSpec>& mounts, const std::string& target) {
  if (mounts.empty()) return absl::InvalidArgumentError("no mounts to mount");
  for (size_t i = 0; i < mounts.size(); ++i) {
    absl::Status s = MountOne(mounts[i], target);
    if (!s.ok()) {
      (void)UnmountAll(target);
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status UnmountAll(const std::string& target) {
  for (int i = 0; i < 64; ++i) {
    if (::umount2(target.c_str(), 0) != 0) {
      if (errno == EINVAL || errno == ENOENT) return absl::OkStatus();  // nothing mounted
      if (errno == EBUSY) {
        ::umount2(target.c_str(), MNT_DETACH);
        continue;
      }
      return base::ErrnoError(errno, absl::StrCat("umount ", target));
    }
  }
  return absl::OkStatus();
}

}  // namespace graph::testing

// ============================================================ conformance ===

namespace graph::testing {
namespace {

// One case's world: a scratch dir holding the driver root, a layer store
// and a work area. Tear-down unmounts what the case mounted, cleans the
// driver up and removes everything.
class Env {
 public:
  static absl::StatusOr<std::unique_ptr<Env>> Create(const ConformanceTarget& t) {
    std::string parent;
    if (t.scratch_parent) {
      ASSIGN_OR_RETURN(parent, t.scratch_parent());
    }
    std::unique_ptr<Env> env(new Env());
    env->target_ = t;
    ASSIGN_OR_RETURN(env->dir_, ScratchDir::Create(absl::StrCat("conf-", t.name), parent));
    env->work_ = env->dir_->path() + "/work";
    if (::mkdir(env->work_.c_str(), 0755) != 0) return base::ErrnoError(errno, "mkdir work");
    std::string base = env->dir_->path() + "/graph";
    if (::mkdir(base.c_str(), 0700) != 0) return base::ErrnoError(errno, "mkdir graph");
    std::map<std::string, std::string> options = t.options;
    if (t.per_case_options) {
      ASSIGN_OR_RETURN(auto extra, t.per_case_options(base));
      env->base_ = base;
      options.insert(extra.begin(), extra.end());
    }
    ASSIGN_OR_RETURN(std::unique_ptr<Driver> driver, OpenDriver(t.driver, base, options));
    ASSIGN_OR_RETURN(env->store_, LayerStore::Open(env->dir_->path() + "/store", std::move(driver)));
    return env;
  }

  ~Env() {
    for (auto it = mounted_.rbegin(); it != mounted_.rend(); ++it) (void)UnmountAll(*it);
    if (store_) {
      absl::Status s = store_->driver().Cleanup();
      if (!s.ok()) ADD_FAILURE() << "driver cleanup: " << s;
      store_.reset();
    }
    if (!base_.empty() && target_.per_case_teardown) target_.per_case_teardown(base_);
  }

  const ConformanceTarget& target() const { return target_; }
  LayerStore& store() { return *store_; }
  Driver& driver() { return store_->driver(); }
  const std::string& work() const { return work_; }

  // A fresh directory in the work area.
  std::string NewDir(const std::string& prefix) {
    std::string d = absl::StrCat(work_, "/", prefix, "-", counter_++);
    ::mkdir(d.c_str(), 0755);
    return d;
  }
  absl::Status Mount(const std::vector<MountSpec>& m, const std::string& target) {
    RETURN_IF_ERROR(MountAll(m, target));
    mounted_.push_back(target);
    return absl::OkStatus();
  }
  absl::Status Unmount(const std::string& target) {
    mounted_.erase(std::remove(mounted_.begin(), mounted_.end(), target), mounted_.end());
    return UnmountAll(target);
  }
  std::string Unique(const std::string& prefix) { return absl::StrCat(prefix, "-", counter_++); }

  // containerd's Prepare / View: create and describe the mounts.
  absl::StatusOr<std::vector<MountSpec>> Prepare(const std::string& key, const std::string& parent,
                                                 std::map<std::string, std::string> labels = {}) {
    CreateLayerOptions o;
    o.kind = LayerKind::kActive;
    o.labels = std::move(labels);
    RETURN_IF_ERROR(store_->Create(key, parent, o).status());
    return store_->Mounts(key);
  }
  absl::StatusOr<std::vector<MountSpec>> View(const std::string& key, const std::string& parent,
                                              std::map<std::string, std::string> labels = {}) {
    CreateLayerOptions o;
    o.kind = LayerKind::kView;
    o.labels = std::move(labels);
    RETURN_IF_ERROR(store_->Create(key, parent, o).status());
    return store_->Mounts(key);
  }

  // Prepare on `parent`, apply, commit; returns the committed name.
  absl::StatusOr<std::string> CreateSnapshot(const std::string& parent, const Applier& a) {
    std::string n = Unique("snap");
    std::string prepare = n + "-prepare";
    ASSIGN_OR_RETURN(std::vector<MountSpec> m, Prepare(prepare, parent));
    std::string td = NewDir("prepare");
    RETURN_IF_ERROR(Mount(m, td));
    absl::Status applied = Apply(a, td);
    RETURN_IF_ERROR(Unmount(td));
    RETURN_IF_ERROR(applied);
    RETURN_IF_ERROR(store_->Commit(n, prepare).status());
    return n;
  }

  // A view of `name` mounted and compared with `expected`.
  absl::Status CheckSnapshot(const std::string& name, const std::string& expected) {
    std::string view = name + "-view";
    ASSIGN_OR_RETURN(std::vector<MountSpec> m, View(view, name));
    std::string td = NewDir("check");
    absl::Status s = Mount(m, td);
    if (s.ok()) {
      s = CheckDirectoryEqual(expected, td);
      absl::Status u = Unmount(td);
      if (s.ok()) s = u;
    }
    absl::Status rm = store_->Remove(view);
    return s.ok() ? rm : s;
  }

  // containerd's checkSnapshots: a chain of snapshots, each checked against
  // a flat directory with the same appliers applied.
  absl::Status CheckSnapshots(const std::vector<Applier>& appliers) {
    std::string flat = NewDir("flat");
    std::string parent;
    for (size_t i = 0; i < appliers.size(); ++i) {
      absl::StatusOr<std::string> s = CreateSnapshot(parent, appliers[i]);
      if (!s.ok()) return base::Annotate(s.status(), absl::StrCat("snapshot ", i + 1));
      RETURN_IF_ERROR(base::Annotate(Apply(appliers[i], flat), "apply to flat dir"));
      RETURN_IF_ERROR(base::Annotate(CheckSnapshot(*s, flat), absl::StrCat("check snapshot ", i + 1)));
      parent = *s;
    }
    return absl::OkStatus();
  }

 private:
  Env() = default;
  ConformanceTarget target_;
  std::unique_ptr<ScratchDir> dir_;
  std::unique_ptr<LayerStore> store_;
  std::string work_;
  std::string base_;  // set when the target has per-case options to undo
  std::vector<std::string> mounted_;
  int counter_ = 0;
};

#define CONF_OK(expr)                                      \
  do {                                                     \
    absl::Status conf_status_ = (expr);                    \
    ASSERT_TRUE(conf_status_.ok()) << #expr << ": " << conf_status_; \
  } while (0)

#define CONF_ASSIGN(lhs, expr) CONF_ASSIGN_IMPL_(DMTHIN_CONCAT_(conf_so_, __LINE__), lhs, expr)
#define CONF_ASSIGN_IMPL_(var, lhs, expr)                          \
  auto var = (expr);                                               \
  ASSERT_TRUE(var.ok()) << #expr << ": " << var.status();          \
  lhs = std::move(var).value()

// ------------------------------------------------- containerd testsuite ---

void Basic(Env& env) {
  Applier initial = {CreateFile("/foo", "foo\n", 0777), CreateDir("/a", 0755),
                     CreateDir("/a/b", 0755), CreateDir("/a/b/c", 0755)};
  Applier diff = {CreateFile("/bar", "bar\n", 0777), CreateFile("/foo", "bar\n", 0777),
                  RemoveAll("/a/b")};
  std::string preparing = env.NewDir("preparing");
  CONF_ASSIGN(auto mounts, env.Prepare(preparing, ""));
  ASSERT_FALSE(mounts.empty());
  CONF_OK(env.Mount(mounts, preparing));
  CONF_OK(Apply(initial, preparing));
  CONF_OK(env.Unmount(preparing));

  std::string committed = env.work() + "/committed";
  CONF_OK(env.store().Commit(committed, preparing).status());
  CONF_ASSIGN(LayerInfo si, env.store().Stat(committed));
  EXPECT_EQ(si.parent, "");
  EXPECT_EQ(si.kind, LayerKind::kCommitted);
  EXPECT_FALSE(env.store().Stat(preparing).ok()) << "gone after commit";

  std::string next = env.NewDir("nextlayer");
  CONF_ASSIGN(mounts, env.Prepare(next, committed));
  CONF_OK(env.Mount(mounts, next));
  std::string expect1 = env.NewDir("expect1");
  CONF_OK(Apply(initial, expect1));
  CONF_OK(CheckDirectoryEqual(expect1, next));
  CONF_OK(Apply(diff, next));
  CONF_OK(env.Unmount(next));
  CONF_ASSIGN(LayerInfo ni, env.store().Stat(next));
  EXPECT_EQ(ni.parent, committed);
  EXPECT_EQ(ni.kind, LayerKind::kActive);

  std::string next_committed = env.work() + "/committed-next";
  CONF_OK(env.store().Commit(next_committed, next).status());
  CONF_ASSIGN(LayerInfo si2, env.store().Stat(next_committed));
  EXPECT_EQ(si2.parent, committed);
  EXPECT_EQ(si2.kind, LayerKind::kCommitted);
  EXPECT_FALSE(env.store().Stat(next).ok());

  CONF_ASSIGN(auto all, env.store().List());
  std::map<std::string, LayerInfo> walked;
  for (auto& l : all) walked[l.name] = l;
  ASSERT_EQ(walked.count(committed), 1u);
  ASSERT_EQ(walked.count(next_committed), 1u);
  EXPECT_EQ(walked[committed].cache_id, si.cache_id);
  EXPECT_EQ(walked[next_committed].parent, committed);
  EXPECT_EQ(walked[next_committed].created, si2.created);

  std::string nextnext = env.NewDir("nextnextlayer");
  CONF_ASSIGN(mounts, env.View(nextnext, next_committed));
  CONF_OK(env.Mount(mounts, nextnext));
  std::string expect2 = env.NewDir("expect2");
  CONF_OK(Apply(initial, expect2));
  CONF_OK(Apply(diff, expect2));
  CONF_OK(CheckDirectoryEqual(expect2, nextnext));
  CONF_OK(env.Unmount(nextnext));
  CONF_OK(env.store().Remove(nextnext));

  absl::Status busy = env.store().Remove(committed);
  EXPECT_FALSE(busy.ok());
  EXPECT_NE(busy.message().find("remove"), absl::string_view::npos) << busy;
  CONF_OK(env.store().Remove(next_committed));
  CONF_OK(env.store().Remove(committed));
}

void StatActive(Env& env) {
  std::string preparing = env.NewDir("preparing");
  CONF_ASSIGN(auto mounts, env.Prepare(preparing, ""));
  CONF_OK(env.Mount(mounts, preparing));
  CONF_OK(Apply({CreateFile("/foo", "foo\n", 0777)}, preparing));
  CONF_OK(env.Unmount(preparing));
  CONF_ASSIGN(LayerInfo si, env.store().Stat(preparing));
  EXPECT_EQ(si.name, preparing);
  EXPECT_EQ(si.kind, LayerKind::kActive);
  EXPECT_EQ(si.parent, "");
}

void StatCommitted(Env& env) {
  std::string preparing = env.NewDir("preparing");
  CONF_ASSIGN(auto mounts, env.Prepare(preparing, ""));
  CONF_OK(env.Mount(mounts, preparing));
  CONF_OK(Apply({CreateFile("/foo", "foo\n", 0777)}, preparing));
  CONF_OK(env.Unmount(preparing));
  std::string committed = env.work() + "/committed";
  CONF_OK(env.store().Commit(committed, preparing).status());
  CONF_ASSIGN(LayerInfo si, env.store().Stat(committed));
  EXPECT_EQ(si.name, committed);
  EXPECT_EQ(si.kind, LayerKind::kCommitted);
  EXPECT_EQ(si.parent, "");
}

void Transitivity(Env& env) {
  std::string preparing = env.NewDir("preparing");
  CONF_ASSIGN(auto mounts, env.Prepare(preparing, ""));
  CONF_OK(env.Mount(mounts, preparing));
  CONF_OK(Apply({CreateFile("/foo", "foo\n", 0777)}, preparing));
  CONF_OK(env.Unmount(preparing));
  std::string snap_a = env.work() + "/snapA";
  CONF_OK(env.store().Commit(snap_a, preparing).status());

  std::string next = env.NewDir("next");
  CONF_ASSIGN(mounts, env.Prepare(next, snap_a));
  CONF_OK(env.Mount(mounts, next));
  CONF_OK(Apply({CreateFile("/foo", "foo bar\n", 0777)}, next));
  CONF_OK(env.Unmount(next));
  std::string snap_b = env.work() + "/snapB";
  CONF_OK(env.store().Commit(snap_b, next).status());

  CONF_ASSIGN(LayerInfo a, env.store().Stat(snap_a));
  CONF_ASSIGN(LayerInfo b, env.store().Stat(snap_b));
  CONF_ASSIGN(LayerInfo pb, env.store().Stat(b.parent));
  EXPECT_EQ(a.parent, "");
  EXPECT_EQ(b.parent, snap_a);
  EXPECT_EQ(pb.parent, "");
}

void DuplicateKeys(Env& env) {
  std::string preparing = env.NewDir("preparing");
  CONF_ASSIGN(auto mounts, env.Prepare(preparing, ""));
  std::string snap_a = env.work() + "/snapA";
  CONF_OK(env.store().Commit(snap_a, preparing).status());
  std::string new_layer = env.work() + "/newlayer";
  CONF_OK(env.Prepare(new_layer, snap_a).status());
  EXPECT_TRUE(absl::IsAlreadyExists(env.View(new_layer, snap_a).status()));
  std::string prep = env.work() + "/prepLayer";
  CONF_OK(env.Prepare(prep, snap_a).status());
  EXPECT_TRUE(absl::IsAlreadyExists(env.Prepare(prep, snap_a).status()));
  std::string view = env.work() + "/viewLayer";
  CONF_OK(env.View(view, snap_a).status());
  EXPECT_TRUE(absl::IsAlreadyExists(env.View(view, snap_a).status()));
  EXPECT_TRUE(absl::IsAlreadyExists(env.store().Commit(snap_a, new_layer).status()))
      << "commit onto a taken name";
}

void Update(Env& env) {
  absl::Time t1 = absl::Now();
  CONF_OK(env.Prepare("c1-a", "").status());
  CONF_OK(env.store().Commit("c1", "c1-a").status());
  CONF_OK(env.Prepare("c2-a", "c1").status());
  CONF_OK(env.store().Commit("c2", "c2-a").status());
  CONF_OK(env.Prepare("a1", "c2").status());
  CONF_OK(env.View("v1", "c2").status());
  absl::Time t2 = absl::Now();
  struct Case { const char* name; LayerKind kind; const char* parent; };
  for (const Case& c : {Case{"c1", LayerKind::kCommitted, ""}, Case{"c2", LayerKind::kCommitted, "c1"},
                        Case{"a1", LayerKind::kActive, "c2"}, Case{"v1", LayerKind::kView, "c2"}}) {
    CONF_ASSIGN(LayerInfo st, env.store().Stat(c.name));
    EXPECT_TRUE(st.created >= t1 && st.created <= t2) << c.name;
    EXPECT_EQ(st.created, st.updated) << c.name;
    EXPECT_EQ(st.kind, c.kind) << c.name;
    EXPECT_EQ(st.parent, c.parent) << c.name;
    absl::Time u1 = absl::Now();
    CONF_ASSIGN(st, env.store().Update(c.name, {{"l1", "v1"}, {"l2", "v2"}, {"l3", "v3"}}));
    EXPECT_TRUE(st.updated >= u1) << c.name;
    EXPECT_EQ(st.parent, c.parent);
    CONF_ASSIGN(st, env.store().Update(c.name, {{"l1", "updated"}, {"l4", "v4"}},
                                       {"labels.l1", "labels.l2"}));
    EXPECT_EQ(st.labels, (std::map<std::string, std::string>{{"l1", "updated"}, {"l3", "v3"}}));
    CONF_ASSIGN(st, env.store().Update(c.name, {{"l4", "v4"}}, {"labels"}));
    EXPECT_EQ(st.labels, (std::map<std::string, std::string>{{"l4", "v4"}}));
    EXPECT_EQ(env.store().Update(c.name, {}, {"parent"}).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

void Remove(Env& env) {
  CONF_OK(env.Prepare("committed-a", "").status());
  CONF_OK(env.store().Commit("committed-1", "committed-a").status());
  CONF_OK(env.Prepare("reuse-1", "committed-1").status());
  CONF_OK(env.store().Remove("reuse-1"));
  CONF_OK(env.View("reuse-1", "committed-1").status());
  CONF_OK(env.store().Remove("reuse-1"));
  CONF_OK(env.Prepare("reuse-1", "").status());
  CONF_OK(env.store().Remove("committed-1"));
  CONF_OK(env.store().Commit("committed-1", "reuse-1").status());
  EXPECT_TRUE(absl::IsNotFound(env.store().Remove("never-was")));
}

void Walk(Env& env) {
  std::map<std::string, std::string> gc = {{"containerd.io/gc.root", "check-walk"}};
  auto with = [&](const char* l) {
    auto m = gc;
    m["l"] = l;
    return m;
  };
  CONF_OK(env.Prepare("a-np", "", gc).status());
  CONF_OK(env.Prepare("p-tmp", "", gc).status());
  CONF_OK(env.store().Commit("p", "p-tmp", gc).status());
  CONF_OK(env.Prepare("a", "p", gc).status());
  CONF_OK(env.View("v", "p", gc).status());
  CONF_OK(env.Prepare("p-wl-tmp", "", gc).status());
  CONF_OK(env.store().Commit("p-wl", "p-wl-tmp", with("1")).status());
  CONF_OK(env.Prepare("a-wl", "p-wl", with("2")).status());
  CONF_OK(env.View("v-wl", "p-wl", with("3")).status());
  CONF_OK(env.Prepare("a-np-wl", "", with("2")).status());
  CONF_ASSIGN(auto all, env.store().List());
  auto select = [&](const std::function<bool(const LayerInfo&)>& pred) {
    std::vector<std::string> out;
    for (const auto& l : all) {
      if (pred(l)) out.push_back(l.name);
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  using V = std::vector<std::string>;
  auto gcroot = [](const LayerInfo& l) {
    auto it = l.labels.find("containerd.io/gc.root");
    return it != l.labels.end() && it->second == "check-walk";
  };
  EXPECT_EQ(select(gcroot), (V{"a", "a-np", "a-np-wl", "a-wl", "p", "p-wl", "v", "v-wl"}));
  EXPECT_EQ(select([&](const LayerInfo& l) { return l.kind == LayerKind::kActive && gcroot(l); }),
            (V{"a", "a-np", "a-np-wl", "a-wl"}));
  EXPECT_EQ(select([&](const LayerInfo& l) { return l.kind == LayerKind::kView; }), (V{"v", "v-wl"}));
  EXPECT_EQ(select([&](const LayerInfo& l) { return l.kind == LayerKind::kCommitted; }),
            (V{"p", "p-wl"}));
  EXPECT_EQ(select([&](const LayerInfo& l) { return l.parent == "p"; }), (V{"a", "v"}));
  EXPECT_EQ(select([&](const LayerInfo& l) { return !l.parent.empty(); }),
            (V{"a", "a-wl", "v", "v-wl"}));
  EXPECT_EQ(select([&](const LayerInfo& l) { return l.labels.count("l") > 0; }),
            (V{"a-np-wl", "a-wl", "p-wl", "v-wl"}));
  EXPECT_EQ(select([&](const LayerInfo& l) {
              auto it = l.labels.find("l");
              return it != l.labels.end() && it->second == "2";
            }),
            (V{"a-np-wl", "a-wl"}));
  // StatInWalk: what List says equals what Stat says.
  for (const LayerInfo& l : all) {
    CONF_ASSIGN(LayerInfo st, env.store().Stat(l.name));
    EXPECT_EQ(st.kind, l.kind);
    EXPECT_EQ(st.parent, l.parent);
    EXPECT_EQ(st.labels, l.labels);
    EXPECT_EQ(st.created, l.created);
    EXPECT_EQ(st.updated, l.updated);
  }
}

void LayerFileUpdate(Env& env) {
  Applier l1 = {CreateDir("/etc", 0700), CreateFile("/etc/hosts", "mydomain 10.0.0.1", 0644),
                CreateFile("/etc/profile", "PATH=/usr/bin", 0644)};
  Applier l2 = {CreateFile("/etc/hosts", "mydomain 10.0.0.2", 0644),
                CreateFile("/etc/profile", "PATH=/usr/bin", 0666), CreateDir("/root", 0700),
                CreateFile("/root/.bashrc", "PATH=/usr/sbin:/usr/bin", 0644)};
  // containerd repeats this across second boundaries to catch diffs that
  // rely on mtimes; two rounds keep the run short.
  for (int i = 0; i < 2; ++i) CONF_OK(env.CheckSnapshots({l1, l2}));
}

void RemoveDirectoryInLowerLayer(Env& env) {
  CONF_OK(env.CheckSnapshots({
      {CreateDir("/lib", 0700), CreateFile("/lib/hidden", "", 0644)},
      {RemoveAll("/lib"), CreateDir("/lib", 0700), CreateFile("/lib/not-hidden", "", 0644)},
      {CreateFile("/lib/newfile", "", 0644)},
  }));
}

void ChownCase(Env& env) {
  CONF_OK(env.CheckSnapshots({
      {CreateDir("/opt", 0700), CreateDir("/opt/a", 0700), CreateDir("/opt/a/b", 0700),
       CreateFile("/opt/a/b/file.txt", "hello", 0644)},
      {Chown("/opt", 1, 1), Chown("/opt/a", 1, 1), Chown("/opt/a/b", 1, 1),
       Chown("/opt/a/b/file.txt", 1, 1)},
  }));
}

void DirectoryPermissionOnCommit(Env& env) {
  CONF_OK(env.CheckSnapshots({
      {CreateDir("/dir1", 0700), CreateDir("/dir2", 0700), CreateDir("/dir3", 0700),
       CreateDir("/dir4", 0700), CreateFile("/dir4/f1", "...", 0644), CreateDir("/dir5", 0700),
       CreateFile("/dir5/f1", "...", 0644), Chown("/dir1", 1, 1), Chown("/dir2", 1, 1),
       Chown("/dir3", 1, 1), Chown("/dir5", 1, 1), Chown("/dir5/f1", 1, 1)},
      {Chown("/dir2", 0, 0), RemoveAll("/dir3"), Chown("/dir4", 1, 1), Chown("/dir4/f1", 1, 1)},
      {CreateDir("/dir3", 0700), Chown("/dir3", 1, 1), RemoveAll("/dir5"), CreateDir("/dir5", 0700),
       Chown("/dir5", 1, 1)},
  }));
}

void RemoveIntermediateSnapshot(Env& env) {
  std::string base = env.NewDir("base");
  CONF_ASSIGN(auto m, env.Prepare(base, ""));
  CONF_OK(env.Mount(m, base));
  CONF_OK(env.Unmount(base));
  std::string committed_base = env.work() + "/committed-base";
  CONF_OK(env.store().Commit(committed_base, base).status());
  std::string inter = env.work() + "/intermediate";
  CONF_OK(env.Prepare(inter, committed_base).status());
  std::string committed_inter = env.work() + "/committed-inter";
  CONF_OK(env.store().Commit(committed_inter, inter).status());
  std::string top = env.work() + "/toplayer";
  CONF_OK(env.Prepare(top, committed_inter).status());
  EXPECT_FALSE(env.store().Remove(committed_inter).ok()) << "intermediate removal must fail";
  CONF_OK(env.store().Remove(top));
  CONF_OK(env.store().Remove(committed_inter));
  CONF_OK(env.store().Remove(committed_base));
  CONF_ASSIGN(auto report, env.store().Check(false));
  EXPECT_TRUE(report.clean());
  CONF_ASSIGN(auto ids, env.driver().List());
  EXPECT_TRUE(ids.empty()) << "driver layers left behind: " << absl::StrJoin(ids, ", ");
}

void DeletedFilesInChildSnapshot(Env& env) {
  CONF_OK(env.CheckSnapshots({
      {CreateFile("/foo", "foo\n", 0777), CreateFile("/foobar", "foobar\n", 0777)},
      {RemoveAll("/foobar")},
      {},
  }));
}

void MoveFileFromLowerLayer(Env& env) {
  CONF_OK(env.CheckSnapshots({
      {CreateDir("/dir1", 0700), CreateFile("/dir1/f1", "Hello", 0644), CreateDir("dir2", 0700),
       CreateFile("dir2/f2", "...", 0644)},
      {CreateDir("/dir3", 0700), CreateFile("/dir3/f1", "Hello", 0644), RemoveAll("/dir1"),
       Link("dir2/f2", "dir3/f2"), RemoveAll("dir2/f2")},
  }));
}

void ViewReadonly(Env& env) {
  std::string preparing = env.work() + "/preparing";
  CONF_OK(env.Prepare(preparing, "").status());
  std::string committed = env.work() + "/committed";
  CONF_OK(env.store().Commit(committed, preparing).status());
  std::string view = env.work() + "/view";
  CONF_ASSIGN(auto m, env.View(view, committed));
  std::string mp = env.NewDir("view-mount");
  CONF_OK(env.Mount(m, mp));
  int fd = ::open((mp + "/testfile").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0777);
  int err = errno;
  if (fd >= 0) ::close(fd);
  CONF_OK(env.Unmount(mp));
  EXPECT_LT(fd, 0) << "write to a view must fail";
  EXPECT_EQ(err, EROFS);
  CONF_OK(env.store().Remove(view));
  CONF_OK(env.store().Remove(committed));
}

void RenameCase(Env& env) {
  Applier l2;
  if (!env.target().lower_dir_rename_unsupported) l2.push_back(Rename("/dir1", "/dir2"));
  l2.push_back(CreateFile("/somefiles/f1-overwrite", "new content 1", 0644));
  l2.push_back(Rename("/somefiles/f1-overwrite", "/somefiles/f1"));
  l2.push_back(Rename("/somefiles/f2", "/somefiles/f3"));
  CONF_OK(env.CheckSnapshots({
      {CreateDir("/dir1", 0700), CreateDir("/somefiles", 0700),
       CreateFile("/somefiles/f1", "was here first!", 0644),
       CreateFile("/somefiles/f2", "nothing interesting", 0644)},
      l2,
  }));
}

void RootPermission(Env& env) {
  std::string preparing = env.NewDir("preparing");
  CONF_ASSIGN(auto m, env.Prepare(preparing, ""));
  CONF_OK(env.Mount(m, preparing));
  struct stat st;
  ASSERT_EQ(::stat(preparing.c_str(), &st), 0);
  CONF_OK(env.Unmount(preparing));
  EXPECT_EQ(st.st_mode & 07777, 0755u);
}

void LayersMount(Env& env) {
  const int layers = env.target().deep_layers;
  std::vector<Applier> appliers = {{
      CreateFile("/bottom", "way at the bottom\n", 0777),
      CreateFile("/overwriteme", "FIRST!\n", 0777),
      CreateDir("/addhere", 0755),
      CreateDir("/onlyme", 0755),
      CreateFile("/onlyme/bottom", "bye!\n", 0777),
  }};
  for (int i = 1; i < layers; ++i) {
    appliers.push_back({
        CreateFile("/overwriteme", absl::StrCat(i, " WAS HERE!\n"), 0777),
        CreateFile(absl::StrCat("/addhere/file-", i), "same\n", 0755),
        RemoveAll("/onlyme"),
        CreateDir("/onlyme", 0755),
        CreateFile(absl::StrCat("/onlyme/file-", i), "only me!\n", 0777),
    });
  }
  std::string flat = env.NewDir("flat");
  std::string parent;
  for (size_t i = 0; i < appliers.size(); ++i) {
    std::string preparing = env.NewDir(absl::StrCat("prepare-layer-", i));
    CONF_ASSIGN(auto m, env.Prepare(preparing, parent));
    CONF_OK(env.Mount(m, preparing));
    absl::Status before = CheckDirectoryEqual(flat, preparing);
    ASSERT_TRUE(before.ok()) << "layer " << i << " before apply: " << before;
    CONF_OK(Apply(appliers[i], flat));
    CONF_OK(Apply(appliers[i], preparing));
    absl::Status after = CheckDirectoryEqual(flat, preparing);
    ASSERT_TRUE(after.ok()) << "layer " << i << " after apply: " << after;
    CONF_OK(env.Unmount(preparing));
    parent = env.work() + absl::StrCat("/committed-", i);
    CONF_OK(env.store().Commit(parent, preparing).status());
  }
  std::string view = env.NewDir("fullview");
  CONF_ASSIGN(auto m, env.View(view, parent));
  CONF_OK(env.Mount(m, view));
  CONF_OK(CheckDirectoryEqual(flat, view));
  CONF_OK(env.Unmount(view));
}

// ------------------------------------------ containers/storage graphtest ---

// Layers the graphtest cases write through Get are read-write ones (our
// Driver contract: read-only image layers are filled by ApplyDiff only).
CreateOptions Rw() {
  CreateOptions o;
  o.read_write = true;
  return o;
}

// A read-write layer `name` with "a subdir" (0705|sticky, owner 1:2) and
// "a file" (0222|setuid, "Some data"), as graphtest's createBase.
void CreateBase(Driver& d, const std::string& name) {
  CreateOptions rw;
  rw.read_write = true;
  CONF_OK(d.Create(name, "", rw));
  CONF_ASSIGN(std::string dir, d.Get(name, ""));
  absl::Status s = Apply({CreateDir("/a subdir", 0705 | S_ISVTX), Chown("/a subdir", 1, 2),
                          CreateFile("/a file", "Some data", 0222 | S_ISUID)},
                         dir);
  CONF_OK(d.Put(name));
  CONF_OK(s);
}

void VerifyBase(Driver& d, const std::string& name, mode_t root_perms) {
  CONF_ASSIGN(std::string dir, d.Get(name, ""));
  struct stat root, sub, file;
  int r1 = ::stat(dir.c_str(), &root);
  int r2 = ::lstat((dir + "/a subdir").c_str(), &sub);
  int r3 = ::lstat((dir + "/a file").c_str(), &file);
  std::map<std::string, TreeEntry> entries;
  absl::Status walked = Walk(dir, "", entries);
  CONF_OK(d.Put(name));
  ASSERT_EQ(r1 | r2 | r3, 0) << "stat in " << dir;
  CONF_OK(walked);
  EXPECT_EQ(root.st_mode & 07777, root_perms);
  EXPECT_EQ(root.st_uid, 0u);
  EXPECT_TRUE(S_ISDIR(sub.st_mode));
  EXPECT_EQ(sub.st_mode & 07777, static_cast<mode_t>(0705 | S_ISVTX));
  EXPECT_EQ(sub.st_uid, 1u);
  EXPECT_EQ(sub.st_gid, 2u);
  EXPECT_TRUE(S_ISREG(file.st_mode));
  EXPECT_EQ(file.st_mode & 07777, static_cast<mode_t>(0222 | S_ISUID));
  EXPECT_EQ(entries.size(), 2u) << "base layer holds exactly its two entries";
}

void CreateEmpty(Env& env) {
  Driver& d = env.driver();
  CONF_OK(d.Create("empty", "", {}));
  EXPECT_TRUE(d.Exists("empty"));
  EXPECT_EQ(d.Create("empty", "", {}).code(), absl::StatusCode::kAlreadyExists);
  CONF_ASSIGN(std::string dir, d.Get("empty", ""));
  struct stat st;
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(st.st_uid, 0u);
  std::map<std::string, TreeEntry> entries;
  CONF_OK(Walk(dir, "", entries));
  EXPECT_TRUE(entries.empty());
  CONF_OK(d.Put("empty"));
  CONF_OK(d.Remove("empty"));
  EXPECT_FALSE(d.Exists("empty"));
  EXPECT_TRUE(absl::IsNotFound(d.Remove("empty")));
  EXPECT_TRUE(absl::IsNotFound(d.Create("orphan", "no-such-parent", {})));
}

void CreateBaseCase(Env& env) {
  CreateBase(env.driver(), "Base1");
  VerifyBase(env.driver(), "Base1", 0755);
}

void CreateSnap(Env& env) {
  Driver& d = env.driver();
  CreateBase(d, "Base2");
  CONF_OK(d.Create("Snap2", "Base2", Rw()));
  VerifyBase(d, "Snap2", 0755);
  CONF_ASSIGN(std::string root, d.Get("Snap2", ""));
  int rc = ::chmod(root.c_str(), 0777);
  CONF_OK(d.Put("Snap2"));
  ASSERT_EQ(rc, 0);
  CONF_OK(d.Create("SecondSnap", "Snap2", Rw()));
  VerifyBase(d, "SecondSnap", 0777);
  VerifyBase(d, "Base2", 0755);  // the parent is untouched
}

// graphtest's addLayerFiles / checkManyLayers: each layer writes top-id and
// layer-N/{layer-id,parent-id}.
void DeepLayerRead(Env& env) {
  Driver& d = env.driver();
  const int count = std::min(env.target().deep_layers, 50);
  std::string base = NewCacheId();
  CONF_OK(d.Create(base, "", Rw()));
  CONF_ASSIGN(std::string dir, d.Get(base, ""));
  CONF_OK(Apply({CreateFile("/testfile.txt", "test content", 0644)}, dir));
  CONF_OK(d.Put(base));
  std::string last = base;
  for (int i = 1; i <= count; ++i) {
    std::string next = NewCacheId();
    CONF_OK(d.Create(next, last, Rw()));
    CONF_ASSIGN(std::string root, d.Get(next, ""));
    std::string ld = absl::StrCat("/layer-", i);
    CONF_OK(Apply({CreateFile("/top-id", next, 0755), CreateDir(ld, 0755),
                   CreateFile(ld + "/layer-id", next, 0755),
                   CreateFile(ld + "/parent-id", last, 0755)},
                  root));
    CONF_OK(d.Put(next));
    last = next;
  }
  CONF_ASSIGN(std::string root, d.Get(last, ""));
  auto read = [&](const std::string& p) {
    std::ifstream in(root + p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  std::string id = read("/top-id");
  EXPECT_EQ(id, last);
  for (int i = count; i > 0; --i) {
    EXPECT_EQ(read(absl::StrCat("/layer-", i, "/layer-id")), id) << "layer " << i;
    id = read(absl::StrCat("/layer-", i, "/parent-id"));
  }
  EXPECT_EQ(id, base);
  EXPECT_EQ(read("/testfile.txt"), "test content");
  CONF_OK(d.Put(last));
}

// graphtest's addManyFiles: `count` files spread over directories, content
// from `seed`.
Applier ManyFiles(int count, int seed) {
  Applier a;
  for (int i = 0; i < count; i += 100) {
    std::string dir = absl::StrCat("/directory-", i);
    a.push_back(CreateDir(dir, 0755));
    for (int j = 0; i + j < count && j < 100; ++j) {
      a.push_back(CreateFile(absl::StrCat(dir, "/file-", i + j),
                             absl::StrCat("seed ", seed, " file ", i + j, std::string(64 + j, 'x')),
                             0755));
    }
  }
  return a;
}

void DiffApply(Env& env) {
  Driver& d = env.driver();
  const int files = 120;
  std::string base = NewCacheId(), upper = NewCacheId(), diff = NewCacheId();
  CONF_OK(d.Create(base, "", Rw()));
  CONF_ASSIGN(std::string bdir, d.Get(base, ""));
  Applier base_ops = ManyFiles(files, 3);
  base_ops.push_back(CreateFile("/file-remove.txt", "This file should get removed in upper!", 0644));
  base_ops.push_back(CreateDir("/var", 0755));
  base_ops.push_back(CreateDir("/var/lib", 0755));
  base_ops.push_back(CreateFile("/var/lib/f", "gone", 0644));
  CONF_OK(Apply(base_ops, bdir));
  CONF_OK(d.Put(base));

  CONF_OK(d.Create(upper, base, Rw()));
  CONF_ASSIGN(std::string udir, d.Get(upper, ""));
  Applier upper_ops = ManyFiles(files, 6);
  upper_ops.push_back(RemoveAll("/file-remove.txt"));
  upper_ops.push_back(RemoveAll("/var/lib"));
  CONF_OK(Apply(upper_ops, udir));
  CONF_OK(d.Put(upper));

  CONF_ASSIGN(int64_t diff_size, d.DiffSize(upper, base));
  EXPECT_GT(diff_size, 0);
  std::string tar;
  StringSink sink(&tar);
  CONF_ASSIGN(DiffResult written, d.Diff(upper, base, sink));
  EXPECT_EQ(written.tar_bytes, tar.size());

  CONF_OK(d.Create(diff, base, {}));
  StringSource source(tar);
  CONF_ASSIGN(ApplyDiffResult applied, d.ApplyDiff(diff, base, source));
  EXPECT_EQ(applied.size, diff_size) << "applied size equals DiffSize";
  EXPECT_EQ(applied.diff_id, written.diff_id);

  CONF_ASSIGN(std::string want, d.Get(upper, ""));
  CONF_ASSIGN(std::string got, d.Get(diff, ""));
  absl::Status same = CheckDirectoryEqual(want, got);
  struct stat st;
  bool removed_gone = ::lstat((got + "/file-remove.txt").c_str(), &st) != 0;
  bool lib_gone = ::lstat((got + "/var/lib").c_str(), &st) != 0;
  CONF_OK(d.Put(diff));
  CONF_OK(d.Put(upper));
  CONF_OK(same);
  EXPECT_TRUE(removed_gone);
  EXPECT_TRUE(lib_gone);
}

std::vector<Change> Sorted(std::vector<Change> c) {
  std::sort(c.begin(), c.end(), [](const Change& a, const Change& b) { return a.path < b.path; });
  return c;
}

std::string Describe(const std::vector<Change>& changes) {
  std::vector<std::string> out;
  for (const Change& c : changes) out.push_back(absl::StrCat(ChangeKindName(c.kind), " ", c.path));
  return absl::StrJoin(out, ", ");
}

void ChangesCase(Env& env) {
  Driver& d = env.driver();
  std::string base = NewCacheId(), upper = NewCacheId();
  CONF_OK(d.Create(base, "", Rw()));
  CONF_ASSIGN(std::string bdir, d.Get(base, ""));
  CONF_OK(Apply(ManyFiles(20, 3), bdir));
  CONF_OK(d.Put(base));
  CONF_OK(d.Create(upper, base, Rw()));
  CONF_ASSIGN(std::string udir, d.Get(upper, ""));
  // graphtest's changeManyFiles: modify every third file, delete the next,
  // add a new one for the third.
  std::vector<Change> want = {{"/directory-0", ChangeKind::kModify}};
  Applier ops;
  for (int j = 0; j < 20; ++j) {
    std::string f = absl::StrCat("/directory-0/file-", j);
    switch (j % 3) {
      case 0:
        ops.push_back(CreateFile(f, absl::StrCat("changed ", j, std::string(200, 'y')), 0755));
        want.push_back({f, ChangeKind::kModify});
        break;
      case 1:
        ops.push_back(RemoveAll(f));
        want.push_back({f, ChangeKind::kDelete});
        break;
      case 2: {
        std::string n = absl::StrCat("/directory-0/file-", j, "-new");
        ops.push_back(CreateFile(n, "new", 0644));
        want.push_back({n, ChangeKind::kAdd});
        break;
      }
    }
  }
  CONF_OK(Apply(ops, udir));
  CONF_OK(d.Put(upper));
  CONF_ASSIGN(auto changes, d.Changes(upper, base));
  EXPECT_EQ(Describe(Sorted(changes)), Describe(Sorted(want)));
}

void Echo(Env& env) {
  Driver& d = env.driver();
  const int components = 10;
  for (int depth = 0; depth < components; ++depth) {
    std::string base = NewCacheId(), second = NewCacheId(), third = NewCacheId();
    CreateBase(d, base);
    VerifyBase(d, base, 0755);
    CONF_ASSIGN(std::string root, d.Get(base, ""));
    std::vector<Change> want = {{"/a file", ChangeKind::kAdd}, {"/a subdir", ChangeKind::kAdd}};
    std::vector<std::string> paths;
    std::string path;
    for (int i = 0; i < components - 1; ++i) {
      path += absl::StrCat("/subdir", i + 1);
      paths.push_back(path);
      ASSERT_EQ(::mkdir((root + path).c_str(), 0700), 0);
      want.push_back({path, ChangeKind::kAdd});
    }
    path += "/file";
    paths.push_back(path);
    CONF_OK(Apply({CreateFile(path, std::string(128, static_cast<char>('a' + depth)), 0600)}, root));
    want.push_back({path, ChangeKind::kAdd});
    CONF_OK(d.Put(base));
    CONF_ASSIGN(auto changes, d.Changes(base, ""));
    EXPECT_EQ(Describe(Sorted(changes)), Describe(Sorted(want))) << "depth " << depth;

    CONF_OK(d.Create(second, base, Rw()));
    CONF_ASSIGN(root, d.Get(second, ""));
    CONF_OK(RemoveTree(root + paths[depth]));
    want.clear();
    for (int i = 0; i < depth; ++i) want.push_back({paths[i], ChangeKind::kModify});
    want.push_back({paths[depth], ChangeKind::kDelete});
    CONF_OK(d.Put(second));
    CONF_ASSIGN(changes, d.Changes(second, base));
    EXPECT_EQ(Describe(Sorted(changes)), Describe(Sorted(want))) << "depth " << depth;

    CONF_OK(d.Create(third, second, Rw()));
    CONF_ASSIGN(root, d.Get(third, ""));
    want.clear();
    for (int i = 0; i < depth; ++i) want.push_back({paths[i], ChangeKind::kModify});
    for (int i = depth; i < components - 1; ++i) {
      ASSERT_EQ(::mkdir((root + paths[i]).c_str(), 0700), 0);
      want.push_back({paths[i], ChangeKind::kAdd});
    }
    CONF_OK(Apply({CreateFile(paths.back(), std::string(128, 'z'), 0600)}, root));
    want.push_back({paths.back(), ChangeKind::kAdd});
    CONF_OK(d.Put(third));
    CONF_ASSIGN(changes, d.Changes(third, second));
    EXPECT_EQ(Describe(Sorted(changes)), Describe(Sorted(want))) << "depth " << depth;
    for (const std::string& id : {third, second, base}) CONF_OK(d.Remove(id));
  }
}

void ListLayers(Env& env) {
  Driver& d = env.driver();
  std::string base = NewCacheId(), mid = NewCacheId(), upper = NewCacheId();
  CreateBase(d, base);
  CONF_OK(d.Create(mid, base, Rw()));
  CONF_OK(d.Create(upper, mid, Rw()));
  CONF_ASSIGN(auto list, d.List());
  std::sort(list.begin(), list.end());
  std::vector<std::string> want = {base, mid, upper};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(list, want);
}

// Through the store: an imported tar round-trips, and a container layer
// diff leaves the init layer's placeholders out.
void ImportDiffRoundTrip(Env& env) {
  Driver& d = env.driver();
  std::string src = NewCacheId();
  CONF_OK(d.Create(src, "", Rw()));
  CONF_ASSIGN(std::string dir, d.Get(src, ""));
  CONF_OK(Apply({CreateDir("/etc", 0755), CreateFile("/etc/os-release", "ID=test\n", 0644),
                 CreateDir("/bin", 0755), CreateFile("/bin/sh", "#!fake", 04755),
                 Symlink("sh", "/bin/bash"), Link("/bin/sh", "/bin/dash")},
                dir));
  CONF_OK(d.Put(src));
  std::string tar;
  StringSink sink(&tar);
  CONF_ASSIGN(DiffResult written, d.Diff(src, "", sink));

  StringSource source(tar);
  CONF_ASSIGN(LayerInfo layer, env.store().Import(source, {}));
  EXPECT_EQ(layer.diff_id, written.diff_id);
  EXPECT_EQ(layer.name, written.diff_id) << "a base layer's chain id is its diff id";
  CONF_ASSIGN(std::string mounted, env.store().Mount(layer.name));
  // The source layer is read through a Get of its own: after its last Put
  // a driver may have unmounted it (devicemapper, zfs).
  CONF_ASSIGN(dir, d.Get(src, ""));
  absl::Status same = CheckDirectoryEqual(dir, mounted);
  CONF_OK(d.Put(src));
  CONF_OK(env.store().Unmount(layer.name));
  CONF_OK(same);

  CreateLayerOptions rw;
  rw.init_layer = true;
  CONF_OK(env.store().Create("ctr", layer.name, rw).status());
  CONF_ASSIGN(std::string cdir, env.store().Mount("ctr"));
  struct stat st;
  bool has_hosts = ::lstat((cdir + "/etc/hosts").c_str(), &st) == 0;
  absl::Status wrote = Apply({CreateFile("/etc/motd", "hi", 0644)}, cdir);
  CONF_OK(env.store().Unmount("ctr"));
  CONF_OK(wrote);
  EXPECT_TRUE(has_hosts) << "init layer placeholders are visible in the container";
  CONF_ASSIGN(auto changes, env.store().Changes("ctr"));
  EXPECT_EQ(Describe(Sorted(changes)), "modify /etc, add /etc/motd");
  CONF_OK(env.store().Remove("ctr"));
  CONF_OK(env.store().Remove(layer.name));
  CONF_OK(d.Remove(src));  // made behind the store's back
  CONF_ASSIGN(auto report, env.store().Check(false));
  EXPECT_TRUE(report.clean()) << absl::StrJoin(report.problems, "; ");
}

struct Case {
  const char* name;
  void (*fn)(Env&);
};

constexpr Case kCases[] = {
    {"Basic", Basic},
    {"StatActive", StatActive},
    {"StatCommitted", StatCommitted},
    {"Transitivity", Transitivity},
    {"DuplicateKeys", DuplicateKeys},
    {"Update", Update},
    {"Remove", Remove},
    {"Walk", Walk},
    {"LayerFileUpdate", LayerFileUpdate},
    {"RemoveDirectoryInLowerLayer", RemoveDirectoryInLowerLayer},
    {"Chown", ChownCase},
    {"DirectoryPermissionOnCommit", DirectoryPermissionOnCommit},
    {"RemoveIntermediateSnapshot", RemoveIntermediateSnapshot},
    {"DeletedFilesInChildSnapshot", DeletedFilesInChildSnapshot},
    {"MoveFileFromLowerLayer", MoveFileFromLowerLayer},
    {"ViewReadonly", ViewReadonly},
    {"Rename", RenameCase},
    {"RootPermission", RootPermission},
    {"128LayersMount", LayersMount},
    {"CreateEmpty", CreateEmpty},
    {"CreateBase", CreateBaseCase},
    {"CreateSnap", CreateSnap},
    {"DeepLayerRead", DeepLayerRead},
    {"DiffApply", DiffApply},
    {"Changes", ChangesCase},
    {"Echo", Echo},
    {"ListLayers", ListLayers},
    {"ImportDiffRoundTrip", ImportDiffRoundTrip},
};

class ConformanceTest : public ::testing::Test {
 public:
  ConformanceTest(ConformanceTarget target, void (*fn)(Env&))
      : target_(std::move(target)), fn_(fn) {}
  void TestBody() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts)";
    absl::StatusOr<std::unique_ptr<Env>> env = Env::Create(target_);
    if (!env.ok()) {
      if (GetUnsupported(env.status()).has_value() || absl::IsFailedPrecondition(env.status())) {
        GTEST_SKIP() << target_.driver << ": " << env.status().message();
      }
      FAIL() << "setting up " << target_.driver << ": " << env.status();
    }
    fn_(**env);
  }

 private:
  ConformanceTarget target_;
  void (*fn_)(Env&);
};

}  // namespace

std::vector<std::string> ConformanceCaseNames() {
  std::vector<std::string> names;
  for (const Case& c : kCases) names.push_back(c.name);
  return names;
}

void RegisterConformanceSuite(const ConformanceTarget& target) {
  std::string suite = absl::StrCat("Conformance_", target.name);
  for (const Case& c : kCases) {
    bool known = std::find(target.known_failures.begin(), target.known_failures.end(),
                           c.name) != target.known_failures.end();
    std::string name = known ? absl::StrCat("DISABLED_", c.name) : c.name;
    ::testing::RegisterTest(suite.c_str(), name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                            [target, fn = c.fn]() -> ::testing::Test* {
                              return new ConformanceTest(target, fn);
                            });
  }
}

}  // namespace graph::testing
