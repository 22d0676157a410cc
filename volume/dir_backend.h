// The directory backend: one directory per volume under a data dir. On
// btrfs each volume is a subvolume whose qgroup limit is its size; on ext4
// or xfs with project quota enforced, a directory with a project id of its
// own whose block limit is its size (volume/project_quota.h); elsewhere a
// plain directory that takes no size. Private to libvolume.
#ifndef DMTHIN_VOLUME_DIR_BACKEND_H_
#define DMTHIN_VOLUME_DIR_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "volume/backend.h"

namespace volume {

absl::StatusOr<std::unique_ptr<VolumeBackend>> NewDirectoryBackend(const std::string& data_dir);

}  // namespace volume

#endif  // DMTHIN_VOLUME_DIR_BACKEND_H_
