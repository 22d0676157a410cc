#include "graph/drivers/naive_diff.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "graph/fsutil.h"

namespace graph {
namespace {

using Child = DirEntry;

// Sorted children of `rel` under `root`; empty if `rel` does not exist or is
// not a directory there.
absl::StatusOr<std::vector<Child>> List(int root, const std::string& rel) {
  auto listed = ListDirBeneath(root, rel);
  if (!listed.ok() && (base::HasErrno(listed.status(), ENOENT) ||
                       base::HasErrno(listed.status(), ENOTDIR)))
    return std::vector<Child>();
  return listed;
}

std::map<std::string, std::string> Xattrs(int root, const std::string& rel) {
  std::map<std::string, std::string> out;
  base::UniqueFd fd(OpenBeneath(root, rel, O_PATH | O_NOFOLLOW));
  if (!fd) return out;
  std::string proc = absl::StrCat("/proc/self/fd/", fd.get());
  char names[8192];
  ssize_t n = ::llistxattr(proc.c_str(), names, sizeof names);
  for (ssize_t pos = 0; pos < n;) {
    std::string key(names + pos);
    pos += static_cast<ssize_t>(key.size()) + 1;
    char value[8192];
    ssize_t v = ::lgetxattr(proc.c_str(), key.c_str(), value, sizeof value);
    if (v >= 0) out[key] = std::string(value, static_cast<size_t>(v));
  }
  return out;
}

std::string ReadLink(int root, const std::string& rel) {
  size_t slash = rel.rfind('/');
  std::string parent = slash == std::string::npos ? "" : rel.substr(0, slash);
  std::string leaf = slash == std::string::npos ? rel : rel.substr(slash + 1);
  base::UniqueFd dir(OpenBeneath(root, parent, O_PATH | O_DIRECTORY));
  if (!dir) return "";
  char buf[4096];
  ssize_t n = ::readlinkat(dir.get(), leaf.c_str(), buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

bool Differs(int nroot, int oroot, const std::string& rel, const struct stat& n, const struct stat& o) {
  if (n.st_mode != o.st_mode || n.st_uid != o.st_uid || n.st_gid != o.st_gid) return true;
  if ((S_ISCHR(n.st_mode) || S_ISBLK(n.st_mode)) && n.st_rdev != o.st_rdev) return true;
  if (!S_ISDIR(n.st_mode)) {
    if (n.st_size != o.st_size || n.st_mtim.tv_sec != o.st_mtim.tv_sec ||
        n.st_mtim.tv_nsec != o.st_mtim.tv_nsec) {
      return true;
    }
  }
  if (S_ISLNK(n.st_mode) && ReadLink(nroot, rel) != ReadLink(oroot, rel)) return true;
  return Xattrs(nroot, rel) != Xattrs(oroot, rel);
}

// Appends the changes under `rel`; returns whether there were any.
absl::StatusOr<bool> Walk(int nroot, int oroot, const std::string& rel, std::vector<Change>& out) {
  ASSIGN_OR_RETURN(std::vector<Child> nkids, List(nroot, rel));
  std::vector<Child> okids;
  if (oroot >= 0) {
    ASSIGN_OR_RETURN(okids, List(oroot, rel));
  }
  bool changed = false;
  size_t i = 0, j = 0;
  while (i < nkids.size() || j < okids.size()) {
    int cmp = i == nkids.size() ? 1 : j == okids.size() ? -1 : nkids[i].name.compare(okids[j].name);
    const std::string& name = cmp <= 0 ? nkids[i].name : okids[j].name;
    std::string path = rel.empty() ? name : absl::StrCat(rel, "/", name);
    std::string abs = absl::StrCat("/", path);
    if (cmp > 0) {
      out.push_back({abs, ChangeKind::kDelete});
      changed = true;
      ++j;
      continue;
    }
    const struct stat& nst = nkids[i].st;
    if (cmp < 0) {
      out.push_back({abs, ChangeKind::kAdd});
      changed = true;
      if (S_ISDIR(nst.st_mode)) RETURN_IF_ERROR(Walk(nroot, -1, path, out).status());
      ++i;
      continue;
    }
    const struct stat& ost = okids[j].st;
    ++i;
    ++j;
    bool same_type = (nst.st_mode & S_IFMT) == (ost.st_mode & S_IFMT);
    if (!same_type) {
      out.push_back({abs, ChangeKind::kModify});
      changed = true;
      if (S_ISDIR(nst.st_mode)) RETURN_IF_ERROR(Walk(nroot, -1, path, out).status());
      continue;
    }
    bool differs = Differs(nroot, oroot, path, nst, ost);
    bool inner = false;
    if (S_ISDIR(nst.st_mode)) {
      ASSIGN_OR_RETURN(inner, Walk(nroot, oroot, path, out));
    }
    if (differs || inner) {
      out.push_back({abs, ChangeKind::kModify});
      changed = true;
    }
  }
  return changed;
}

absl::StatusOr<base::UniqueFd> OpenRoot(const std::string& dir) {
  base::UniqueFd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return base::ErrnoError(errno, absl::StrCat("opening ", dir));
  return fd;
}

}  // namespace

absl::StatusOr<std::vector<Change>> ComputeChanges(const std::string& new_dir,
                                                   const std::string& old_dir) {
  ASSIGN_OR_RETURN(base::UniqueFd nroot, OpenRoot(new_dir));
  base::UniqueFd oroot;
  if (!old_dir.empty()) {
    ASSIGN_OR_RETURN(oroot, OpenRoot(old_dir));
  }
  std::vector<Change> out;
  RETURN_IF_ERROR(Walk(nroot.get(), oroot.valid() ? oroot.get() : -1, "", out).status());
  std::sort(out.begin(), out.end(), [](const Change& a, const Change& b) { return a.path < b.path; });
  return out;
}

absl::StatusOr<int64_t> ChangesSize(const std::string& new_dir, const std::vector<Change>& changes) {
  ASSIGN_OR_RETURN(base::UniqueFd root, OpenRoot(new_dir));
  std::set<std::pair<dev_t, ino_t>> seen;
  int64_t size = 0;
  for (const Change& c : changes) {
    if (c.kind == ChangeKind::kDelete) continue;
    std::string rel = c.path.substr(c.path.find_first_not_of('/') == std::string::npos ? c.path.size()
                                                                                       : c.path.find_first_not_of('/'));
    base::UniqueFd fd(OpenBeneath(root.get(), rel, O_PATH | O_NOFOLLOW));
    struct stat st;
    if (!fd || ::fstat(fd.get(), &st) != 0) continue;
    if (!S_ISREG(st.st_mode)) continue;
    if (!seen.insert({st.st_dev, st.st_ino}).second) continue;
    size += st.st_size;
  }
  return size;
}

namespace {

// Gets `id` and, when not empty, `parent`; Puts them when destroyed.
class MountedPair {
 public:
  explicit MountedPair(Driver& d) : d_(d) {}
  ~MountedPair() {
    if (!parent_id_.empty()) (void)d_.Put(parent_id_);
    if (!id_.empty()) (void)d_.Put(id_);
  }
  absl::Status Get(const std::string& id, const std::string& parent) {
    ASSIGN_OR_RETURN(dir, d_.Get(id, ""));
    id_ = id;
    if (!parent.empty()) {
      ASSIGN_OR_RETURN(parent_dir, d_.Get(parent, ""));
      parent_id_ = parent;
    }
    return absl::OkStatus();
  }
  std::string dir, parent_dir;

 private:
  Driver& d_;
  std::string id_, parent_id_;
};

}  // namespace

absl::StatusOr<std::vector<Change>> NaiveChanges(Driver& driver, const std::string& id,
                                                 const std::string& parent) {
  MountedPair m(driver);
  RETURN_IF_ERROR(m.Get(id, parent));
  return ComputeChanges(m.dir, m.parent_dir);
}

absl::StatusOr<DiffResult> NaiveDiff(Driver& driver, const std::string& id, const std::string& parent,
                                     ByteSink& sink) {
  MountedPair m(driver);
  RETURN_IF_ERROR(m.Get(id, parent));
  ASSIGN_OR_RETURN(base::UniqueFd root, OpenRoot(m.dir));
  if (parent.empty()) return WriteLayerTree(root.get(), WhiteoutFormat::kDelete, sink);
  ASSIGN_OR_RETURN(std::vector<Change> changes, ComputeChanges(m.dir, m.parent_dir));
  return WriteLayerChanges(root.get(), changes, sink);
}

absl::StatusOr<int64_t> NaiveDiffSize(Driver& driver, const std::string& id, const std::string& parent) {
  MountedPair m(driver);
  RETURN_IF_ERROR(m.Get(id, parent));
  ASSIGN_OR_RETURN(std::vector<Change> changes, ComputeChanges(m.dir, m.parent_dir));
  return ChangesSize(m.dir, changes);
}

absl::StatusOr<ApplyDiffResult> NaiveApplyDiff(Driver& driver, const std::string& id, ByteSource& source,
                                               WhiteoutFormat whiteouts) {
  MountedPair m(driver);
  RETURN_IF_ERROR(m.Get(id, ""));
  ASSIGN_OR_RETURN(base::UniqueFd root, OpenRoot(m.dir));
  ApplyOptions o;
  o.whiteouts = whiteouts;
  o.preserve_owners = ::geteuid() == 0;
  return ApplyLayer(root.get(), source, o);
}

}  // namespace graph
