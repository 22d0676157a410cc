// The thin backend: one thin device of a thinpool pool per volume
// (thin name "vol-<volume>"), with ext4 made in-process (xfs with mkfs.xfs),
// mounted at <mnt dir>/<volume> while referenced. Private to libvolume.
#ifndef DMTHIN_VOLUME_THIN_BACKEND_H_
#define DMTHIN_VOLUME_THIN_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "volume/backend.h"

namespace volume {

absl::StatusOr<std::unique_ptr<VolumeBackend>> NewThinBackend(const std::string& state_dir,
                                                              const std::string& pool,
                                                              const std::string& mnt_dir);

}  // namespace volume

#endif  // DMTHIN_VOLUME_THIN_BACKEND_H_
