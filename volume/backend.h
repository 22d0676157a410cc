// What the volume store asks of a backend (thin devices or directories).
// Private to libvolume. Every call is idempotent where a crash could leave
// it half done: Remove of a missing volume, Unmount of an unmounted one and
// Mount of a mounted one succeed.
#ifndef DMTHIN_VOLUME_BACKEND_H_
#define DMTHIN_VOLUME_BACKEND_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "volume/store.h"

namespace volume {

class VolumeBackend {
 public:
  virtual ~VolumeBackend() = default;

  // The filesystem a new volume gets ("ext4", "btrfs", ...), or an error
  // saying why `size_bytes`/`fs` cannot be honoured — checked before any
  // intent is recorded.
  virtual absl::StatusOr<std::string> CheckCreate(uint64_t size_bytes,
                                                  const std::string& fs) = 0;
  virtual absl::Status Create(const std::string& name, uint64_t size_bytes,
                              const std::string& fs) = 0;
  virtual absl::Status Snapshot(const std::string& source, const std::string& name,
                                uint64_t size_bytes) = 0;
  virtual absl::Status Remove(const std::string& name) = 0;
  // The names the backend holds (for Check: orphans and missing volumes).
  virtual absl::StatusOr<std::vector<std::string>> ListNames() = 0;

  // Makes the data reachable and returns where (thin: mount), idempotent.
  virtual absl::StatusOr<std::string> Mount(const std::string& name,
                                            const std::string& fs) = 0;
  virtual absl::Status Unmount(const std::string& name) = 0;
  // True while the data is reachable by a mount (thin), always for
  // directories.
  virtual absl::StatusOr<bool> Mounted(const std::string& name) = 0;
  // Where the data is while reachable.
  virtual std::string DataPath(const std::string& name) const = 0;
  // Whether the backend needs a mount at all (thin yes, directory no).
  virtual bool NeedsMount() const = 0;

  virtual absl::StatusOr<Usage> GetUsage(const std::string& name, uint64_t size_bytes) = 0;
  virtual absl::Status Grow(const std::string& name, const std::string& fs,
                            uint64_t old_size, uint64_t new_size) = 0;
};

}  // namespace volume

#endif  // DMTHIN_VOLUME_BACKEND_H_
