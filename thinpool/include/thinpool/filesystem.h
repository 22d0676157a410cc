// Filesystems on thin devices: ext4 made in-process with libext2fs (no exec
// of mkfs), and identification with libblkid.
#ifndef DMTHIN_THINPOOL_FILESYSTEM_H_
#define DMTHIN_THINPOOL_FILESYSTEM_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace thinpool {

struct Ext4Options {
  std::string label;           // at most 16 bytes
  std::optional<std::string> uuid;  // "xxxxxxxx-xxxx-..."; random if unset
  uint32_t block_size = 4096;  // 1024, 2048 or 4096
  uint32_t bytes_per_inode = 16384;
  uint32_t inode_size = 256;
  double reserved_percent = 5.0;  // blocks reserved for root
  bool journal = true;
  // The device reads as zeros everywhere (a freshly created thin device, a
  // new sparse file): inode tables and journal need not be written at all,
  // so the new filesystem maps only the blocks it really uses. Without it,
  // the journal is zeroed and inode tables are left for the kernel's lazy
  // init, as `mkfs.ext4 -E lazy_itable_init=1` does.
  bool assume_zeroed = false;
};

struct FilesystemInfo {
  std::string type;   // "ext4", "xfs", ...
  std::string uuid;
  std::string label;
};

inline constexpr uint64_t kMinExt4Bytes = 1 << 20;
// The largest ext4 MakeExt4 can make with `block_size` blocks (4 KiB: 512 PiB).
uint64_t MaxExt4Bytes(uint32_t block_size);
// Whether MakeExt4 can make ext4 of `bytes` with `options` (limits, option
// values), so callers can refuse a size before they make a device for it.
absl::Status ValidateExt4(uint64_t bytes, const Ext4Options& options = {});

// Makes an ext4 filesystem (extents, 64bit, flex_bg, metadata_csum, journal)
// on `path`, a block device or a regular file, using all of it (sizes as
// ValidateExt4; libext2fs errors carry com_err's text).
absl::Status MakeExt4(const std::string& path, const Ext4Options& options = {});

// What libblkid finds on `path`; nullopt if no filesystem signature.
absl::StatusOr<std::optional<FilesystemInfo>> IdentifyFilesystem(
    const std::string& path);

}  // namespace thinpool
DMTHIN_API_END

#endif  // DMTHIN_THINPOOL_FILESYSTEM_H_
