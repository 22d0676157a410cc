// Filesystem helpers shared by graph's drivers and libvolume: removing and
// copying trees without ever following symlinks out of them.
#ifndef DMTHIN_BASE_FSUTIL_H_
#define DMTHIN_BASE_FSUTIL_H_

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace base {

// openat2 of `path` ("" = the directory itself) strictly beneath `dirfd`:
// no "..", absolute paths or symlinks on the way (RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS). O_CLOEXEC is added. Returns
// the fd, or -1 with errno set.
int OpenBeneath(int dirfd, const std::string& path, int flags);

// One entry of a directory, lstat'ed.
struct DirEntry {
  std::string name;
  struct stat st;
};
// The entries of directory `rel` beneath `root` (without . and ..), sorted
// by name. Errors carry errno (ENOENT/ENOTDIR when `rel` is not a directory).
absl::StatusOr<std::vector<DirEntry>> ListDirBeneath(int root, const std::string& rel);

// Writes `data` to `path` whole or not at all: into a new temporary next to
// it (`.<name>.tmp-<pid>-<n>`, O_EXCL | O_NOFOLLOW | O_CLOEXEC, `mode` less
// the umask), then renamed over `path` (a symlink there is replaced, not
// followed). With `durable`, the temporary is fsynced before the rename and
// the directory after it. On failure the temporary is removed and `path`
// is as it was (unless only the directory's fsync failed); the error
// carries errno and the file it was about.
absl::Status WriteFileAtomic(const std::string& path, absl::string_view data, bool durable,
                             mode_t mode = 0600);

// Removes `name` in directory `dirfd` and everything under it (like
// rm -rf, never following symlinks, staying on one filesystem — a mount
// point inside is an error). OK if it does not exist.
absl::Status RemoveTree(int dirfd, const std::string& name);
// Same for an absolute or cwd-relative path.
absl::Status RemoveTree(const std::string& path);

struct CopyStats {
  uint64_t files = 0;
  uint64_t bytes = 0;
  uint64_t reflinked = 0;  // files cloned with FICLONE
};

// Copies the tree `src` to the new directory `dst` (must not exist),
// preserving types, modes, numeric owners, xattrs, hardlinks, symlinks,
// device nodes, timestamps and holes. File data is reflinked (FICLONE) where
// the filesystem supports it, else copied with copy_file_range per data
// extent.
absl::StatusOr<CopyStats> CopyTree(const std::string& src,
                                   const std::string& dst);
// The same into `dst`, an existing directory (meant to be empty: an entry
// already there is an error, EEXIST): its owner, mode, xattrs and times
// become `src`'s.
absl::StatusOr<CopyStats> CopyTreeInto(const std::string& src,
                                       const std::string& dst);

// Allocated bytes (st_blocks × 512) and distinct inodes of the tree at
// `path`, the directory itself included (containerd's fs.DiskUsage): never
// following symlinks, not descending into other filesystems, each hard
// link counted once. ENOENT-errno if `path` is missing.
struct TreeUsageResult {
  int64_t bytes = 0;
  int64_t inodes = 0;
};
absl::StatusOr<TreeUsageResult> TreeUsage(const std::string& path);

// Name of the filesystem holding `path` ("ext4", "xfs", "btrfs", "tmpfs",
// "overlayfs", ... or "0x<magic>"), from statfs.
absl::StatusOr<std::string> BackingFsName(const std::string& path);

// True if `path` is the root of a mount (statx STATX_ATTR_MOUNT_ROOT).
absl::StatusOr<bool> IsMountPoint(const std::string& path);

// Marks the empty file or directory `fd` no-copy-on-write (FS_NOCOW_FL; a
// directory passes it to files made in it later) where the filesystem has
// the flag (btrfs): its blocks are then rewritten in place, with no new
// space, which is what lets a full filesystem still update it. Best effort:
// elsewhere the flag is refused and nothing changes.
void SetNoCow(int fd);

}  // namespace base
DMTHIN_API_END

#endif  // DMTHIN_BASE_FSUTIL_H_
