// The directory backend: one directory per volume under a data dir. On
// btrfs each volume is a subvolume whose qgroup limit is its size; on any
// other filesystem a plain directory that takes no size (ext4/xfs project
// quota: not yet). Private to libvolume.
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
