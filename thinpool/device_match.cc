#include "thinpool/device_match.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "thinpool/loop_device.h"

namespace thinpool {
namespace {

// The loop device's LoopInfo when `st` is a loop block device.
absl::StatusOr<std::optional<LoopInfo>> LoopInfoOf(const std::string& device,
                                                   const struct stat& st) {
  // loop's block major is 7 (Documentation/admin-guide/devices.txt).
  if (!S_ISBLK(st.st_mode) || major(st.st_rdev) != 7) return std::optional<LoopInfo>();
  auto loop = LoopDevice::Open(device);
  if (!loop.ok()) {
    // A loop device without a backing file answers ENXIO: not ours.
    if (base::HasErrno(loop.status(), ENXIO)) return std::optional<LoopInfo>();
    return loop.status();
  }
  auto info = loop->Info();
  if (!info.ok()) {
    if (base::HasErrno(info.status(), ENXIO)) return std::optional<LoopInfo>();
    return info.status();
  }
  return std::optional<LoopInfo>(*info);
}

// Whether `path` (a registered backing path) is `device`.
bool Matches(const PoolRecord& pool, const std::string& path, const struct stat& dev_st,
             const std::optional<LoopInfo>& loop) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return false;
  if (pool.backing == PoolBacking::kFiles) {
    return loop.has_value() && loop->backing_dev == st.st_dev &&
           loop->backing_inode == st.st_ino;
  }
  return S_ISBLK(st.st_mode) && st.st_rdev == dev_st.st_rdev;
}

// Whether a backing path is present: a block device exists, or a file is
// attached to a loop device.
bool Present(const PoolRecord& pool, const std::string& path) {
  if (pool.backing == PoolBacking::kDevices) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISBLK(st.st_mode);
  }
  auto found = LoopDevice::FindByBackingFile(path);
  return found.ok() && found->has_value();
}

}  // namespace

absl::StatusOr<std::optional<BackingMatch>> MatchBackingDevice(StateDir& state,
                                                               const std::string& device) {
  struct stat dev_st;
  if (stat(device.c_str(), &dev_st) != 0)
    return base::ErrnoError(errno, absl::StrCat("stat ", device));
  if (!S_ISBLK(dev_st.st_mode))
    return absl::InvalidArgumentError(absl::StrCat(device, " is not a block device"));
  ASSIGN_OR_RETURN(std::optional<LoopInfo> loop, LoopInfoOf(device, dev_st));
  ASSIGN_OR_RETURN(std::vector<PoolRecord> pools, state.registry().ListPools());
  for (const PoolRecord& pool : pools) {
    std::string role;
    if (Matches(pool, pool.data_path, dev_st, loop)) role = "data";
    else if (Matches(pool, pool.metadata_path, dev_st, loop)) role = "metadata";
    else continue;
    BackingMatch match;
    match.pool = pool.name;
    match.role = role;
    match.complete = Present(pool, pool.data_path) && Present(pool, pool.metadata_path);
    return std::optional<BackingMatch>(match);
  }
  return std::optional<BackingMatch>();
}

}  // namespace thinpool
