// btrfs subvolume primitives over the kernel's ioctls (linux/btrfs.h), no
// btrfs-progs. Private to the btrfs driver and its tests.
#ifndef DMTHIN_GRAPH_DRIVERS_BTRFS_SUBVOL_H_
#define DMTHIN_GRAPH_DRIVERS_BTRFS_SUBVOL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace graph::btrfs {

// OK if `path` lives on a btrfs filesystem (statfs magic). Otherwise
// FailedPrecondition "<path> is on <fstype>, not btrfs" (or the statfs errno).
absl::Status CheckOnBtrfs(const std::string& path);

// True if `path` is the root directory of a btrfs subvolume (inode 256 on
// btrfs). Errors only when `path` cannot be stat'ed.
absl::StatusOr<bool> IsSubvolume(const std::string& path);

// Creates an empty subvolume `dir`/`name` (BTRFS_IOC_SUBVOL_CREATE).
absl::Status CreateSubvolume(const std::string& dir, absl::string_view name);

// Snapshots subvolume `source` to `dir`/`name` (BTRFS_IOC_SNAP_CREATE_V2),
// read-only if asked.
absl::Status SnapshotSubvolume(const std::string& source, const std::string& dir,
                               absl::string_view name, bool readonly);

// Deletes subvolume `path` together with every subvolume nested inside it
// (deepest first), like `btrfs subvolume delete` of a tree. A missing path
// is NotFound (with ENOENT).
absl::Status DeleteSubvolume(const std::string& path);

// Read-only flag of subvolume `path` (BTRFS_IOC_SUBVOL_{GET,SET}FLAGS).
absl::StatusOr<bool> IsReadOnly(const std::string& path);
absl::Status SetReadOnly(const std::string& path, bool readonly);

}  // namespace graph::btrfs

#endif  // DMTHIN_GRAPH_DRIVERS_BTRFS_SUBVOL_H_
