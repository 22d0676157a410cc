// Writing OCI layer tars from a layer directory (Diff).
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "graph/fsutil.h"
#include "graph/archive.h"
#include "graph/archive/internal.h"
#include "graph/digest.h"

namespace graph {
namespace {

constexpr size_t kCopyBlock = 1 << 20;

bool ExportXattr(absl::string_view name) {
  return !absl::StartsWith(name, "trusted.overlay.") && !absl::StartsWith(name, "user.overlay.") &&
         name != "security.selinux";
}

class LayerWriter {
 public:
  LayerWriter(int root_fd, ByteSink& sink) : root_(root_fd), sink_(sink), buf_(kCopyBlock) {}
  ~LayerWriter() {
    if (a_ != nullptr) archive_write_free(a_);
  }

  absl::Status Open() {
    a_ = archive_write_new();
    if (a_ == nullptr) return absl::ResourceExhaustedError("archive_write_new");
    // ustar where it suffices, pax records where needed (long names, xattrs,
    // big ids): what Docker/containerd produce.
    archive_write_set_format_pax_restricted(a_);
    archive_write_set_bytes_per_block(a_, 10240);
    archive_write_set_bytes_in_last_block(a_, 1);
    if (archive_write_open(a_, this, nullptr, &LayerWriter::WriteCb, nullptr) != ARCHIVE_OK) {
      return Error("opening tar writer");
    }
    return absl::OkStatus();
  }

  // Writes the file system object `rel` (relative to the root, already
  // lstat'ed as `st`) under tar name `name`.
  absl::Status AddPath(const std::string& rel, const struct stat& st) {
    struct archive_entry* e = archive_entry_new();
    absl::Status s = FillEntry(e, rel, st);
    if (s.ok()) s = WriteEntry(e, rel, st);
    archive_entry_free(e);
    return base::Annotate(s, absl::StrCat("writing \"", rel, "\" to the layer tar"));
  }

  // An empty regular file `name` (a whiteout or opaque marker).
  absl::Status AddMarker(const std::string& name, const struct stat* like) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0);
    archive_entry_set_size(e, 0);
    if (like != nullptr) {
      archive_entry_set_uid(e, like->st_uid);
      archive_entry_set_gid(e, like->st_gid);
      archive_entry_set_mtime(e, like->st_mtim.tv_sec, like->st_mtim.tv_nsec);
    }
    int r = archive_write_header(a_, e);
    archive_entry_free(e);
    if (r < ARCHIVE_WARN) return Error(absl::StrCat("writing marker ", name));
    return absl::OkStatus();
  }

  absl::StatusOr<DiffResult> Close() {
    if (archive_write_close(a_) != ARCHIVE_OK) return Error("finishing the layer tar");
    DiffResult result;
    result.tar_bytes = bytes_;
    result.diff_id = hash_.Finish();
    return result;
  }

  int root() const { return root_; }

 private:
  absl::Status Error(absl::string_view what) {
    if (!sink_status_.ok()) return base::Annotate(sink_status_, what);
    const char* msg = archive_error_string(a_);
    return absl::InternalError(absl::StrCat(what, ": ", msg ? msg : "libarchive error"));
  }

  static la_ssize_t WriteCb(struct archive* a, void* ctx, const void* buf, size_t len) {
    auto* self = static_cast<LayerWriter*>(ctx);
    absl::Status s = self->sink_.Write(buf, len);
    if (!s.ok()) {
      self->sink_status_ = s;
      archive_set_error(a, EIO, "%s", std::string(s.message()).c_str());
      return -1;
    }
    self->hash_.Update(buf, len);
    self->bytes_ += len;
    return static_cast<la_ssize_t>(len);
  }

  absl::Status FillEntry(struct archive_entry* e, const std::string& rel, const struct stat& st) {
    std::string name = rel;
    if (S_ISDIR(st.st_mode)) name += "/";
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, st.st_mode & S_IFMT);
    archive_entry_set_perm(e, st.st_mode & 07777);
    archive_entry_set_uid(e, st.st_uid);
    archive_entry_set_gid(e, st.st_gid);
    archive_entry_set_mtime(e, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    archive_entry_set_size(e, 0);
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      archive_entry_set_rdevmajor(e, major(st.st_rdev));
      archive_entry_set_rdevminor(e, minor(st.st_rdev));
    }
    if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      size_t slash = rel.rfind('/');
      std::string parent = slash == std::string::npos ? "" : rel.substr(0, slash);
      std::string leaf = slash == std::string::npos ? rel : rel.substr(slash + 1);
      base::UniqueFd dir(OpenBeneath(root_, parent, O_PATH | O_DIRECTORY));
      if (!dir) return base::ErrnoError(errno, "opening parent directory");
      ssize_t n = ::readlinkat(dir.get(), leaf.c_str(), target.data(), target.size());
      if (n < 0) return base::ErrnoError(errno, "readlink");
      target.resize(static_cast<size_t>(n));
      archive_entry_set_symlink(e, target.c_str());
    }
    if (S_ISREG(st.st_mode)) {
      if (st.st_nlink > 1) {
        auto key = std::make_pair(st.st_dev, st.st_ino);
        auto it = links_.find(key);
        if (it != links_.end()) {
          archive_entry_set_hardlink(e, it->second.c_str());
          return absl::OkStatus();
        }
        links_.emplace(key, rel);
      }
      archive_entry_set_size(e, st.st_size);
      extents_.clear();
      if (st.st_size > 0 && st.st_blocks * 512 < st.st_size) RETURN_IF_ERROR(MapSparse(e, rel, st));
    }
    return AddXattrs(e, rel, st);
  }

  // A file with fewer blocks than its size has holes: record its data
  // extents (SEEK_DATA/SEEK_HOLE) as a pax sparse map.
  absl::Status MapSparse(struct archive_entry* e, const std::string& rel, const struct stat& st) {
    base::UniqueFd fd(OpenBeneath(root_, rel, O_RDONLY | O_NOFOLLOW));
    if (!fd) return base::ErrnoError(errno, "opening file");
    off_t pos = 0;
    while (pos < st.st_size) {
      off_t data = ::lseek(fd.get(), pos, SEEK_DATA);
      if (data < 0) {
        if (errno == ENXIO) break;
        if (errno == EINVAL) {  // no SEEK_DATA here: treat as dense
          extents_.clear();
          return absl::OkStatus();
        }
        return base::ErrnoError(errno, "SEEK_DATA");
      }
      off_t hole = ::lseek(fd.get(), data, SEEK_HOLE);
      if (hole < 0) return base::ErrnoError(errno, "SEEK_HOLE");
      hole = std::min<off_t>(hole, st.st_size);
      extents_.emplace_back(data, hole - data);
      pos = hole;
    }
    if (extents_.size() == 1 && extents_[0].first == 0 && extents_[0].second == st.st_size) {
      extents_.clear();  // dense after all
      return absl::OkStatus();
    }
    if (extents_.empty()) extents_.emplace_back(st.st_size, 0);  // all hole
    for (auto [off, len] : extents_) archive_entry_sparse_add_entry(e, off, len);
    return absl::OkStatus();
  }

  // Feeds `n` zero bytes (a hole: the pax writer skips them).
  absl::Status WriteZeros(int64_t n) {
    if (zeros_.empty()) zeros_.assign(1 << 20, '\0');
    while (n > 0) {
      size_t chunk = static_cast<size_t>(std::min<int64_t>(n, static_cast<int64_t>(zeros_.size())));
      if (archive_write_data(a_, zeros_.data(), chunk) < 0) return Error("writing sparse hole");
      n -= static_cast<int64_t>(chunk);
    }
    return absl::OkStatus();
  }

  absl::Status AddXattrs(struct archive_entry* e, const std::string& rel, const struct stat& st) {
    std::string proc;
    base::UniqueFd path_fd(OpenBeneath(root_, rel, O_PATH | O_NOFOLLOW));
    if (!path_fd) return base::ErrnoError(errno, "opening for xattrs");
    proc = absl::StrCat("/proc/self/fd/", path_fd.get());
    (void)st;
    std::string names(4096, '\0');
    ssize_t n;
    for (;;) {
      n = ::llistxattr(proc.c_str(), names.data(), names.size());
      if (n >= 0) break;
      if (errno == ERANGE) {
        names.resize(names.size() * 4);
        continue;
      }
      if (errno == ENOTSUP) return absl::OkStatus();
      return base::ErrnoError(errno, "listxattr");
    }
    names.resize(static_cast<size_t>(n));
    std::string value(4096, '\0');
    for (size_t pos = 0; pos < names.size();) {
      std::string key(names.c_str() + pos);
      pos += key.size() + 1;
      if (key.empty() || !ExportXattr(key)) continue;
      ssize_t v;
      for (;;) {
        v = ::lgetxattr(proc.c_str(), key.c_str(), value.data(), value.size());
        if (v >= 0 || errno != ERANGE) break;
        value.resize(value.size() * 4);
      }
      if (v < 0) {
        if (errno == ENODATA) continue;
        return base::ErrnoError(errno, absl::StrCat("getxattr ", key));
      }
      archive_entry_xattr_add_entry(e, key.c_str(), value.data(), static_cast<size_t>(v));
    }
    return absl::OkStatus();
  }

  absl::Status WriteEntry(struct archive_entry* e, const std::string& rel, const struct stat& st) {
    if (archive_write_header(a_, e) < ARCHIVE_WARN) return Error("writing tar header");
    if (!S_ISREG(st.st_mode) || archive_entry_hardlink(e) != nullptr || st.st_size == 0) {
      return absl::OkStatus();
    }
    base::UniqueFd fd(OpenBeneath(root_, rel, O_RDONLY | O_NOFOLLOW));
    if (!fd) return base::ErrnoError(errno, "opening file");
    if (!extents_.empty()) {
      // libarchive's pax writer takes the logical content and drops the
      // holes named by the sparse map: only data extents are read.
      int64_t pos = 0;
      for (auto [off, len] : extents_) {
        RETURN_IF_ERROR(WriteZeros(off - pos));
        for (int64_t done = 0; done < len;) {
          ssize_t n = ::pread(fd.get(), buf_.data(),
                              static_cast<size_t>(std::min<int64_t>(len - done, static_cast<int64_t>(buf_.size()))),
                              off + done);
          if (n < 0) {
            if (errno == EINTR) continue;
            return base::ErrnoError(errno, "reading file");
          }
          if (n == 0) return absl::DataLossError("file shrank while it was being written to the tar");
          if (archive_write_data(a_, buf_.data(), static_cast<size_t>(n)) < 0) return Error("writing file data");
          done += n;
        }
        pos = off + len;
      }
      return WriteZeros(st.st_size - pos);
    }
    int64_t left = st.st_size;
    while (left > 0) {
      ssize_t n = ::read(fd.get(), buf_.data(), std::min<int64_t>(left, static_cast<int64_t>(buf_.size())));
      if (n < 0) {
        if (errno == EINTR) continue;
        return base::ErrnoError(errno, "reading file");
      }
      if (n == 0) return absl::DataLossError("file shrank while it was being written to the tar");
      if (archive_write_data(a_, buf_.data(), static_cast<size_t>(n)) < 0) return Error("writing file data");
      left -= n;
    }
    return absl::OkStatus();
  }

  int root_;
  ByteSink& sink_;
  struct archive* a_ = nullptr;
  absl::Status sink_status_;
  Sha256 hash_;
  uint64_t bytes_ = 0;
  std::vector<char> buf_;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;
  std::vector<std::pair<int64_t, int64_t>> extents_;  // of the entry being written
  std::vector<char> zeros_;
};


bool IsOpaque(int root, const std::string& rel) {
  base::UniqueFd fd(OpenBeneath(root, rel, O_RDONLY | O_DIRECTORY));
  if (!fd) return false;
  char v[4];
  ssize_t n = ::fgetxattr(fd.get(), "trusted.overlay.opaque", v, sizeof v);
  return n == 1 && v[0] == 'y';
}

absl::Status WalkTree(LayerWriter& w, const std::string& rel, WhiteoutFormat native) {
  ASSIGN_OR_RETURN(std::vector<DirEntry> children, ListDirBeneath(w.root(), rel));
  for (const DirEntry& c : children) {
    std::string path = rel.empty() ? c.name : absl::StrCat(rel, "/", c.name);
    if (native == WhiteoutFormat::kOverlay && S_ISCHR(c.st.st_mode) && c.st.st_rdev == makedev(0, 0)) {
      // Never a hard link, even when overlay shares one whiteout inode.
      std::string wh = rel.empty() ? absl::StrCat(archive_internal::kWhiteoutPrefix, c.name)
                                   : absl::StrCat(rel, "/", archive_internal::kWhiteoutPrefix, c.name);
      RETURN_IF_ERROR(w.AddMarker(wh, &c.st));
      continue;
    }
    if (native == WhiteoutFormat::kAufs && absl::StartsWith(c.name, archive_internal::kWhiteoutMetaPrefix) &&
        c.name != archive_internal::kOpaqueMarker) {
      continue;  // aufs's own bookkeeping (.wh..wh.plnk, .wh..wh.aufs, ...)
    }
    RETURN_IF_ERROR(w.AddPath(path, c.st));
    if (S_ISDIR(c.st.st_mode)) {
      if (native == WhiteoutFormat::kOverlay && IsOpaque(w.root(), path)) {
        RETURN_IF_ERROR(w.AddMarker(absl::StrCat(path, "/", archive_internal::kOpaqueMarker), &c.st));
      }
      RETURN_IF_ERROR(WalkTree(w, path, native));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DiffResult> WriteLayerTree(int root_fd, WhiteoutFormat native, ByteSink& sink) {
  LayerWriter w(root_fd, sink);
  RETURN_IF_ERROR(w.Open());
  if (native == WhiteoutFormat::kOverlay && IsOpaque(root_fd, "")) {
    RETURN_IF_ERROR(w.AddMarker(std::string(archive_internal::kOpaqueMarker), nullptr));
  }
  RETURN_IF_ERROR(WalkTree(w, "", native));
  return w.Close();
}

absl::StatusOr<DiffResult> WriteLayerChanges(int root_fd, const std::vector<Change>& changes,
                                             ByteSink& sink) {
  LayerWriter w(root_fd, sink);
  RETURN_IF_ERROR(w.Open());
  for (const Change& c : changes) {
    ASSIGN_OR_RETURN(std::string rel, archive_internal::CleanPath(c.path));
    if (rel.empty()) continue;
    if (c.kind == ChangeKind::kDelete) {
      size_t slash = rel.rfind('/');
      std::string parent = slash == std::string::npos ? "" : rel.substr(0, slash);
      std::string leaf = slash == std::string::npos ? rel : rel.substr(slash + 1);
      struct stat pst;
      const struct stat* like = nullptr;
      base::UniqueFd pfd(OpenBeneath(root_fd, parent, O_PATH | O_DIRECTORY));
      if (pfd && ::fstat(pfd.get(), &pst) == 0) like = &pst;
      RETURN_IF_ERROR(w.AddMarker(
          parent.empty() ? absl::StrCat(archive_internal::kWhiteoutPrefix, leaf)
                         : absl::StrCat(parent, "/", archive_internal::kWhiteoutPrefix, leaf),
          like));
      continue;
    }
    base::UniqueFd fd(OpenBeneath(root_fd, rel, O_PATH | O_NOFOLLOW));
    struct stat st;
    if (!fd || ::fstat(fd.get(), &st) != 0) {
      return base::ErrnoError(errno, absl::StrCat("stat changed path \"", rel, "\""));
    }
    RETURN_IF_ERROR(w.AddPath(rel, st));
  }
  return w.Close();
}

}  // namespace graph
