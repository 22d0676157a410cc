// overlay: Docker's overlay2 layout on the kernel's overlayfs.
//
//   <root>/<id>/diff/      the layer's own files (the overlay upper dir)
//   <root>/<id>/work/      overlay work dir (read-write layers)
//   <root>/<id>/merged/    mount point of the full view
//   <root>/<id>/link       the layer's short name XXXX       (derived)
//   <root>/l/XXXX          symlink to ../<id>/diff           (derived)
//   <root>/.refs/<id>      Get/Put reference counts
//   <root>/records-home    "store" or "own": where the records are; the
//                          other way is refused (LayerRecords::ClaimHome)
//
// The layer's record (graph/records.h: the store's registry, or
// <root>/records.db without a store) holds what the driver must remember:
//   link    its short name XXXX
//   lower   "l/AAAA:l/BBBB:..." its parents' short names, nearest first
//           ("" for a base layer)
//   parent  the parent's id ("" for a base layer)
//   rw      "1" for read-write (container) layers
// The `l/` links (mount(2) option strings name layers by them) and the
// `link` files (Docker's layout, read by outside tools) are derived from the
// records: CheckDerived reports and rebuilds them. Stores of earlier
// releases kept link, lower, parent and rw as files in <root>/<id>/: the
// driver moves them into the records when it opens (one transaction).
//
// Create: record `creating` (link reserved by its l/ symlink) → the layer's
// directory made under a temporary name and renamed into place → record
// `ready`. Remove: record `removing` → unmount → directory renamed aside →
// link and directory removed → record dropped. Failpoints overlay_* sit
// between the steps; a crash at any of them leaves a record that is not
// `ready`, which Remove (the store's check --repair) or, without a store,
// the next open finishes.
//
// Mounting. The kernel takes at most 500 lower layers, and mount(2) takes at
// most one page of options. Two ways are implemented:
//  - the new mount API (fsopen/fsconfig/fsmount/move_mount) adding each
//    lower with fsconfig("lowerdir+") (Linux ≥ 6.8): no length limit, no
//    process-wide state, the default where the kernel has it;
//  - mount(2) from a thread of its own that unshare(CLONE_FS)s and chdir()s
//    to <root> first (containerd's way), naming every layer by its
//    4-character link ("l/XXXX", 7 bytes with the separator), so 500 lowers
//    take 3.5 KB and still fit one 4 KiB page with upperdir=l/XXXX and
//    workdir=l/XXXX/../work. After the unshare the working directory is that
//    thread's alone: the process's stays where it was, and no process is
//    forked from a library whose process runs other threads.
// `overlay.mount_api=auto|new|legacy` picks one (tests run both).
//
// Native diff: the upper dir is the layer's diff only while overlay keeps
// copy-ups plain: redirect_dir (renamed directories) and metacopy (metadata-
// only copy-up) must be off. They are off by default; where the module turns
// them on we pass redirect_dir=off / metacopy=off / index=off. Init probes
// this with a real mount and reports "Native Overlay Diff"; without it Diff
// and Changes fall back to the naive mount-and-compare.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/failpoint.h"
#include "base/fsutil.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "graph/archive.h"
#include "graph/driver.h"
#include "graph/drivers/mountref.h"
#include "graph/drivers/naive_diff.h"
#include "graph/fsutil.h"
#include "graph/records.h"

namespace graph {
namespace {

using base::Failpoint;

constexpr int kMaxLowers = 500;  // the kernel's OVL_MAX_STACK
constexpr int kLinkLen = 4;

std::mt19937_64& Rng() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng;
}

std::string RandomLink() {
  static const char kChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string s;
  for (int i = 0; i < kLinkLen; ++i) s.push_back(kChars[Rng()() % 36]);
  return s;
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return base::ErrnoError(errno, absl::StrCat("opening ", path));
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) return base::ErrnoError(errno, absl::StrCat("reading ", path));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::Status WriteSmallFile(const std::string& path, const std::string& data) {
  base::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return base::ErrnoError(errno, absl::StrCat("creating ", path));
  if (::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size())) {
    return base::ErrnoError(errno, absl::StrCat("writing ", path));
  }
  return absl::OkStatus();
}

absl::Status Mkdir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return base::ErrnoError(errno, absl::StrCat("creating ", path));
  }
  return absl::OkStatus();
}

bool ParamOn(const char* name) {
  absl::StatusOr<std::string> v = ReadSmallFile(absl::StrCat("/sys/module/overlay/parameters/", name));
  if (!v.ok()) return false;
  std::string s(absl::StripAsciiWhitespace(*v));
  return s == "Y" || s == "on" || s == "follow";
}

// Options that keep the upper dir a plain diff, where the module defaults
// would not.
std::vector<std::string> PlainDiffOptions() {
  std::vector<std::string> o;
  if (ParamOn("redirect_dir")) o.push_back("redirect_dir=off");
  if (ParamOn("metacopy")) o.push_back("metacopy=off");
  if (ParamOn("index")) o.push_back("index=off");
  return o;
}

// What one overlay mount needs.
struct MountPlan {
  std::vector<std::string> lowers;  // relative to root ("l/XXXX"), top first
  std::string upper, work;          // relative to root, "" for read-only
  std::vector<std::string> extra;   // redirect_dir=off, context=..., ...
  bool read_only = false;
};

// mount(2) with options relative to `root`, from a thread that has its own
// working directory (unshare(CLONE_FS)) and chdir()s there; the thread ends
// with the mount, taking its fs context with it.
absl::Status MountLegacy(const std::string& root, const MountPlan& plan, const std::string& target) {
  std::string data = absl::StrCat("lowerdir=", absl::StrJoin(plan.lowers, ":"));
  if (!plan.upper.empty()) absl::StrAppend(&data, ",upperdir=", plan.upper, ",workdir=", plan.work);
  for (const std::string& e : plan.extra) absl::StrAppend(&data, ",", e);
  long page = ::sysconf(_SC_PAGESIZE);
  if (static_cast<long>(data.size()) >= page) {
    return absl::InvalidArgumentError(absl::StrCat("overlay mount options of ", data.size(),
                                                   " bytes exceed the ", page, "-byte page"));
  }
  unsigned long flags = plan.read_only ? MS_RDONLY : 0;
  absl::Status status;
  auto mount_there = [&] {
    if (::unshare(CLONE_FS) != 0) {
      status = base::ErrnoError(errno, "unshare(CLONE_FS) for the overlay mount");
    } else if (::chdir(root.c_str()) != 0) {
      status = base::ErrnoError(errno, absl::StrCat("chdir ", root, " for the overlay mount"));
    } else if (::mount("overlay", target.c_str(), "overlay", flags, data.c_str()) != 0) {
      status = base::ErrnoError(errno, absl::StrCat("mount overlay on ", target, " (", data.size(),
                                                    " bytes of options)"));
    }
  };
  try {
    std::thread(mount_there).join();
  } catch (const std::system_error& e) {
    return base::ErrnoError(e.code().value(), "starting the overlay mount thread");
  }
  return status;
}

absl::Status FsConfig(int fd, const char* key, const std::string& value) {
  if (::fsconfig(fd, FSCONFIG_SET_STRING, key, value.c_str(), 0) != 0) {
    return base::ErrnoError(errno, absl::StrCat("fsconfig ", key, "=", value));
  }
  return absl::OkStatus();
}

// fsopen/fsconfig/fsmount/move_mount with one "lowerdir+" per layer.
absl::Status MountNewApi(const std::string& root, const MountPlan& plan, const std::string& target) {
  base::UniqueFd fs(::fsopen("overlay", FSOPEN_CLOEXEC));
  if (!fs) return base::ErrnoError(errno, "fsopen overlay");
  for (const std::string& l : plan.lowers) RETURN_IF_ERROR(FsConfig(fs.get(), "lowerdir+", absl::StrCat(root, "/", l)));
  if (!plan.upper.empty()) {
    RETURN_IF_ERROR(FsConfig(fs.get(), "upperdir", absl::StrCat(root, "/", plan.upper)));
    RETURN_IF_ERROR(FsConfig(fs.get(), "workdir", absl::StrCat(root, "/", plan.work)));
  }
  for (const std::string& e : plan.extra) {
    size_t eq = e.find('=');
    std::string key = e.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : e.substr(eq + 1);
    if (key == "context") value = std::string(absl::StripSuffix(absl::StripPrefix(value, "\""), "\""));
    RETURN_IF_ERROR(FsConfig(fs.get(), key.c_str(), value));
  }
  if (::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
    return base::ErrnoError(errno, absl::StrCat("creating overlay (", plan.lowers.size(), " lowers)"));
  }
  base::UniqueFd mnt(::fsmount(fs.get(), FSMOUNT_CLOEXEC, plan.read_only ? MOUNT_ATTR_RDONLY : 0));
  if (!mnt) return base::ErrnoError(errno, "fsmount overlay");
  if (::move_mount(mnt.get(), "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    return base::ErrnoError(errno, absl::StrCat("move_mount overlay to ", target));
  }
  return absl::OkStatus();
}

// Can fsconfig take "lowerdir+" (Linux ≥ 6.8)? Before overlayfs moved to
// the fs_context API (6.5), fsconfig accepts any key into the legacy option
// string and only creating the superblock fails, so the probe creates one:
// a read-only overlay of two empty lowers in a scratch dir under `dir`.
bool HaveLowerdirPlus(const std::string& dir) {
  std::string t = absl::StrCat(dir, "/.probe-lowerdir-", ::getpid(), "-", Rng()() % 1000000);
  if (::mkdir(t.c_str(), 0700) != 0) return false;
  bool ok = ::mkdir((t + "/a").c_str(), 0700) == 0 && ::mkdir((t + "/b").c_str(), 0700) == 0;
  if (ok) {
    base::UniqueFd fs(::fsopen("overlay", FSOPEN_CLOEXEC));
    ok = fs.valid() &&
         ::fsconfig(fs.get(), FSCONFIG_SET_STRING, "lowerdir+", (t + "/a").c_str(), 0) == 0 &&
         ::fsconfig(fs.get(), FSCONFIG_SET_STRING, "lowerdir+", (t + "/b").c_str(), 0) == 0 &&
         ::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) == 0;
  }
  ::rmdir((t + "/a").c_str());
  ::rmdir((t + "/b").c_str());
  ::rmdir(t.c_str());
  return ok;
}

absl::Status Unmount(const std::string& target) {
  if (::umount2(target.c_str(), UMOUNT_NOFOLLOW) == 0) return absl::OkStatus();
  if (errno == EINVAL || errno == ENOENT) return absl::OkStatus();  // not mounted
  if (errno == EBUSY && ::umount2(target.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) return absl::OkStatus();
  return base::ErrnoError(errno, absl::StrCat("unmounting ", target));
}

bool IsWhiteout(const struct stat& st) { return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0); }

struct ProbeResult {
  bool native_diff = false;
  std::string native_diff_reason;
};

// A real mount in a scratch dir under `dir`: overlay works here, and
// renames/chmods of lower entries leave a plain diff.
absl::StatusOr<ProbeResult> ProbeMount(const std::string& dir, bool new_api) {
  std::string t = absl::StrCat(dir, "/.probe-", ::getpid(), "-", Rng()() % 1000000);
  RETURN_IF_ERROR(Mkdir(t, 0700));
  struct Cleanup {
    std::string t;
    ~Cleanup() {
      (void)Unmount(t + "/merged");
      (void)RemoveTree(t);
    }
  } cleanup{t};
  for (const char* d : {"/l1", "/l2", "/l2/dir", "/upper", "/work", "/merged"}) RETURN_IF_ERROR(Mkdir(t + d, 0755));
  RETURN_IF_ERROR(WriteSmallFile(t + "/l2/dir/f", "x"));
  RETURN_IF_ERROR(WriteSmallFile(t + "/l2/file", "y"));
  // overlay needs d_type from the backing filesystem (xfs ftype=0 lacks it).
  {
    DIR* d = ::opendir((t + "/l2").c_str());
    if (d == nullptr) return base::ErrnoError(errno, "opendir probe dir");
    bool dtype = true;
    while (struct dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.' && e->d_type == DT_UNKNOWN) dtype = false;
    }
    ::closedir(d);
    if (!dtype) {
      return UnsupportedError(Unsupported::kKernelLacksFeature,
                              absl::StrCat("the filesystem under ", dir, " does not report d_type"));
    }
  }
  MountPlan plan;
  plan.lowers = {"l1", "l2"};
  plan.upper = "upper";
  plan.work = "work";
  plan.extra = PlainDiffOptions();
  RETURN_IF_ERROR(new_api ? MountNewApi(t, plan, t + "/merged") : MountLegacy(t, plan, t + "/merged"));
  ProbeResult r;
  r.native_diff = true;
  if (::rename((t + "/merged/dir").c_str(), (t + "/merged/dir2").c_str()) == 0) {
    char v[256];
    if (::getxattr((t + "/upper/dir2").c_str(), "trusted.overlay.redirect", v, sizeof v) >= 0) {
      r.native_diff = false;
      r.native_diff_reason = "redirect_dir is on";
    }
  }
  if (::chmod((t + "/merged/file").c_str(), 0600) == 0) {
    char v[256];
    if (::getxattr((t + "/upper/file").c_str(), "trusted.overlay.metacopy", v, sizeof v) >= 0) {
      r.native_diff = false;
      r.native_diff_reason = "metacopy is on";
    }
  }
  return r;
}

std::string NearestExisting(std::string path) {
  struct stat st;
  while (!path.empty() && ::stat(path.c_str(), &st) != 0) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    path = slash == 0 ? "/" : path.substr(0, slash);
  }
  return path.empty() ? "." : path;
}

// A successful probe's answer holds for the rest of the boot on the same
// filesystem with the same module parameters: it is kept in memory for the
// process and in <root>/.probe for the next processes (a cache, written
// without fsync; a store open then mounts nothing, ~10 ms less). The key
// names what the answer depends on; any change of it probes again.
constexpr char kProbeCache[] = "/.probe";

std::string ProbeKey(const std::string& where, const std::string& api) {
  absl::StatusOr<std::string> boot = ReadSmallFile("/proc/sys/kernel/random/boot_id");
  struct stat st;
  if (!boot.ok() || ::stat(where.c_str(), &st) != 0) return "";
  return absl::StrCat("boot=", absl::StripAsciiWhitespace(*boot), " dev=", st.st_dev, " api=", api,
                      " plain=", absl::StrJoin(PlainDiffOptions(), ","));
}

struct CachedProbe {
  bool new_api = false;
  ProbeResult result;
};

std::mutex& ProbeMemoMu() {
  static std::mutex mu;
  return mu;
}
std::map<std::string, CachedProbe>& ProbeMemo() {
  static auto* memo = new std::map<std::string, CachedProbe>;
  return *memo;
}

// Remembers `c` in memory and, unless `dir` is "", in its file.
void SaveProbe(const std::string& key, const std::string& dir, const CachedProbe& c) {
  {
    std::lock_guard<std::mutex> l(ProbeMemoMu());
    ProbeMemo()[key] = c;
  }
  if (dir.empty()) return;
  std::string text = absl::StrCat(key, "\n", c.new_api ? "1" : "0", " ", c.result.native_diff ? "1" : "0", "\n",
                                   c.result.native_diff_reason);
  // Failing (a full disk), the next open probes again.
  (void)base::WriteFileAtomic(dir + kProbeCache, text, /*durable=*/false, 0644);
}

// From `dir`'s file ("KEY\nNEW_API NATIVE_DIFF\nREASON", as SaveProbe
// writes it), else from memory (then written to `dir`; "" = memory only).
std::optional<CachedProbe> LoadProbe(const std::string& key, const std::string& dir) {
  if (!dir.empty()) {
    absl::StatusOr<std::string> text = ReadSmallFile(dir + kProbeCache);
    std::vector<std::string> lines;
    if (text.ok()) lines = absl::StrSplit(*text, absl::MaxSplits('\n', 2));
    if (lines.size() == 3 && lines[0] == key && lines[1].size() == 3 && lines[1][1] == ' ') {
      CachedProbe c;
      c.new_api = lines[1][0] == '1';
      c.result.native_diff = lines[1][2] == '1';
      c.result.native_diff_reason = lines[2];
      return c;
    }
  }
  std::optional<CachedProbe> c;
  {
    std::lock_guard<std::mutex> l(ProbeMemoMu());
    auto it = ProbeMemo().find(key);
    if (it != ProbeMemo().end()) c = it->second;
  }
  if (c.has_value()) SaveProbe(key, dir, *c);
  return c;
}

absl::Status ProbeOverlay(const DriverOptions& o, bool* new_api_out, ProbeResult* result_out) {
  if (::geteuid() != 0) return UnsupportedError(Unsupported::kPrivilege, "overlay mounts need root (CAP_SYS_ADMIN)");
  std::string where = NearestExisting(o.root);
  absl::StatusOr<std::string> fs = BackingFsName(where);
  if (fs.ok() && (*fs == "overlayfs" || *fs == "aufs" || *fs == "v9fs" || *fs == "nfs")) {
    return UnsupportedError(Unsupported::kBackingFilesystem,
                            absl::StrCat(where, " is on ", *fs, ", which cannot hold overlay upper layers"));
  }
  std::string api = "auto";
  auto it = o.options.find("overlay.mount_api");
  if (it != o.options.end()) api = it->second;
  // Only the driver's own directory keeps the answer (where == o.root once
  // the store exists); a new store's first probe is remembered in memory.
  std::string key = ProbeKey(where, api);
  std::string cache_dir = where == o.root ? where : "";
  if (!key.empty()) {
    if (std::optional<CachedProbe> cached = LoadProbe(key, cache_dir); cached.has_value()) {
      if (new_api_out != nullptr) *new_api_out = cached->new_api;
      if (result_out != nullptr) *result_out = cached->result;
      return absl::OkStatus();
    }
  }
  absl::StatusOr<std::string> filesystems = ReadSmallFile("/proc/filesystems");
  bool listed = filesystems.ok() && absl::StrContains(*filesystems, "\toverlay\n");
  bool new_api = api == "new" || (api == "auto" && HaveLowerdirPlus(where));
  if (api == "new" && !HaveLowerdirPlus(where)) {
    return UnsupportedError(Unsupported::kKernelLacksFeature, "fsconfig lowerdir+ needs Linux 6.8 or later");
  }
  absl::StatusOr<ProbeResult> probe = ProbeMount(where, new_api);
  if (!probe.ok() && GetUnsupported(probe.status()).has_value()) return probe.status();
  if (!probe.ok()) {
    if (!listed || base::HasErrno(probe.status(), ENODEV)) {
      return UnsupportedError(Unsupported::kKernelLacksFilesystem,
                              absl::StrCat("the kernel has no overlay filesystem (", probe.status().message(), ")"));
    }
    return UnsupportedError(Unsupported::kBackingFilesystem,
                            absl::StrCat("test mount under ", where, " failed: ", probe.status().message()));
  }
  if (!key.empty()) SaveProbe(key, cache_dir, CachedProbe{new_api, *probe});
  if (new_api_out != nullptr) *new_api_out = new_api;
  if (result_out != nullptr) *result_out = *probe;
  return absl::OkStatus();
}

class OverlayDriver : public Driver {
 public:
  OverlayDriver(std::string root, bool new_api, ProbeResult probe, std::shared_ptr<LayerRecords> records,
                bool own_records)
      : root_(std::move(root)), new_api_(new_api), probe_(std::move(probe)),
        refs_(absl::StrCat(root_, "/.refs")), plain_options_(PlainDiffOptions()),
        records_(std::move(records)), own_records_(own_records) {}

  absl::Status Init() {
    // mkdir -p the root.
    for (size_t pos = 1; pos != std::string::npos;) {
      pos = root_.find('/', pos + 1);
      RETURN_IF_ERROR(Mkdir(root_.substr(0, pos), 0700));
    }
    RETURN_IF_ERROR(Mkdir(absl::StrCat(root_, "/l"), 0700));
    // Reap the temporaries of half-created / half-removed layers.
    DIR* d = ::opendir(root_.c_str());
    if (d == nullptr) return base::ErrnoError(errno, absl::StrCat("opendir ", root_));
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
    ::closedir(d);
    for (const std::string& n : names) {
      if (absl::StartsWith(n, ".create-") || absl::StartsWith(n, ".remove-")) {
        (void)Unmount(absl::StrCat(root_, "/", n, "/merged"));
        (void)RemoveTree(absl::StrCat(root_, "/", n));
      }
    }
    RETURN_IF_ERROR(MigrateFileRecords(names));
    if (own_records_) {
      // Without a store nobody else finishes what a crash interrupted, and
      // no check rebuilds the derived files: the open does both.
      ASSIGN_OR_RETURN(std::vector<LayerRecord> all, records_->List());
      for (const LayerRecord& r : all) {
        if (r.state != RecordState::kReady) (void)Remove(r.id);
      }
      std::vector<std::string> problems, repaired;
      RETURN_IF_ERROR(CheckDerived(/*repair=*/true, &problems, &repaired));
    }
    return absl::OkStatus();
  }

  std::string Name() const override { return "overlay"; }

  absl::Status Create(const std::string& id, const std::string& parent, const CreateOptions& options) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (id == "l" || id[0] == '.') {
      return absl::InvalidArgumentError(absl::StrCat("overlay: layer id \"", id, "\" is reserved"));
    }
    for (const auto& kv : options.storage_options) {
      return absl::InvalidArgumentError(absl::StrCat("overlay: unsupported storage option \"", kv.first, "\""));
    }
    ASSIGN_OR_RETURN(std::optional<LayerRecord> existing, records_->Get(id));
    if (existing || DirExists(id)) return absl::AlreadyExistsError(absl::StrCat("layer ", id, " already exists"));
    std::string lower;
    if (!parent.empty()) {
      RETURN_IF_ERROR(ValidateLayerId(parent));
      absl::StatusOr<LayerRecord> p = records_->GetReady(parent);
      if (!p.ok() || !DirExists(parent)) {
        return absl::NotFoundError(absl::StrCat("parent layer ", parent, " does not exist"));
      }
      lower = absl::StrCat("l/", p->Field("link"));
      std::string plower = p->Field("lower");
      if (!plower.empty()) absl::StrAppend(&lower, ":", plower);
      size_t depth = static_cast<size_t>(std::count(lower.begin(), lower.end(), ':')) + 1;
      size_t needed = depth + (options.read_write ? 0 : 1);
      if (needed > static_cast<size_t>(kMaxLowers)) {
        return absl::InvalidArgumentError(absl::StrCat("overlay: a stack of ", needed,
                                                       " lower layers exceeds the kernel's limit of ", kMaxLowers));
      }
    }
    std::map<std::string, std::string> fields = {
        {"lower", lower}, {"parent", parent}, {"rw", options.read_write ? "1" : "0"}};
    // Intent first, naming the short link; the l/ symlink reserves it
    // (a link another layer took: drop the intent and pick again).
    for (int attempt = 0;; ++attempt) {
      fields["link"] = RandomLink();
      RETURN_IF_ERROR(records_->Begin(id, fields));
      Failpoint("overlay_create_after_intent");
      std::string lp = absl::StrCat(root_, "/l/", fields["link"]);
      if (::symlink(absl::StrCat("../", id, "/diff").c_str(), lp.c_str()) == 0) break;
      absl::Status s = base::ErrnoError(errno, absl::StrCat("creating ", lp));
      (void)records_->Drop(id);
      if (!base::HasErrno(s, EEXIST) || attempt > 1000) return s;
    }
    Failpoint("overlay_create_after_link");
    const std::string& link = fields["link"];
    std::string tmp = absl::StrCat(root_, "/.create-", id, "-", Rng()() % 1000000000);
    absl::Status s = [&]() -> absl::Status {
      RETURN_IF_ERROR(Mkdir(tmp, 0700));
      RETURN_IF_ERROR(Mkdir(tmp + "/diff", 0755));
      if (!parent.empty()) {
        // overlayfs takes the merged root's mode and owner from the topmost
        // layer: a child's diff root starts as its parent's, or a chmod of
        // the parent's root would be undone in every child.
        struct stat pst;
        std::string pdiff = Path(parent, "diff");
        if (::stat(pdiff.c_str(), &pst) != 0) return base::ErrnoError(errno, absl::StrCat("stat ", pdiff));
        if (::chown((tmp + "/diff").c_str(), pst.st_uid, pst.st_gid) != 0 ||
            ::chmod((tmp + "/diff").c_str(), pst.st_mode & 07777) != 0) {
          return base::ErrnoError(errno, absl::StrCat("copying the root's owner and mode from ", pdiff));
        }
      }
      if (!parent.empty() || options.read_write) {
        RETURN_IF_ERROR(Mkdir(tmp + "/work", 0700));
        RETURN_IF_ERROR(Mkdir(tmp + "/merged", 0700));
      }
      RETURN_IF_ERROR(WriteSmallFile(tmp + "/link", link));  // derived (Docker's layout)
      if (::rename(tmp.c_str(), Path(id, "").c_str()) != 0) return base::ErrnoError(errno, "publishing layer");
      Failpoint("overlay_create_after_publish");
      return records_->Ready(id, fields);
    }();
    if (!s.ok()) {
      (void)RemoveTree(tmp);
      (void)Remove(id);  // the published directory, the link, the record
    }
    return s;
  }

  // Finishes whatever state the record is in; a directory no record owns
  // (check --prune) goes too.
  absl::Status Remove(const std::string& id) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    ASSIGN_OR_RETURN(std::optional<LayerRecord> r, records_->Get(id));
    if (!r && !DirExists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
    if (r && r->state != RecordState::kRemoving) RETURN_IF_ERROR(records_->Removing(id));
    Failpoint("overlay_remove_after_intent");
    std::string merged = Path(id, "merged");
    RETURN_IF_ERROR(refs_.Reset(id, [&] { return Unmount(merged); }));
    RETURN_IF_ERROR(Unmount(merged));
    if (DirExists(id)) {
      std::string doomed = absl::StrCat(root_, "/.remove-", id, "-", Rng()() % 1000000000);
      if (::rename(Path(id, "").c_str(), doomed.c_str()) != 0) {
        return base::ErrnoError(errno, "hiding layer for removal");
      }
      Failpoint("overlay_remove_after_hide");
      RETURN_IF_ERROR(RemoveTree(doomed));
    }
    if (r) {
      // Only the link that is ours (a crash before the symlink was made
      // may have left the name to another layer).
      std::string lp = absl::StrCat(root_, "/l/", r->Field("link"));
      if (!r->Field("link").empty() && LinkTarget(lp) == absl::StrCat("../", id, "/diff")) {
        (void)::unlink(lp.c_str());
      }
      Failpoint("overlay_remove_after_tree");
      RETURN_IF_ERROR(records_->Drop(id));
    }
    return absl::OkStatus();
  }

  // Compares l/ links and <id>/link files with the records.
  absl::Status CheckDerived(bool repair, std::vector<std::string>* problems,
                            std::vector<std::string>* repaired) override {
    // The links first, then the records: a create records its link before
    // it makes the symlink, so every link listed here that a live create
    // made is owned by a record read after.
    DIR* d = ::opendir(absl::StrCat(root_, "/l").c_str());
    if (d == nullptr) return base::ErrnoError(errno, absl::StrCat("opendir ", root_, "/l"));
    std::vector<std::string> links;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") links.push_back(n);
    }
    ::closedir(d);
    ASSIGN_OR_RETURN(std::vector<LayerRecord> all, records_->List());
    std::set<std::string> owned;
    for (const LayerRecord& r : all) {
      std::string link = r.Field("link");
      owned.insert(link);
      if (r.state != RecordState::kReady || !DirExists(r.id)) continue;
      std::string lp = absl::StrCat(root_, "/l/", link);
      std::string want = absl::StrCat("../", r.id, "/diff");
      if (LinkTarget(lp) != want) {
        problems->push_back(absl::StrCat("overlay: layer ", r.id, ": link ", lp, " is missing or wrong",
                                         repair ? "" : " (check --repair rebuilds it)"));
        if (repair) {
          (void)::unlink(lp.c_str());
          if (::symlink(want.c_str(), lp.c_str()) == 0) {
            repaired->push_back(absl::StrCat("overlay: rebuilt link ", lp));
          } else {
            problems->push_back(base::ErrnoError(errno, absl::StrCat("overlay: creating ", lp)).ToString());
          }
        }
      }
      absl::StatusOr<std::string> file = ReadSmallFile(Path(r.id, "link"));
      if (!file.ok() || *file != link) {
        problems->push_back(absl::StrCat("overlay: layer ", r.id, ": ", Path(r.id, "link"), " is missing or wrong",
                                         repair ? "" : " (check --repair rebuilds it)"));
        if (repair) {
          absl::Status w = WriteSmallFile(Path(r.id, "link"), link);
          if (w.ok()) {
            repaired->push_back(absl::StrCat("overlay: rebuilt ", Path(r.id, "link")));
          } else {
            problems->push_back(std::string(w.message()));
          }
        }
      }
    }
    // Links no record owns (left by a crash of a release without records).
    for (const std::string& n : links) {
      if (owned.count(n) != 0) continue;
      std::string lp = absl::StrCat(root_, "/l/", n);
      problems->push_back(absl::StrCat("overlay: link ", lp, " belongs to no layer",
                                       repair ? "" : " (check --repair removes it)"));
      if (repair && ::unlink(lp.c_str()) == 0) repaired->push_back(absl::StrCat("overlay: removed link ", lp));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> Get(const std::string& id, const std::string& mount_label) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
    ASSIGN_OR_RETURN(MountPlan plan, Plan(id, mount_label));
    if (plan.lowers.empty()) {
      // A base layer: its diff is its full view.
      RETURN_IF_ERROR(refs_.Acquire(id, [] { return true; }, [] { return absl::OkStatus(); }));
      return Path(id, "diff");
    }
    std::string merged = Path(id, "merged");
    RETURN_IF_ERROR(refs_.Acquire(
        id,
        [&] {
          absl::StatusOr<bool> m = IsMountPoint(merged);
          return m.ok() && *m;
        },
        [&]() -> absl::Status {
          absl::StatusOr<bool> m = IsMountPoint(merged);
          if (m.ok() && *m) RETURN_IF_ERROR(Unmount(merged));  // stale mount from a crashed owner
          return new_api_ ? MountNewApi(root_, plan, merged) : MountLegacy(root_, plan, merged);
        }));
    return merged;
  }

  absl::Status Put(const std::string& id) override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    std::string merged = Path(id, "merged");
    bool has_mount = HasMount(id);
    return refs_.Release(id, [&] { return has_mount ? Unmount(merged) : absl::OkStatus(); });
  }

  absl::StatusOr<int> MountCount(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    // A base layer's view is its diff dir (no mount to go stale).
    absl::StatusOr<std::optional<LayerRecord>> r = records_->Get(id);
    if (!r.ok() || !r->has_value() || (**r).Field("lower").empty()) return refs_.Count(id);
    return refs_.Live(id, [&] { return HasMount(id); });
  }

  // A ready record and its directory.
  bool Exists(const std::string& id) const override {
    if (!ValidateLayerId(id).ok() || !DirExists(id)) return false;
    return records_->GetReady(id).ok();
  }

  // Ready layers, and directories that look like layers but no record owns
  // (for check; Remove deletes them).
  absl::StatusOr<std::vector<std::string>> List() const override {
    ASSIGN_OR_RETURN(std::vector<LayerRecord> all, records_->List());
    std::set<std::string> recorded, out;
    for (const LayerRecord& r : all) {
      recorded.insert(r.id);
      if (r.state == RecordState::kReady && DirExists(r.id)) out.insert(r.id);
    }
    DIR* d = ::opendir(root_.c_str());
    if (d == nullptr) return base::ErrnoError(errno, absl::StrCat("opendir ", root_));
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n == "l" || absl::StartsWith(n, ".") || !ValidateLayerId(n).ok()) continue;
      if (recorded.count(n) == 0 && DirExists(n)) out.insert(n);
    }
    ::closedir(d);
    return std::vector<std::string>(out.begin(), out.end());
  }

  std::vector<std::pair<std::string, std::string>> Status() const override {
    absl::StatusOr<std::string> fs = BackingFsName(root_);
    return {
        {"Backing Filesystem", fs.ok() ? *fs : "unknown"},
        {"Supports d_type", "true"},
        {"Native Overlay Diff", probe_.native_diff ? "true" : absl::StrCat("false (", probe_.native_diff_reason, ")")},
        {"Mount API", new_api_ ? "fsconfig lowerdir+" : "mount(2) with short l/ links"},
        {"Max Lower Layers", std::to_string(kMaxLowers)},
    };
  }

  absl::StatusOr<std::map<std::string, std::string>> Metadata(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
    std::map<std::string, std::string> m;
    m["UpperDir"] = Path(id, "diff");
    ASSIGN_OR_RETURN(std::vector<std::string> lowers, LowerDirs(id));
    if (!lowers.empty()) {
      m["LowerDir"] = absl::StrJoin(lowers, ":");
      m["MergedDir"] = Path(id, "merged");
      if (IsRw(id)) m["WorkDir"] = Path(id, "work");
    }
    return m;
  }

  absl::Status Cleanup() override {
    ASSIGN_OR_RETURN(std::vector<std::string> ids, List());
    absl::Status first;
    for (const std::string& id : ids) {
      std::string merged = Path(id, "merged");
      absl::Status s = refs_.Reset(id, [&] { return Unmount(merged); });
      if (s.ok()) s = Unmount(merged);
      if (!s.ok() && first.ok()) first = s;
    }
    return first;
  }

  absl::StatusOr<DiffResult> Diff(const std::string& id, const std::string& parent, ByteSink& sink) override {
    if (!UseNative(id, parent)) return NaiveDiff(*this, id, parent, sink);
    ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDiff(id));
    return WriteLayerTree(fd.get(), WhiteoutFormat::kOverlay, sink);
  }

  absl::StatusOr<ApplyDiffResult> ApplyDiff(const std::string& id, const std::string& parent,
                                            ByteSource& source) override {
    (void)parent;
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
    ASSIGN_OR_RETURN(base::UniqueFd fd, OpenDiff(id));
    ApplyOptions o;
    o.whiteouts = WhiteoutFormat::kOverlay;
    return ApplyLayer(fd.get(), source, o);
  }

  absl::StatusOr<std::vector<Change>> Changes(const std::string& id, const std::string& parent) override {
    if (!UseNative(id, parent)) return NaiveChanges(*this, id, parent);
    ASSIGN_OR_RETURN(std::vector<std::string> lowers, LowerDirs(id));
    std::vector<Change> out;
    RETURN_IF_ERROR(NativeChanges(Path(id, "diff"), lowers, "", out));
    std::sort(out.begin(), out.end(), [](const Change& a, const Change& b) { return a.path < b.path; });
    return out;
  }

  // Usage: a walk of the upper (diff) dir.
  absl::StatusOr<DiskUsage> Usage(const std::string& id, const std::string&) override {
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " not found"));
    return TreeUsage(Path(id, "diff"));
  }

  absl::StatusOr<int64_t> DiffSize(const std::string& id, const std::string& parent) override {
    if (!UseNative(id, parent)) return NaiveDiffSize(*this, id, parent);
    ASSIGN_OR_RETURN(std::vector<Change> changes, Changes(id, parent));
    return ChangesSize(Path(id, "diff"), changes);
  }

  absl::StatusOr<std::vector<MountSpec>> Mounts(const std::string& id) const override {
    RETURN_IF_ERROR(ValidateLayerId(id));
    if (!Exists(id)) return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
    ASSIGN_OR_RETURN(MountPlan plan, Plan(id, ""));
    if (plan.lowers.empty()) {
      return std::vector<MountSpec>{{"bind", Path(id, "diff"), "", {"rbind", IsRw(id) ? "rw" : "ro"}}};
    }
    std::vector<std::string> lowers;
    for (const std::string& l : plan.lowers) lowers.push_back(absl::StrCat(root_, "/", l));
    MountSpec m{"overlay", "overlay", "", {}};
    m.options.push_back(absl::StrCat("lowerdir=", absl::StrJoin(lowers, ":")));
    if (!plan.upper.empty()) {
      m.options.push_back(absl::StrCat("upperdir=", Path(id, "diff")));
      m.options.push_back(absl::StrCat("workdir=", Path(id, "work")));
    } else {
      m.options.push_back("ro");
    }
    for (const std::string& e : plan.extra) m.options.push_back(e);
    return std::vector<MountSpec>{m};
  }

 private:
  std::string Path(const std::string& id, const std::string& rel) const {
    return rel.empty() ? absl::StrCat(root_, "/", id) : absl::StrCat(root_, "/", id, "/", rel);
  }
  bool IsRw(const std::string& id) const {
    absl::StatusOr<LayerRecord> r = records_->GetReady(id);
    return r.ok() && r->Field("rw") == "1";
  }
  bool DirExists(const std::string& id) const {
    struct stat st;
    return ::lstat(Path(id, "diff").c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }
  // The target of symlink `path`, "" if it is none.
  static std::string LinkTarget(const std::string& path) {
    char buf[4096];
    ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    return n < 0 ? std::string() : std::string(buf, static_cast<size_t>(n));
  }

  // A previous release kept each layer's link, lower, parent and rw in
  // files under <root>/<id>/: moved into the records in one transaction
  // (the files go once it has committed; `link` stays, derived).
  // Only directories without a record are read (the ids come from the
  // records' index): an open of a store whose layers all have one reads no
  // layer's files.
  absl::Status MigrateFileRecords(const std::vector<std::string>& names) {
    ASSIGN_OR_RETURN(std::set<std::string> recorded, records_->Ids());
    std::vector<LayerRecord> found;
    for (const std::string& n : names) {
      if (n == "l" || absl::StartsWith(n, ".") || recorded.count(n) != 0 || !ValidateLayerId(n).ok() ||
          !DirExists(n)) {
        continue;
      }
      absl::StatusOr<std::string> link = ReadSmallFile(Path(n, "link"));
      if (!link.ok() || link->empty()) continue;
      absl::StatusOr<std::string> lower = ReadSmallFile(Path(n, "lower"));
      absl::StatusOr<std::string> parent = ReadSmallFile(Path(n, "parent"));
      struct stat st;
      bool legacy = lower.ok() || parent.ok() || ::lstat(Path(n, "rw").c_str(), &st) == 0;
      if (!legacy) continue;
      LayerRecord r;
      r.id = n;
      r.state = RecordState::kReady;
      r.fields = {{"link", *link},
                  {"lower", lower.ok() ? *lower : ""},
                  {"parent", parent.ok() ? *parent : ""},
                  {"rw", ::lstat(Path(n, "rw").c_str(), &st) == 0 ? "1" : "0"}};
      found.push_back(std::move(r));
    }
    if (found.empty()) return absl::OkStatus();
    RETURN_IF_ERROR(base::Annotate(records_->Migrate(found),
                                   absl::StrCat("overlay: moving the layer records of ", root_, " into ",
                                                records_->path())));
    for (const LayerRecord& r : found) {
      for (const char* f : {"lower", "parent", "rw"}) (void)::unlink(Path(r.id, f).c_str());
    }
    return absl::OkStatus();
  }
  bool HasMount(const std::string& id) const {
    absl::StatusOr<bool> m = IsMountPoint(Path(id, "merged"));
    return m.ok() && *m;
  }

  absl::StatusOr<MountPlan> Plan(const std::string& id, const std::string& mount_label) const {
    MountPlan plan;
    ASSIGN_OR_RETURN(LayerRecord r, records_->GetReady(id));
    std::string lower = r.Field("lower");
    if (!lower.empty()) {
      for (absl::string_view l : absl::StrSplit(lower, ':')) plan.lowers.emplace_back(l);
    }
    if (plan.lowers.empty()) return plan;
    std::string link = r.Field("link");
    if (r.Field("rw") == "1") {
      plan.upper = absl::StrCat("l/", link);
      plan.work = absl::StrCat("l/", link, "/../work");
    } else {
      plan.lowers.insert(plan.lowers.begin(), absl::StrCat("l/", link));
      plan.read_only = true;
    }
    plan.extra = plain_options_;
    if (!mount_label.empty()) plan.extra.push_back(absl::StrCat("context=\"", mount_label, "\""));
    return plan;
  }

  // Absolute diff dirs of the parents, nearest first.
  absl::StatusOr<std::vector<std::string>> LowerDirs(const std::string& id) const {
    std::vector<std::string> out;
    ASSIGN_OR_RETURN(LayerRecord r, records_->GetReady(id));
    std::string lower = r.Field("lower");
    if (lower.empty()) return out;
    for (absl::string_view l : absl::StrSplit(lower, ':')) {
      std::string lp = absl::StrCat(root_, "/", l);
      char buf[4096];
      ssize_t n = ::readlink(lp.c_str(), buf, sizeof buf);
      if (n < 0) return base::ErrnoError(errno, absl::StrCat("reading link ", lp));
      std::string target(buf, static_cast<size_t>(n));  // "../<id>/diff"
      out.push_back(absl::StrCat(root_, "/", absl::StripPrefix(target, "../")));
    }
    return out;
  }

  bool UseNative(const std::string& id, const std::string& parent) const {
    if (!probe_.native_diff || !DirExists(id)) return false;
    absl::StatusOr<LayerRecord> r = records_->GetReady(id);
    return r.ok() && r->Field("parent") == parent;
  }

  absl::StatusOr<base::UniqueFd> OpenDiff(const std::string& id) const {
    base::UniqueFd fd(::open(Path(id, "diff").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return base::ErrnoError(errno, absl::StrCat("opening diff of ", id));
    return fd;
  }

  // Changes from the upper dir: whiteouts are deletions; an entry is added
  // or modified depending on whether a lower layer has it; an opaque
  // directory deletes what the lowers had below it.
  static absl::Status NativeChanges(const std::string& upper, const std::vector<std::string>& lowers,
                                    const std::string& rel, std::vector<Change>& out) {
    std::string dir = rel.empty() ? upper : absl::StrCat(upper, "/", rel);
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return base::ErrnoError(errno, absl::StrCat("opendir ", dir));
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) {
      std::string path = rel.empty() ? n : absl::StrCat(rel, "/", n);
      struct stat st;
      if (::lstat(absl::StrCat(upper, "/", path).c_str(), &st) != 0) continue;
      if (IsWhiteout(st)) {
        out.push_back({absl::StrCat("/", path), ChangeKind::kDelete});
        continue;
      }
      bool in_lower = InLowers(lowers, path);
      out.push_back({absl::StrCat("/", path), in_lower ? ChangeKind::kModify : ChangeKind::kAdd});
      if (S_ISDIR(st.st_mode)) {
        char v[4];
        bool opaque = ::getxattr(absl::StrCat(upper, "/", path).c_str(), "trusted.overlay.opaque", v, sizeof v) == 1 &&
                      v[0] == 'y';
        if (opaque && in_lower) {
          std::set<std::string> hidden;
          for (const std::string& l : lowers) {
            DIR* ld = ::opendir(absl::StrCat(l, "/", path).c_str());
            if (ld == nullptr) continue;
            while (struct dirent* e = ::readdir(ld)) {
              std::string ln = e->d_name;
              if (ln != "." && ln != "..") hidden.insert(ln);
            }
            ::closedir(ld);
          }
          std::set<std::string> upper_kids;
          DIR* ud = ::opendir(absl::StrCat(upper, "/", path).c_str());
          if (ud != nullptr) {
            while (struct dirent* e = ::readdir(ud)) upper_kids.insert(e->d_name);
            ::closedir(ud);
          }
          for (const std::string& h : hidden) {
            if (!upper_kids.count(h)) out.push_back({absl::StrCat("/", path, "/", h), ChangeKind::kDelete});
          }
        }
        RETURN_IF_ERROR(NativeChanges(upper, lowers, path, out));
      }
    }
    return absl::OkStatus();
  }

  // Is `path` visible in the merged view of `lowers` (topmost first)? As
  // overlayfs resolves it: a lower that has a whiteout or a non-directory at
  // an ancestor hides the path, one with an opaque ancestor directory hides
  // everything below it, and the first lower that has the path decides.
  static bool InLowers(const std::vector<std::string>& lowers, const std::string& path) {
    std::vector<std::string> ancestors;
    for (size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
      ancestors.push_back(path.substr(0, slash));
    }
    for (const std::string& l : lowers) {
      bool opaque_ancestor = false;
      for (const std::string& a : ancestors) {
        struct stat st;
        std::string p = absl::StrCat(l, "/", a);
        if (::lstat(p.c_str(), &st) != 0) break;  // nothing deeper in this layer
        if (!S_ISDIR(st.st_mode)) return false;  // whiteout or file over the ancestor
        char v[4];
        if (::getxattr(p.c_str(), "trusted.overlay.opaque", v, sizeof v) == 1 && v[0] == 'y') {
          opaque_ancestor = true;
        }
      }
      struct stat st;
      if (::lstat(absl::StrCat(l, "/", path).c_str(), &st) == 0) return !IsWhiteout(st);
      if (opaque_ancestor) return false;  // layers below are hidden here
    }
    return false;
  }

  std::string root_;
  bool new_api_;
  ProbeResult probe_;
  MountRefs refs_;
  std::vector<std::string> plain_options_;
  std::shared_ptr<LayerRecords> records_;
  bool own_records_;
};

}  // namespace

DriverInfo OverlayDriverInfo() {
  DriverInfo info;
  info.name = "overlay";
  info.priority = 10;
  info.probe = [](const DriverOptions& o) { return ProbeOverlay(o, nullptr, nullptr); };
  info.create = [](const DriverOptions& o) -> absl::StatusOr<std::unique_ptr<Driver>> {
    for (const auto& kv : o.options) {
      if (kv.first != "overlay.mount_api") {
        return absl::InvalidArgumentError(absl::StrCat("overlay: unknown option \"", kv.first, "\""));
      }
      if (kv.second != "auto" && kv.second != "new" && kv.second != "legacy") {
        return absl::InvalidArgumentError("overlay.mount_api must be auto, new or legacy");
      }
    }
    bool new_api = false;
    ProbeResult probe;
    RETURN_IF_ERROR(ProbeOverlay(o, &new_api, &probe));
    RETURN_IF_ERROR(LayerRecords::ClaimHome(o.root, o.records == nullptr, "overlay"));
    ASSIGN_OR_RETURN(std::shared_ptr<LayerRecords> records, LayerRecords::ForDriver(o.root, o.records));
    auto d = std::make_unique<OverlayDriver>(o.root, new_api, probe, std::move(records), o.records == nullptr);
    RETURN_IF_ERROR(d->Init());
    return std::unique_ptr<Driver>(std::move(d));
  };
  return info;
}

}  // namespace graph
