// btrfs subvolume and qgroup primitives over the kernel's ioctls
// (linux/btrfs.h), no btrfs-progs. Used by graph's btrfs driver and by
// libvolume's directory backend.
#ifndef DMTHIN_BASE_BTRFS_H_
#define DMTHIN_BASE_BTRFS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace base::btrfs {

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

// The subvolume (tree) id of the subvolume holding `path`
// (BTRFS_IOC_INO_LOOKUP).
absl::StatusOr<uint64_t> SubvolumeId(const std::string& path);

// Turns quota accounting on for the filesystem holding `path`
// (BTRFS_IOC_QUOTA_CTL ENABLE); OK if it already is on.
absl::Status EnableQuota(const std::string& path);

// Limits the referenced bytes of subvolume `path`'s own qgroup (0/<id>)
// (BTRFS_IOC_QGROUP_LIMIT, max_rfer). 0 removes the limit. A write past
// the limit fails with EDQUOT.
absl::Status SetQgroupLimit(const std::string& path, uint64_t max_referenced);

struct QgroupUsage {
  uint64_t referenced = 0;  // bytes the subvolume refers to (shared included)
  uint64_t exclusive = 0;   // bytes only it refers to
  uint64_t max_referenced = 0;  // 0: no limit
};
// Subvolume `path`'s qgroup figures from the quota tree
// (BTRFS_IOC_TREE_SEARCH), after a filesystem sync so they are current.
// NotFound when quotas are off or the subvolume has no qgroup.
absl::StatusOr<QgroupUsage> GetQgroupUsage(const std::string& path);

}  // namespace base::btrfs
DMTHIN_API_END

#endif  // DMTHIN_BASE_BTRFS_H_
