// ext4/xfs project quota for directory volumes: a project id per volume
// directory (FS_IOC_FSSETXATTR, inherited by everything made beneath it)
// and a block limit on that project (quotactl_fd Q_SETQUOTA). Needs a
// kernel with quota support and a filesystem mounted with project quota
// enforced (ext4: made with `-O quota,project`, mounted `prjquota`; xfs:
// mounted `prjquota`). Private to libvolume.
#ifndef DMTHIN_VOLUME_PROJECT_QUOTA_H_
#define DMTHIN_VOLUME_PROJECT_QUOTA_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace volume {

// OK if project quota limits are enforced on the filesystem holding `dir`;
// otherwise an error saying why not (the kernel has no quota support, the
// filesystem has no project quota, or it is not enforced).
absl::Status CheckProjectQuota(const std::string& dir);

// The project id of directory `dir` (0: none).
absl::StatusOr<uint32_t> GetProjectId(const std::string& dir);
// Gives directory `dir` project `id`, inherited by what is made beneath it.
absl::Status SetProjectId(const std::string& dir, uint32_t id);

// Sets (bytes > 0) or clears (0) the hard block limit of project `id` on
// the filesystem holding `path`.
absl::Status SetProjectLimit(const std::string& path, uint32_t id, uint64_t bytes);
// Bytes charged to project `id` on the filesystem holding `path`.
absl::StatusOr<uint64_t> ProjectUsage(const std::string& path, uint32_t id);

}  // namespace volume

#endif  // DMTHIN_VOLUME_PROJECT_QUOTA_H_
