#include "thinpool/pool.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/failpoint.h"
#include "base/size.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "thinpool/exec.h"
#include "thinpool/loop_device.h"
#include "thinpool/mounts.h"

namespace thinpool {
namespace {

constexpr uint64_t kSector = 512;
// Data blocks one space-map bitmap block covers: (4096 - 16 byte header) x 4
// two-bit entries (drivers/md/persistent-data/dm-space-map-common.c).
constexpr uint64_t kEntriesPerBitmap = 16320;

using base::Failpoint;
using base::FailpointIs;

std::string DataFile(const StateDir& state, absl::string_view pool) {
  return state.PoolDir(pool) + "/data";
}
std::string MetadataFile(const StateDir& state, absl::string_view pool) {
  return state.PoolDir(pool) + "/metadata";
}

absl::Status CreateSparseFile(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return base::ErrnoError(errno, absl::StrCat("creating ", path));
  base::UniqueFd f(fd);
  if (::ftruncate(fd, static_cast<off_t>(size)) < 0) {
    return base::ErrnoError(errno, absl::StrCat("sizing ", path, " to ", size, " bytes"));
  }
  if (::fsync(fd) < 0) return base::ErrnoError(errno, absl::StrCat("fsync ", path));
  return absl::OkStatus();
}

absl::Status GrowFile(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return base::ErrnoError(errno, absl::StrCat("opening ", path));
  base::UniqueFd f(fd);
  struct stat st;
  if (::fstat(fd, &st) < 0) return base::ErrnoError(errno, absl::StrCat("stat ", path));
  if (static_cast<uint64_t>(st.st_size) >= size) return absl::OkStatus();
  if (::ftruncate(fd, static_cast<off_t>(size)) < 0) {
    return base::ErrnoError(errno, absl::StrCat("growing ", path, " to ", size, " bytes"));
  }
  if (::fsync(fd) < 0) return base::ErrnoError(errno, absl::StrCat("fsync ", path));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> DeviceSize(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(errno, absl::StrCat("opening ", path));
  base::UniqueFd f(fd);
  struct stat st;
  if (::fstat(fd, &st) < 0) return base::ErrnoError(errno, absl::StrCat("stat ", path));
  if (!S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a block device"));
  }
  uint64_t size = 0;
  if (::ioctl(fd, BLKGETSIZE64, &size) < 0) {
    return base::ErrnoError(errno, absl::StrCat("BLKGETSIZE64 on ", path));
  }
  return size;
}

// Whether the first 4 KiB of `path` are all zero (a new, empty pool).
absl::StatusOr<bool> FirstBlockIsZero(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(errno, absl::StrCat("opening ", path));
  base::UniqueFd f(fd);
  char buf[4096];
  ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  if (n < 0) return base::ErrnoError(errno, absl::StrCat("reading ", path));
  return std::all_of(buf, buf + n, [](char c) { return c == 0; });
}

absl::Status ZeroFirstBlock(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoError(errno, absl::StrCat("opening ", path));
  base::UniqueFd f(fd);
  char zeros[4096] = {};
  if (::pwrite(fd, zeros, sizeof zeros, 0) != ssize_t(sizeof zeros)) {
    return base::ErrnoError(errno, absl::StrCat("zeroing metadata header of ", path));
  }
  if (::fsync(fd) < 0) return base::ErrnoError(errno, absl::StrCat("fsync ", path));
  return absl::OkStatus();
}

std::vector<std::string> FeatureList(const PoolOptions& o) {
  std::vector<std::string> f;
  if (o.skip_block_zeroing) f.push_back("skip_block_zeroing");
  if (o.discard == DiscardMode::kIgnore) f.push_back("ignore_discard");
  if (o.discard == DiscardMode::kNoPassdown) f.push_back("no_discard_passdown");
  if (o.error_if_no_space) f.push_back("error_if_no_space");
  return f;
}

bool HasFeature(const PoolRecord& r, absl::string_view f) {
  return std::find(r.features.begin(), r.features.end(), f) != r.features.end();
}

absl::StatusOr<dm::Name> DmName(const std::string& s) { return dm::Name::Create(s); }

// Refuses when the filesystem holding `dir` (or, while it does not exist
// yet, `fallback`) has less than `need` bytes available (f_bavail).
absl::Status CheckFreeSpace(const std::string& dir, const std::string& fallback, uint64_t need,
                            const std::string& why) {
  struct statvfs vfs;
  std::string where = dir;
  if (::statvfs(where.c_str(), &vfs) != 0) {
    where = fallback;
    if (::statvfs(where.c_str(), &vfs) != 0) {
      return base::ErrnoError(errno, absl::StrCat("statvfs ", where));
    }
  }
  const uint64_t avail = uint64_t{vfs.f_bavail} * vfs.f_frsize;
  if (avail < need) {
    return base::WithErrno(
        absl::ResourceExhaustedError(absl::StrCat(
            why, ", but the filesystem of ", where, " has only ", base::FormatSize(avail),
            " free (no space left): free space there, or place the pool's files "
            "elsewhere")),
        ENOSPC);
  }
  return absl::OkStatus();
}

// A device node for a dm device: /dev/mapper/NAME if it exists, else
// /dev/dm-MINOR.
std::string NodeFor(const dm::Control& dm, const std::string& name, dm::DevNum dev) {
  std::string mapper = dm.NodePath(name);
  if (::access(mapper.c_str(), F_OK) == 0) return mapper;
  return absl::StrCat("/dev/dm-", dev.minor);
}

}  // namespace

uint64_t DefaultMetadataBytes(uint64_t data_bytes, uint64_t block_bytes) {
  if (block_bytes == 0) block_bytes = kDefaultBlockBytes;
  uint64_t bytes = std::max(48 * (data_bytes / block_bytes), kMinMetadataBytes);
  bytes = std::min(bytes + kDefaultMaxThins * kMetadataBytesPerThin, kMaxMetadataBytes);
  return (bytes + 4095) / 4096 * 4096;
}

uint64_t ThinMetadataSizeEstimate(uint64_t data_blocks, uint64_t max_thins) {
  return ((data_blocks + 125) / 126 + max_thins) * 4096;
}

uint64_t FormatMetadataBytes(uint64_t data_blocks) {
  uint64_t bitmaps = (data_blocks + kEntriesPerBitmap - 1) / kEntriesPerBitmap;
  // Index entries in btree leaves, shadow copies while inserting them, and
  // the fixed part (superblock, metadata space map, roots): measured 421 MiB
  // for 100 TiB of 64 KiB blocks, this gives 427 MiB.
  return (bitmaps + bitmaps / 16 + 16) * 4096;
}

namespace {

// The data a block size can address: the guide's metadata (48 bytes per
// block) within the kernel's maximum.
uint64_t AddressableBytes(uint64_t block_bytes) {
  return kMaxMetadataBytes / 48 * block_bytes;
}

// Metadata must hold the formatted space maps and room for mappings.
uint64_t MinMetadataBytes(uint64_t format_bytes) {
  return std::max(kMinMetadataBytes, format_bytes + (1 << 20));
}

}  // namespace

absl::StatusOr<PoolGeometry> PlanPoolGeometry(uint64_t data_bytes,
                                              std::optional<uint64_t> block_bytes,
                                              std::optional<uint64_t> metadata_bytes,
                                              std::optional<uint64_t> low_water_blocks) {
  PoolGeometry g;
  // The smallest power-of-two block from 64 KiB that addresses the data.
  uint64_t fitting = kMinBlockBytes;
  while (fitting < kMaxBlockBytes && AddressableBytes(fitting) < data_bytes) fitting *= 2;
  if (AddressableBytes(fitting) < data_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data size ", base::FormatSize(data_bytes), " is more than a pool can address: at most ",
        base::FormatSize(AddressableBytes(kMaxBlockBytes)), " with 1 GiB blocks (the kernel's metadata "
        "maximum of ", base::FormatSize(kMaxMetadataBytes), " at 48 bytes per block)"));
  }
  if (block_bytes.has_value()) {
    const uint64_t b = *block_bytes;
    if (b < kMinBlockBytes || b > kMaxBlockBytes || b % kMinBlockBytes != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "block size ", b, " bytes is invalid: must be a multiple of 64 KiB "
          "between 64 KiB and 1 GiB"));
    }
    if (AddressableBytes(b) < data_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "with ", base::FormatSize(b), " blocks a pool addresses at most ", base::FormatSize(AddressableBytes(b)),
          " of data (the kernel's metadata maximum of ", base::FormatSize(kMaxMetadataBytes),
          " at 48 bytes per block); for ", base::FormatSize(data_bytes), " use blocks of ", base::FormatSize(fitting),
          " or more, or leave the block size out to have it chosen"));
    }
    g.block_bytes = b;
  } else {
    g.block_bytes = fitting;
  }
  const uint64_t blocks = data_bytes / g.block_bytes;
  if (blocks < kMinDataBlocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data size ", base::FormatSize(data_bytes), " is ", blocks, " block(s) of ", base::FormatSize(g.block_bytes),
        "; a pool needs at least ", kMinDataBlocks, " blocks (",
        base::FormatSize(kMinDataBlocks * g.block_bytes), ")"));
  }
  g.data_bytes = blocks * g.block_bytes;
  g.format_bytes = FormatMetadataBytes(blocks);
  if (metadata_bytes.has_value()) {
    const uint64_t m = *metadata_bytes;
    if (m < kMinMetadataBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metadata size ", m, " bytes is below the minimum of 2 MiB (leave it out for the "
          "guide's ", base::FormatSize(DefaultMetadataBytes(g.data_bytes, g.block_bytes)), ")"));
    }
    if (m > kMaxMetadataBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metadata size ", m, " bytes is above the kernel's maximum of ", kMaxMetadataBytes,
          " bytes"));
    }
    if (m < MinMetadataBytes(g.format_bytes)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metadata size ", base::FormatSize(m), " is too small for ", blocks, " data blocks: formatting "
          "the pool alone writes ~", base::FormatSize(g.format_bytes), "; give at least ",
          base::FormatSize(MinMetadataBytes(g.format_bytes)), " (the guide: ",
          base::FormatSize(DefaultMetadataBytes(g.data_bytes, g.block_bytes)), ")"));
    }
    g.metadata_bytes = m - m % 4096;
  } else {
    g.metadata_bytes = DefaultMetadataBytes(g.data_bytes, g.block_bytes);
  }
  if (low_water_blocks.has_value()) {
    if (*low_water_blocks >= blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the low-water mark of ", *low_water_blocks, " blocks must be below the pool's ",
          blocks, " data blocks"));
    }
    g.low_water_blocks = *low_water_blocks;
  } else {
    g.low_water_blocks = blocks / 5;  // >= 3: blocks >= kMinDataBlocks
  }
  return g;
}

std::string PoolStatus::Summary() const {
  if (!active) {
    return absl::StrCat("pool ", name, ": inactive, ", thin_count,
                        " thin devices, transaction ", transaction_id);
  }
  if (failed) return absl::StrCat("pool ", name, ": FAILED (kernel reports Fail/Error)");
  auto pct = [](uint64_t used, uint64_t total) {
    return total ? absl::StrFormat("%.1f%%", 100.0 * used / total) : std::string("-");
  };
  std::string mode = read_only ? "READ-ONLY (metadata error or full)"
                     : out_of_data_space ? "OUT OF DATA SPACE"
                                         : "rw";
  return absl::StrCat(
      "pool ", name, ": data ", pct(data_used_bytes, data_total_bytes), " of ",
      data_total_bytes, " bytes, metadata ",
      pct(metadata_used_bytes, metadata_total_bytes), " of ", metadata_total_bytes,
      " bytes, ", mode, needs_check ? ", NEEDS CHECK (run thin_check)" : "",
      error_if_no_space ? ", error_if_no_space" : ", queue_if_no_space", ", ",
      thin_count, " thin devices, transaction ", transaction_id,
      pending ? absl::StrCat(", pending ", OpKindName(pending->kind), " of ",
                             pending->dev_id)
              : "");
}

// ---------------------------------------------------------------- naming ---

std::string Pool::dm_name() const { return absl::StrCat("dmthin-", name_); }
std::string Pool::dm_uuid() const { return absl::StrCat("DMTHIN-POOL-", name_); }
std::string Pool::ThinDmName(absl::string_view thin) const {
  return absl::StrCat("dmthin-", name_, "-", thin);
}
std::string Pool::ThinDmUuid(uint32_t dev_id) const {
  return absl::StrCat("DMTHIN-THIN-", name_, "-", dev_id);
}

absl::StatusOr<PoolRecord> Pool::Record() const {
  return state_.registry().GetPool(name_);
}

// ---------------------------------------------------------- create/open ---

absl::StatusOr<std::unique_ptr<Pool>> Pool::Create(StateDir& state,
                                                   const dm::Control& dm,
                                                   absl::string_view name,
                                                   const PoolOptions& options) {
  // Everything is checked before anything is made: names, sizes against the
  // kernel's limits, free space where the files go.
  RETURN_IF_ERROR(ValidatePoolName(name));
  const bool devices = !options.data_device.empty() || !options.metadata_device.empty();
  if (devices && (options.data_device.empty() || options.metadata_device.empty())) {
    return absl::InvalidArgumentError(
        "a device-backed pool needs both a data and a metadata device");
  }
  PoolRecord rec;
  rec.name = std::string(name);
  rec.features = FeatureList(options);
  uint64_t data_bytes = options.data_bytes;
  std::optional<uint64_t> metadata_bytes = options.metadata_bytes;
  if (devices) {
    rec.backing = PoolBacking::kDevices;
    rec.data_path = options.data_device;
    rec.metadata_path = options.metadata_device;
    ASSIGN_OR_RETURN(uint64_t data_dev, DeviceSize(options.data_device));
    ASSIGN_OR_RETURN(uint64_t meta_dev, DeviceSize(options.metadata_device));
    if (options.data_device == options.metadata_device) {
      return absl::InvalidArgumentError("data and metadata devices must differ");
    }
    if (data_bytes == 0) data_bytes = data_dev;
    // The kernel uses no more of a metadata device than its maximum.
    if (!metadata_bytes) metadata_bytes = std::min(meta_dev, kMaxMetadataBytes);
    if (data_bytes > data_dev || *metadata_bytes > meta_dev) {
      return absl::InvalidArgumentError(absl::StrCat(
          "requested sizes exceed the devices (data ", data_dev, ", metadata ",
          meta_dev, " bytes)"));
    }
  } else {
    rec.backing = PoolBacking::kFiles;
    rec.data_path = options.data_file.empty()
                        ? DataFile(state, name)
                        : std::filesystem::absolute(options.data_file).lexically_normal().string();
    rec.metadata_path =
        options.metadata_file.empty()
            ? MetadataFile(state, name)
            : std::filesystem::absolute(options.metadata_file).lexically_normal().string();
    if (rec.data_path == rec.metadata_path) {
      return absl::InvalidArgumentError("data and metadata files must differ");
    }
  }
  ASSIGN_OR_RETURN(PoolGeometry geometry,
                   PlanPoolGeometry(data_bytes, options.block_bytes, metadata_bytes,
                                    options.low_water_blocks));
  rec.block_sectors = static_cast<uint32_t>(geometry.block_bytes / kSector);
  rec.data_bytes = geometry.data_bytes;
  rec.metadata_bytes = geometry.metadata_bytes;
  rec.low_water_blocks = geometry.low_water_blocks;
  if (rec.backing == PoolBacking::kFiles) {
    // The kernel writes the new pool's space maps at once; the data file
    // is sparse. (The registry's own commit needs a little too.)
    RETURN_IF_ERROR(CheckFreeSpace(std::filesystem::path(rec.metadata_path).parent_path().string(),
                                   state.path(), geometry.format_bytes + (1 << 20),
                                   absl::StrCat("pool '", name, "': the kernel writes ~",
                                                base::FormatSize(geometry.format_bytes),
                                                " of metadata when it formats ",
                                                base::FormatSize(rec.data_bytes), " of data in ",
                                                base::FormatSize(geometry.block_bytes),
                                                " blocks")));
  }

  ASSIGN_OR_RETURN(PoolLock lock, state.LockPool(name));
  if (state.registry().GetPool(name).ok()) {
    return absl::AlreadyExistsError(absl::StrCat("pool '", name, "' already exists"));
  }
  std::unique_ptr<Pool> pool(new Pool(state, dm, std::string(name)));
  ASSIGN_OR_RETURN(dm::Name dmname, DmName(pool->dm_name()));
  ASSIGN_OR_RETURN(auto existing, dm.Find(dmname));
  if (existing.has_value()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "a device-mapper device named ", pool->dm_name(), " already exists"));
  }

  bool files_made = false;
  std::vector<std::string> made_files;  // files made outside the pool dir
  auto remove_files = [&]() -> absl::Status {
    if (!files_made) return absl::OkStatus();
    std::error_code ec;
    for (const auto& f : made_files) std::filesystem::remove(f, ec);
    std::filesystem::remove_all(state.PoolDir(name), ec);
    files_made = false;
    if (ec) return absl::InternalError(absl::StrCat("removing the pool's files: ", ec.message()));
    return absl::OkStatus();
  };
  auto undo_files = absl::MakeCleanup([&] { (void)remove_files(); });
  if (rec.backing == PoolBacking::kFiles) {
    std::string dir = state.PoolDir(name);
    // Not in the registry: anything there is left from a create that crashed.
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (::mkdir(dir.c_str(), 0700) < 0) {
      return base::ErrnoError(errno, absl::StrCat("creating ", dir));
    }
    files_made = true;
    // Files the user placed elsewhere must be new: never take over (and
    // later delete) a file that holds something else.
    for (const std::string* file : {&rec.data_path, &rec.metadata_path}) {
      if (file->rfind(dir + "/", 0) == 0) continue;
      struct stat st;
      if (::lstat(file->c_str(), &st) == 0) {
        return absl::AlreadyExistsError(absl::StrCat(
            *file, " already exists; give a path for a new file, or remove it"));
      }
    }
    RETURN_IF_ERROR(CreateSparseFile(rec.data_path, rec.data_bytes));
    if (rec.data_path.rfind(dir + "/", 0) != 0) made_files.push_back(rec.data_path);
    RETURN_IF_ERROR(CreateSparseFile(rec.metadata_path, rec.metadata_bytes));
    if (rec.metadata_path.rfind(dir + "/", 0) != 0) made_files.push_back(rec.metadata_path);
  } else {
    ASSIGN_OR_RETURN(bool blank, FirstBlockIsZero(rec.metadata_path));
    if (!blank && !options.force_wipe) {
      return absl::FailedPreconditionError(absl::StrCat(
          "metadata device ", rec.metadata_path,
          " is not blank (its first 4 KiB are not zero; it may hold another "
          "pool); wipe it or pass force_wipe"));
    }
  }
  // A zeroed first metadata block is what makes the kernel format a new pool.
  RETURN_IF_ERROR(ZeroFirstBlock(rec.metadata_path));
  RETURN_IF_ERROR(state.registry().AddPool(rec));
  absl::Status activated = pool->ActivateLocked();
  if (!activated.ok()) {
    // Roll back completely, in the order that frees what the next step may
    // need: the devices (they hold the files), the files (a full disk makes
    // the registry's commit fail), then the registry record.
    std::vector<std::string> left;
    absl::Status down = pool->DeactivateLocked(/*force=*/true);
    if (!down.ok()) left.push_back(std::string(down.message()));
    if (down.ok()) {
      absl::Status removed = remove_files();
      if (!removed.ok()) left.push_back(std::string(removed.message()));
    }
    absl::Status forgot = state.registry().RemovePool(name, /*even_if_pending=*/true);
    if (!forgot.ok()) left.push_back(std::string(forgot.message()));
    std::move(undo_files).Cancel();
    return base::Annotate(
        activated, left.empty()
                       ? absl::StrCat("pool '", name, "' not created (rolled back)")
                       : absl::StrCat("pool '", name, "' not created; rolling back failed: ",
                                      absl::StrJoin(left, "; ")));
  }
  std::move(undo_files).Cancel();
  return pool;
}

absl::StatusOr<std::unique_ptr<Pool>> Pool::Open(StateDir& state,
                                                 const dm::Control& dm,
                                                 absl::string_view name) {
  RETURN_IF_ERROR(ValidatePoolName(name));
  RETURN_IF_ERROR(state.registry().GetPool(name).status());
  std::unique_ptr<Pool> pool(new Pool(state, dm, std::string(name)));
  ASSIGN_OR_RETURN(bool active, pool->IsActive());
  if (active) RETURN_IF_ERROR(pool->Reconcile().status());
  return pool;
}

absl::StatusOr<bool> Pool::IsActive() const {
  ASSIGN_OR_RETURN(dm::Name dmname, DmName(dm_name()));
  ASSIGN_OR_RETURN(auto info, dm_.Find(dmname));
  return info.has_value() && info->live_table();
}

absl::StatusOr<dm::ThinPoolStatus> Pool::KernelStatus(bool commit) const {
  ASSIGN_OR_RETURN(dm::Name dmname, DmName(dm_name()));
  // Without noflush the kernel commits the pool's metadata before answering.
  return dm_.GetThinPoolStatus(dmname, /*noflush=*/!commit);
}

absl::StatusOr<dm::Table> Pool::PoolTable(const PoolRecord& rec, dm::DevNum meta,
                                          dm::DevNum data) const {
  dm::ThinPoolTarget t;
  t.metadata = meta;
  t.data = data;
  t.block_size = dm::Sectors(rec.block_sectors);
  t.low_water_mark = dm::DataBlocks(rec.low_water_blocks);
  t.skip_block_zeroing = HasFeature(rec, "skip_block_zeroing");
  t.ignore_discard = HasFeature(rec, "ignore_discard");
  t.no_discard_passdown = HasFeature(rec, "no_discard_passdown");
  t.error_if_no_space = HasFeature(rec, "error_if_no_space");
  uint64_t block = uint64_t{rec.block_sectors} * kSector;
  uint64_t sectors = (rec.data_bytes / block) * rec.block_sectors;
  return dm::Table::Single(dm::Sectors(sectors), t);
}

// ------------------------------------------------------------ activation ---

absl::Status Pool::Activate() {
  ASSIGN_OR_RETURN(PoolLock lock, state_.LockPool(name_));
  return ActivateLocked();
}

absl::Status Pool::ActivateLocked() {
  ASSIGN_OR_RETURN(PoolRecord rec, Record());
  ASSIGN_OR_RETURN(dm::Name dmname, DmName(dm_name()));
  ASSIGN_OR_RETURN(auto existing, dm_.Find(dmname));
  if (existing.has_value()) {
    if (existing->uuid != dm_uuid()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device-mapper device ", dm_name(), " exists but is not ours (uuid '",
          existing->uuid, "', expected '", dm_uuid(), "')"));
    }
    if (existing->live_table()) {
      RETURN_IF_ERROR(ResumeIfLeftSuspended(*existing, dm_name(), "the pool device"));
      RETURN_IF_ERROR(ResumeThinsLeftSuspended());
      RETURN_IF_ERROR(ReconcileLocked().status());
      return CleanUpQuarantined();
    }
    // Created but never loaded (a crash mid-activation): start over.
    RETURN_IF_ERROR(dm_.Remove(dmname).status());
  }

  // The metadata and data devices.
  std::vector<LoopDevice> loops;  // held until the pool has them open
  dm::DevNum meta_dev, data_dev;
  std::string meta_node;
  if (rec.backing == PoolBacking::kFiles) {
    for (const std::string* file : {&rec.metadata_path, &rec.data_path}) {
      ASSIGN_OR_RETURN(auto found, LoopDevice::FindByBackingFile(*file));
      if (found.has_value()) {
        loops.push_back(std::move(*found));
      } else {
        LoopOptions lo;
        lo.autoclear = true;  // the loop goes away with the pool
        ASSIGN_OR_RETURN(LoopDevice loop, LoopDevice::Attach(*file, lo));
        loops.push_back(std::move(loop));
      }
      ASSIGN_OR_RETURN(uint64_t size, loops.back().SizeBytes());
      uint64_t want = file == &rec.data_path ? rec.data_bytes : rec.metadata_bytes;
      if (size < want) {
        RETURN_IF_ERROR(loops.back().RefreshCapacity());
        ASSIGN_OR_RETURN(size, loops.back().SizeBytes());
        if (size < want) {
          return absl::FailedPreconditionError(absl::StrCat(
              *file, " is ", size, " bytes, smaller than the registered ", want));
        }
      }
    }
    meta_dev = dm::DevNum::FromDevT(loops[0].devnum());
    data_dev = dm::DevNum::FromDevT(loops[1].devnum());
    meta_node = loops[0].path();
  } else {
    ASSIGN_OR_RETURN(meta_dev, dm::DevNum::FromPath(rec.metadata_path));
    ASSIGN_OR_RETURN(data_dev, dm::DevNum::FromPath(rec.data_path));
    meta_node = rec.metadata_path;
  }

  // thin_check an existing pool's metadata before the kernel trusts it.
  ASSIGN_OR_RETURN(bool fresh, FirstBlockIsZero(meta_node));
  if (!fresh) {
    if (auto thin_check = FindProgram("thin_check")) {
      ASSIGN_OR_RETURN(ExecResult r, RunProgram({*thin_check, "-q", meta_node}));
      if (r.exit_code != 0) {
        return absl::DataLossError(absl::StrCat(
            "pool '", name_, "': metadata ", rec.metadata_path,
            " failed thin_check (exit ", r.exit_code, "): ", r.output,
            "; repair it with 'dmthin pool check ", name_, " --repair' (thin_repair)"));
      }
    }
  }

  ASSIGN_OR_RETURN(dm::Table table, PoolTable(rec, meta_dev, data_dev));
  dm::CreateOptions create;
  ASSIGN_OR_RETURN(dm::Uuid uuid, dm::Uuid::Create(dm_uuid()));
  create.uuid = uuid;
  ASSIGN_OR_RETURN(dm::DeviceInfo info, dm_.CreateDevice(dmname, table, create));
  (void)info;
  // The pool holds the loops open now; with autoclear they go with it.
  for (auto& loop : loops) loop.Release();
  Failpoint("after_pool_activate");
  if (FailpointIs("fail_after_pool_activate")) {
    return absl::InternalError("injected failure (DMTHIN_FAILPOINT=fail_after_pool_activate)");
  }
  RETURN_IF_ERROR(ReconcileLocked().status());
  return CleanUpQuarantined();
}

absl::StatusOr<std::vector<std::string>> Pool::ActiveThinDmNames() const {
  ASSIGN_OR_RETURN(auto devices, dm_.List());
  std::string prefix = absl::StrCat(dm_name(), "-");
  std::vector<std::string> out;
  for (const auto& d : devices) {
    if (absl::StartsWith(d.name, prefix)) out.push_back(d.name);
  }
  return out;
}

absl::Status Pool::Deactivate(bool force) {
  ASSIGN_OR_RETURN(PoolLock lock, state_.LockPool(name_));
  return DeactivateLocked(force);
}

absl::Status Pool::DeactivateLocked(bool force) {
  ASSIGN_OR_RETURN(PoolRecord rec, Record());
  ASSIGN_OR_RETURN(std::vector<std::string> thins, ActiveThinDmNames());
  if (!thins.empty() && !force) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pool '", name_, "' has ", thins.size(), " active thin device(s) (",
        absl::StrJoin(thins.begin(), thins.begin() + std::min<size_t>(thins.size(), 5), ", "),
        thins.size() > 5 ? ", ..." : "", "); deactivate them first or force"));
  }
  // Say what holds a thin open before removing anything: a mount (where,
  // from mountinfo) or some other opener.
  for (const auto& t : thins) {
    ASSIGN_OR_RETURN(dm::Name n, DmName(t));
    ASSIGN_OR_RETURN(auto info, dm_.Find(n));
    if (!info.has_value() || info->open_count == 0) continue;
    const std::string node = NodeFor(dm_, t, info->dev);
    std::vector<std::string> mounts = MountPointsOf(info->dev.ToDevT());
    std::string holder =
        mounts.empty()
            ? absl::StrCat("is held open (open count ", info->open_count,
                           ") though not mounted here; find the holder with 'fuser -vm ", node,
                           "' (or a mount in another namespace) and close it")
            : absl::StrCat("is mounted on ", absl::StrJoin(mounts, ", "), "; unmount it ('umount ",
                           mounts.front(), "')");
    return base::WithErrno(
        absl::FailedPreconditionError(absl::StrCat(
            "pool '", name_, "': thin device ", t, " (", node, ", ", info->dev.major, ":",
            info->dev.minor, ") ", holder, ", then deactivate the pool again")),
        EBUSY);
  }
  for (const auto& t : thins) {
    ASSIGN_OR_RETURN(dm::Name n, DmName(t));
    auto removed = dm_.Remove(n);
    if (!removed.ok()) {
      return base::Annotate(removed.status(),
                            absl::StrCat("deactivating thin device ", t));
    }
  }
  ASSIGN_OR_RETURN(dm::Name dmname, DmName(dm_name()));
  ASSIGN_OR_RETURN(auto existing, dm_.Find(dmname));
  if (existing.has_value()) {
    auto removed = dm_.Remove(dmname);
    if (!removed.ok()) {
      return base::Annotate(removed.status(), absl::StrCat("removing pool ", dm_name()));
    }
  }
  if (rec.backing == PoolBacking::kFiles) {
    for (const std::string& file : {rec.metadata_path, rec.data_path}) {
      auto found = LoopDevice::FindByBackingFile(file);
      if (found.ok() && found->has_value()) {
        absl::Status detached = (*found)->Detach();
        if (!detached.ok()) {
          return base::Annotate(detached, absl::StrCat("detaching the loop of ", file));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Pool::Destroy(bool force) {
  ASSIGN_OR_RETURN(PoolLock lock, state_.LockPool(name_));
  ASSIGN_OR_RETURN(PoolRecord rec, Record());
  ASSIGN_OR_RETURN(bool active, IsActive());
  if (active) RETURN_IF_ERROR(DeactivateLocked(force));
  RETURN_IF_ERROR(state_.registry().RemovePool(name_, /*even_if_pending=*/true));
  if (rec.backing == PoolBacking::kFiles) {
    std::error_code ec;
    // The pool's files, wherever they were placed, then its dir.
    for (const std::string& file : {rec.data_path, rec.metadata_path}) {
      std::filesystem::remove(file, ec);
    }
    std::filesystem::remove_all(state_.PoolDir(name_), ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("removing ", state_.PoolDir(name_),
                                              ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- status ---

absl::StatusOr<PoolStatus> Pool::Status() const {
  ASSIGN_OR_RETURN(PoolRecord rec, Record());
  PoolStatus st;
  st.name = name_;
  st.device = dm_name();
  st.block_bytes = uint64_t{rec.block_sectors} * kSector;
  st.transaction_id = rec.transaction_id;
  st.error_if_no_space = HasFeature(rec, "error_if_no_space");
  st.data_total_bytes = rec.data_bytes;
  st.metadata_total_bytes = rec.metadata_bytes;
  ASSIGN_OR_RETURN(auto thins, state_.registry().ListThins(name_));
  st.thin_count = thins.size();
  ASSIGN_OR_RETURN(st.pending, state_.registry().GetPending(name_));
  ASSIGN_OR_RETURN(st.active, IsActive());
  if (!st.active) return st;
  ASSIGN_OR_RETURN(dm::ThinPoolStatus k, KernelStatus());
  st.kernel = k;
  if (!k.ok()) {
    st.failed = true;
    return st;
  }
  st.transaction_id = k.transaction_id;
  st.data_used_bytes = k.used_data.value() * st.block_bytes;
  st.data_total_bytes = k.total_data.value() * st.block_bytes;
  st.metadata_used_bytes = k.used_metadata.value() * dm::kMetaBlockSize;
  st.metadata_total_bytes = k.total_metadata.value() * dm::kMetaBlockSize;
  st.read_only = k.mode == dm::ThinPoolStatus::Mode::kReadOnly;
  st.out_of_data_space = k.mode == dm::ThinPoolStatus::Mode::kOutOfDataSpace;
  st.needs_check = k.needs_check;
  if (k.discard) {
    switch (*k.discard) {
      case dm::ThinPoolStatus::Discard::kPassdown: st.discard = DiscardMode::kPassdown; break;
      case dm::ThinPoolStatus::Discard::kNoPassdown: st.discard = DiscardMode::kNoPassdown; break;
      case dm::ThinPoolStatus::Discard::kIgnore: st.discard = DiscardMode::kIgnore; break;
    }
  }
  if (k.no_space) st.error_if_no_space = *k.no_space == dm::ThinPoolStatus::NoSpace::kError;
  return st;
}

// ---------------------------------------------------------------- resize ---

absl::Status Pool::Resize(std::optional<uint64_t> data_bytes,
                          std::optional<uint64_t> metadata_bytes) {
  ASSIGN_OR_RETURN(PoolLock lock, state_.LockPool(name_));
  ASSIGN_OR_RETURN(PoolRecord rec, Record());
  RETURN_IF_ERROR(ResumeLeftSuspended(/*thins=*/false));
  const uint64_t block = uint64_t{rec.block_sectors} * kSector;
  uint64_t new_data = data_bytes.value_or(rec.data_bytes);
  new_data -= new_data % block;
  uint64_t new_meta = metadata_bytes.value_or(rec.metadata_bytes);
  new_meta -= new_meta % 4096;
  if (new_data < rec.data_bytes || new_meta < rec.metadata_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pool '", name_, "': shrinking is not supported (data ", rec.data_bytes,
        " -> ", new_data, ", metadata ", rec.metadata_bytes, " -> ", new_meta, ")"));
  }
  if (new_meta > kMaxMetadataBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metadata size ", new_meta, " is above the kernel's maximum of ",
        kMaxMetadataBytes, " bytes"));
  }
  if (new_data == rec.data_bytes && new_meta == rec.metadata_bytes) {
    return absl::OkStatus();
  }
  if (new_data > AddressableBytes(block)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pool '", name_, "': with ", base::FormatSize(block), " blocks a pool addresses at most ",
        base::FormatSize(AddressableBytes(block)), " of data (the kernel's metadata maximum at "
        "48 bytes per block); make a new pool with larger blocks for more"));
  }
  const uint64_t format = FormatMetadataBytes(new_data / block);
  if (new_meta < MinMetadataBytes(format)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pool '", name_, "': ", base::FormatSize(new_data), " of data needs at least ",
        base::FormatSize(MinMetadataBytes(format)), " of metadata (its space map alone takes ~",
        base::FormatSize(format), "); grow the metadata too"));
  }
  ASSIGN_OR_RETURN(bool active, IsActive());
  if (rec.backing == PoolBacking::kFiles) {
    // The kernel writes the grown data's space map at once.
    const uint64_t more = format - std::min(format, FormatMetadataBytes(rec.data_bytes / block));
    RETURN_IF_ERROR(CheckFreeSpace(
        std::filesystem::path(rec.metadata_path).parent_path().string(), state_.path(),
        more + (1 << 20),
        absl::StrCat("pool '", name_, "': growing the data to ", base::FormatSize(new_data),
                     " writes ~", base::FormatSize(more), " more metadata")));
    RETURN_IF_ERROR(GrowFile(rec.data_path, new_data));
    RETURN_IF_ERROR(GrowFile(rec.metadata_path, new_meta));
    if (active) {
      for (const std::string& file : {rec.metadata_path, rec.data_path}) {
        ASSIGN_OR_RETURN(auto loop, LoopDevice::FindByBackingFile(file));
        if (!loop.has_value()) {
          return absl::FailedPreconditionError(
              absl::StrCat("pool is active but ", file, " has no loop device"));
        }
        RETURN_IF_ERROR(loop->RefreshCapacity());
      }
    }
  } else {
    ASSIGN_OR_RETURN(uint64_t data_dev, DeviceSize(rec.data_path));
    ASSIGN_OR_RETURN(uint64_t meta_dev, DeviceSize(rec.metadata_path));
    if (new_data > data_dev || new_meta > meta_dev) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pool '", name_, "': grow the devices first (data device ", data_dev,
          " bytes, metadata device ", meta_dev, " bytes)"));
    }
  }
  RETURN_IF_ERROR(state_.registry().SetPoolSizes(name_, new_data, new_meta));
  if (!active) return absl::OkStatus();
  rec.data_bytes = new_data;
  rec.metadata_bytes = new_meta;
  ASSIGN_OR_RETURN(dm::Name dmname, DmName(dm_name()));
  ASSIGN_OR_RETURN(dm::Table live, dm_.GetTable(dmname));
  if (live.targets().size() != 1 ||
      !std::holds_alternative<dm::ThinPoolTarget>(live.targets()[0].params)) {
    return absl::FailedPreconditionError(
        absl::StrCat(dm_name(), " does not have a single thin-pool target"));
  }
  const auto& t = std::get<dm::ThinPoolTarget>(live.targets()[0].params);
  ASSIGN_OR_RETURN(dm::Table table, PoolTable(rec, t.metadata, t.data));
  // Same devices and features, new length; the kernel picks up a grown
  // metadata device when it resumes. Suspend without flushing: a pool that
  // ran out of space holds queued writes that can only finish once it has
  // grown, so a flushing suspend would wait for them (until the kernel's
  // no_space_timeout fails them).
  RETURN_IF_ERROR(dm_.Load(dmname, table));
  dm::SuspendOptions noflush;
  noflush.noflush = true;
  absl::Status suspended = dm_.Suspend(dmname, noflush).status();
  if (!suspended.ok()) {
    (void)dm_.ClearInactive(dmname);
    return base::Annotate(suspended, absl::StrCat("suspending ", dm_name(), " to grow it"));
  }
  Failpoint("after_pool_suspend");
  RETURN_IF_ERROR(dm_.Resume(dmname).status());
  return absl::OkStatus();
}

// ------------------------------------------------------------- protocol ---

absl::Status Pool::SendMessage(const dm::ThinPoolMessage& message) const {
  ASSIGN_OR_RETURN(dm::Name dmname, DmName(dm_name()));
  absl::Status sent = dm_.SendThinPoolMessage(dmname, message);
  if (sent.ok() || base::HasErrno(sent, EEXIST) || base::HasErrno(sent, ENODATA)) {
    return sent;
  }
  // Say why the pool refused, when its status tells.
  auto k = dm_.GetThinPoolStatus(dmname, /*noflush=*/true);
  if (k.ok() && !k->ok()) {
    return base::Annotate(sent, absl::StrCat("pool '", name_, "' has failed"));
  }
  if (k.ok() && k->mode == dm::ThinPoolStatus::Mode::kReadOnly) {
    bool full = k->used_metadata.value() + 8 >= k->total_metadata.value();
    return base::Annotate(
        sent, full ? absl::StrCat("pool '", name_, "' metadata is full (",
                                  k->used_metadata.value(), "/", k->total_metadata.value(),
                                  " blocks); grow its metadata (Resize)")
                   : absl::StrCat("pool '", name_, "' is read-only (metadata error?); "
                                  "deactivate it and run thin_check"));
  }
  return sent;
}

absl::Status Pool::SetTransactionId(uint64_t old_txid, uint64_t new_txid) const {
  // The kernel refuses (EINVAL) unless it is at old_txid: only then look why.
  absl::Status sent = SendMessage(dm::thin_msg::SetTransactionId{old_txid, new_txid});
  if (!sent.ok()) {
    ASSIGN_OR_RETURN(dm::ThinPoolStatus k, KernelStatus());
    if (!k.ok()) {
      return absl::UnavailableError(absl::StrCat("pool '", name_, "' has failed"));
    }
    if (k.transaction_id == new_txid) return absl::OkStatus();  // retried
    if (k.transaction_id != old_txid) {
      return absl::FailedPreconditionError(absl::StrCat(
          "pool '", name_, "': kernel transaction id is ", k.transaction_id,
          ", expected ", old_txid));
    }
    return sent;
  }
  // The kernel commits the pool's metadata after every successful message
  // (pool_message → commit) but a failed commit does not fail the message, so
  // check that the new id and the change it stands for are on disk before the
  // registry says done.
  ASSIGN_OR_RETURN(dm::ThinPoolStatus k, KernelStatus());
  if (!k.ok() || k.transaction_id != new_txid) {
    return absl::DataLossError(absl::StrCat(
        "pool '", name_, "': committing transaction ", new_txid, " failed (kernel at ",
        k.ok() ? absl::StrCat(k.transaction_id) : std::string("Fail"), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Pool::Reconcile() {
  ASSIGN_OR_RETURN(PoolLock lock, state_.LockPool(name_));
  RETURN_IF_ERROR(ActivePoolDeviceLocked().status());
  RETURN_IF_ERROR(ResumeThinsLeftSuspended());
  ASSIGN_OR_RETURN(std::string done, ReconcileLocked());
  RETURN_IF_ERROR(CleanUpQuarantined());
  if (!done.empty()) recovered_.push_back(done);
  return done;
}

std::vector<std::string> Pool::TakeRecovered() {
  std::vector<std::string> out;
  out.swap(recovered_);
  return out;
}

// Every suspend of ours (a snapshot's origin, the pool while it grows)
// happens under the pool lock and is resumed before the lock is released,
// so whatever is still suspended when we hold the lock was left by a process
// that died in between (kill -9), and all I/O to it hangs until it is
// resumed. The pool device always (every operation looks it up anyway, in
// PoolDeviceLocked); its thins when `thins` (all entry points, and an
// operation while a snapshot is pending: the only time thins are
// suspended): one DM_DEV_STATUS each.
absl::Status Pool::ResumeIfLeftSuspended(const dm::DeviceInfo& info, const std::string& dm_name,
                                         absl::string_view what) {
  if (!info.live_table() || !info.suspended()) return absl::OkStatus();
  ASSIGN_OR_RETURN(dm::Name n, DmName(dm_name));
  // A pool suspended while growing has its grown table loaded: resuming
  // puts it live, as the registry already records.
  auto resumed = dm_.Resume(n);
  if (!resumed.ok()) {
    return base::Annotate(resumed.status(),
                          absl::StrCat("resuming ", what, " ", dm_name, ", left suspended"));
  }
  recovered_.push_back(absl::StrCat("resumed ", what, " ", dm_name,
                                    ", left suspended by a process that died"));
  return absl::OkStatus();
}

absl::Status Pool::ResumeThinsLeftSuspended() {
  ASSIGN_OR_RETURN(std::vector<std::string> active, ActiveThinDmNames());
  for (const auto& t : active) {
    ASSIGN_OR_RETURN(dm::Name n, DmName(t));
    ASSIGN_OR_RETURN(auto info, dm_.Find(n));
    if (info.has_value()) RETURN_IF_ERROR(ResumeIfLeftSuspended(*info, t, "thin device"));
  }
  return absl::OkStatus();
}

absl::Status Pool::ResumeLeftSuspended(bool thins) {
  RETURN_IF_ERROR(PoolDeviceLocked().status());
  if (!thins) return absl::OkStatus();
  return ResumeThinsLeftSuspended();
}

absl::StatusOr<std::optional<dm::DeviceInfo>> Pool::PoolDeviceLocked() {
  ASSIGN_OR_RETURN(dm::Name n, DmName(dm_name()));
  ASSIGN_OR_RETURN(std::optional<dm::DeviceInfo> info, dm_.Find(n));
  if (!info.has_value() || !info->live_table()) return std::optional<dm::DeviceInfo>();
  RETURN_IF_ERROR(ResumeIfLeftSuspended(*info, dm_name(), "the pool device"));
  return info;
}

absl::StatusOr<dm::DeviceInfo> Pool::ActivePoolDeviceLocked() {
  ASSIGN_OR_RETURN(std::optional<dm::DeviceInfo> info, PoolDeviceLocked());
  if (!info.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat("pool '", name_, "' is not active"));
  }
  return *info;
}

// Quarantined ids are never handed out again, but a device the kernel still
// has under such an id only wastes space: delete it once the pool can.
absl::Status Pool::CleanUpQuarantined() {
  ASSIGN_OR_RETURN(auto quarantined, state_.registry().ListQuarantined(name_));
  if (quarantined.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(dm::ThinPoolStatus k, KernelStatus());
  if (!k.ok() || k.mode != dm::ThinPoolStatus::Mode::kReadWrite) return absl::OkStatus();
  for (const auto& q : quarantined) {
    absl::Status deleted = SendMessage(dm::thin_msg::Delete{q.dev_id});
    if (!deleted.ok() && !base::HasErrno(deleted, ENODATA)) {
      return base::Annotate(deleted, absl::StrCat("removing quarantined device ", q.dev_id));
    }
  }
  (void)KernelStatus(/*commit=*/true);
  return absl::OkStatus();
}

namespace {

absl::Status PoolFailedError(absl::string_view pool, absl::string_view metadata_path) {
  return absl::FailedPreconditionError(absl::StrCat(
      "pool '", pool, "' has failed in the kernel; deactivate it and run "
      "thin_check on ", metadata_path));
}

absl::Status DisagreeError(absl::string_view pool, uint64_t registry_txid, uint64_t kernel_txid) {
  return absl::DataLossError(absl::StrCat(
      "pool '", pool, "': registry is at transaction ", registry_txid,
      " but the pool metadata at ", kernel_txid,
      " with no operation pending; the registry and the pool disagree"));
}

}  // namespace

absl::StatusOr<PendingOp> Pool::BeginLocked(
    absl::FunctionRef<absl::StatusOr<PendingOp>(std::optional<PendingOp>* blocking)> begin,
    bool* reconciled) {
  std::optional<PendingOp> blocking;
  absl::StatusOr<PendingOp> op = begin(&blocking);
  if (op.ok() || !blocking.has_value()) return op;
  RETURN_IF_ERROR(ReconcileLocked().status());
  *reconciled = true;
  return begin(nullptr);
}

absl::Status Pool::CheckIntentLocked(const PendingOp& op, bool reconciled) {
  // Reconciled under this same lock: the kernel is where the registry is.
  if (reconciled) return absl::OkStatus();
  absl::Status disagree;
  absl::StatusOr<dm::ThinPoolStatus> k = KernelStatus();
  if (!k.ok()) {
    disagree = k.status();
  } else if (!k->ok()) {
    auto rec = Record();
    disagree = PoolFailedError(name_, rec.ok() ? rec->metadata_path : std::string("its metadata"));
  } else if (k->transaction_id != op.old_txid) {
    disagree = DisagreeError(name_, op.old_txid, k->transaction_id);
  }
  if (disagree.ok()) return absl::OkStatus();
  // Nothing was sent: withdraw the intent, as if it had never been made.
  absl::Status withdrawn = state_.registry().AbortOp(op, std::nullopt);
  if (!withdrawn.ok()) {
    return base::Annotate(disagree, absl::StrCat("(withdrawing the intent failed: ",
                                                 withdrawn.message(), ")"));
  }
  return disagree;
}

absl::StatusOr<std::string> Pool::ReconcileLocked() {
  ASSIGN_OR_RETURN(PoolRecord rec, Record());
  ASSIGN_OR_RETURN(dm::ThinPoolStatus k, KernelStatus());
  if (!k.ok()) return PoolFailedError(name_, rec.metadata_path);
  ASSIGN_OR_RETURN(auto pending, state_.registry().GetPending(name_));
  if (pending.has_value() && pending->kind == OpKind::kCreateSnap) {
    RETURN_IF_ERROR(ResumeThinsLeftSuspended());
  }
  if (!pending.has_value()) {
    if (k.transaction_id != rec.transaction_id) {
      return DisagreeError(name_, rec.transaction_id, k.transaction_id);
    }
    return std::string();
  }
  const PendingOp& op = *pending;
  const std::string what = absl::StrCat(OpKindName(op.kind), " of device ", op.dev_id);
  if (k.transaction_id == op.new_txid) {
    RETURN_IF_ERROR(state_.registry().CommitOp(op));
    return absl::StrCat("rolled forward ", what);
  }
  if (k.transaction_id != op.old_txid) {
    return absl::DataLossError(absl::StrCat(
        "pool '", name_, "': pending ", what, " expects transaction ", op.old_txid,
        " or ", op.new_txid, " but the pool metadata is at ", k.transaction_id));
  }
  if (op.kind == OpKind::kDelete) {
    RETURN_IF_ERROR(FinishDelete(op));
    return absl::StrCat("rolled forward ", what);
  }
  RETURN_IF_ERROR(RollBackCreate(op));
  return absl::StrCat("rolled back ", what);
}

// The kernel is at op.old_txid: undo a create whose message may have landed.
absl::Status Pool::RollBackCreate(const PendingOp& op) {
  // A create asked to activate may have got its device active (CreateLocked
  // activates while the transaction id is set): it must go first.
  auto created = state_.registry().GetThinById(name_, op.dev_id);
  if (created.ok()) (void)DeactivateThinLocked(*created);
  absl::Status deleted = SendMessage(dm::thin_msg::Delete{op.dev_id});
  if (deleted.ok() || base::HasErrno(deleted, ENODATA)) {
    return state_.registry().AbortOp(op, std::nullopt);
  }
  // The device is in an unknown state: never hand its id out again.
  return state_.registry().AbortOp(
      op, absl::StrCat("rolling back ", OpKindName(op.kind), " failed: ",
                       deleted.message()));
}

// The kernel is at op.old_txid: (re)send the delete and commit.
absl::Status Pool::FinishDelete(const PendingOp& op) {
  absl::Status deleted = SendMessage(dm::thin_msg::Delete{op.dev_id});
  if (!deleted.ok() && !base::HasErrno(deleted, ENODATA)) {
    // Restore the device in the registry; the id stays.
    RETURN_IF_ERROR(state_.registry().AbortOp(op, std::nullopt));
    return base::Annotate(deleted, absl::StrCat("deleting thin device ", op.dev_id));
  }
  RETURN_IF_ERROR(SetTransactionId(op.old_txid, op.new_txid));
  return state_.registry().CommitOp(op);
}

// ----------------------------------------------------------------- thins ---

absl::StatusOr<ThinInfo> Pool::CreateThin(absl::string_view name, uint64_t size_bytes,
                                          bool activate) {
  RETURN_IF_ERROR(ValidateThinName(name));
  if (size_bytes == 0 || size_bytes % kSector != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "thin device size ", size_bytes, " bytes must be a positive multiple of 512"));
  }
  if (size_bytes > (uint64_t{1} << 60)) {
    return absl::InvalidArgumentError(
        absl::StrCat("thin device size ", size_bytes, " bytes is too large"));
  }
  ASSIGN_OR_RETURN(PoolLock lock, state_.LockPool(name_));
  return CreateLocked(name, size_bytes, /*origin=*/std::nullopt, activate);
}

absl::StatusOr<ThinInfo> Pool::Snapshot(absl::string_view origin, absl::string_view name,
                                        bool activate) {
  RETURN_IF_ERROR(ValidateThinName(name));
  RETURN_IF_ERROR(ValidateThinName(origin));
  ASSIGN_OR_RETURN(PoolLock lock, state_.LockPool(name_));
  ASSIGN_OR_RETURN(ThinRecord o, state_.registry().GetThin(name_, origin));
  if (o.state != ThinState::kReady) {
    return absl::FailedPreconditionError(absl::StrCat(
        "origin '", origin, "' is ", ThinStateName(o.state)));
  }
  return CreateLocked(name, o.size_bytes, o, activate);
}

absl::StatusOr<ThinInfo> Pool::CreateLocked(absl::string_view name, uint64_t size,
                                            const std::optional<ThinRecord>& origin,
                                            bool activate) {
  // One DM_DEV_STATUS of the pool: active, not left suspended, its devnum.
  ASSIGN_OR_RETURN(dm::DeviceInfo pool_dev, ActivePoolDeviceLocked());
  bool reconciled = false;
  std::optional<uint32_t> origin_id;
  if (origin) origin_id = origin->dev_id;
  // A fresh id the kernel already has (an orphan from outside the registry)
  // is quarantined and the next id tried.
  for (int attempt = 0;; ++attempt) {
    ASSIGN_OR_RETURN(PendingOp op, BeginLocked(
                                       [&](std::optional<PendingOp>* blocking) {
                                         return state_.registry().BeginCreate(name_, name, size,
                                                                              origin_id, blocking);
                                       },
                                       &reconciled));
    RETURN_IF_ERROR(CheckIntentLocked(op, reconciled));
    Failpoint("after_intent");
    absl::Status sent;
    if (origin) {
      ASSIGN_OR_RETURN(dm::Name origin_dm, DmName(ThinDmName(origin->name)));
      ASSIGN_OR_RETURN(auto origin_info, dm_.Find(origin_dm));
      bool suspend = origin_info.has_value() && origin_info->live_table() &&
                     !origin_info->suspended();
      if (suspend) {
        // Flush and freeze the origin so the snapshot is consistent.
        absl::Status s = dm_.Suspend(origin_dm).status();
        if (!s.ok()) {
          (void)ReconcileLocked();
          return base::Annotate(s, absl::StrCat("suspending origin ", origin->name));
        }
      }
      {
        absl::Cleanup resume = [&] {
          if (suspend) {
            absl::Status r = dm_.Resume(origin_dm).status();
            if (!r.ok() && sent.ok()) {
              sent = base::Annotate(r, absl::StrCat("resuming origin ", origin->name));
            }
          }
        };
        Failpoint("after_suspend");
        sent = SendMessage(dm::thin_msg::CreateSnap{op.dev_id, origin->dev_id});
      }
    } else {
      sent = SendMessage(dm::thin_msg::CreateThin{op.dev_id});
    }
    if (base::HasErrno(sent, EEXIST) && attempt < 3) {
      RETURN_IF_ERROR(state_.registry().AbortOp(
          op, "the kernel already had this id when it was allocated (orphan)"));
      continue;
    }
    if (!sent.ok()) {
      (void)ReconcileLocked();  // rolls the intent back
      return base::Annotate(sent, absl::StrCat("creating thin device '", name,
                                               "' (id ", op.dev_id, ") in pool '",
                                               name_, "'"));
    }
    Failpoint("after_message");
    // The new device is in the pool's committed metadata now. When asked to
    // activate it, do so while the transaction id is set and the registry
    // commits: the thin target's constructor waits for an RCU grace period
    // (drivers/md/dm-thin.c thin_ctr → synchronize_rcu) and the
    // set_transaction_id message for a metadata commit, so the two overlap.
    // (libdm's Control and the registry may be used from two threads.) If
    // the process dies meanwhile, a rollback deactivates it first.
    ThinRecord made;
    made.pool = name_;
    made.name = std::string(name);
    made.dev_id = op.dev_id;
    made.size_bytes = size;
    made.parent_id = origin_id;
    std::future<absl::StatusOr<dm::DeviceInfo>> activation;
    if (activate) {
      activation = std::async(std::launch::async, [this, made, pool = pool_dev.dev] {
        return ActivateDevice(made, pool);
      });
      // For the crash tests: die with the device active, before the commit.
      if (FailpointIs("activated_before_txid")) {
        activation.wait();
        Failpoint("activated_before_txid");
      }
    }
    absl::Status txid = SetTransactionId(op.old_txid, op.new_txid);
    if (!txid.ok()) {
      if (activation.valid()) (void)activation.get();
      (void)ReconcileLocked();
      return txid;
    }
    Failpoint("after_set_txid");
    absl::Status committed = state_.registry().CommitOp(op);
    std::optional<absl::StatusOr<dm::DeviceInfo>> activated;
    if (activation.valid()) activated = activation.get();
    RETURN_IF_ERROR(committed);
    // The registry's row is `made`, ready (CommitOp checked the pending op).
    made.state = ThinState::kReady;
    ThinInfo info = RecordInfo(made);
    if (origin) info.parent_name = origin->name;
    if (!activated.has_value()) return info;  // not asked to activate: inactive
    if (!activated->ok()) {
      return base::Annotate(activated->status(), absl::StrCat("thin device '", name,
                                                              "' was created but not activated"));
    }
    Failpoint("after_activate");
    return WithDevice(std::move(info), **activated);
  }
}

absl::Status Pool::DeleteThin(absl::string_view name, const DeleteOptions& options) {
  RETURN_IF_ERROR(ValidateThinName(name));
  ASSIGN_OR_RETURN(PoolLock lock, state_.LockPool(name_));
  ASSIGN_OR_RETURN(dm::DeviceInfo pool_dev, ActivePoolDeviceLocked());
  bool reconciled = false;
  ASSIGN_OR_RETURN(ThinRecord thin, state_.registry().GetThin(name_, name));
  if (options.discard) {
    // Discarding destroys the data before the intent exists: the kernel
    // must be seen to agree with the registry first.
    if (!reconciled) RETURN_IF_ERROR(ReconcileLocked().status());
    reconciled = true;
    ASSIGN_OR_RETURN(ThinInfo info, ActivateThinLocked(thin, pool_dev.dev));
    int fd = ::open(info.device.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return base::ErrnoError(errno, absl::StrCat("opening ", info.device));
    base::UniqueFd f(fd);
    uint64_t range[2] = {0, thin.size_bytes};
    if (::ioctl(fd, BLKDISCARD, range) < 0 && errno != EOPNOTSUPP) {
      return base::ErrnoError(errno, absl::StrCat("BLKDISCARD on ", info.device));
    }
  }
  RETURN_IF_ERROR(DeactivateThinLocked(thin));
  // An operation a dead process left pending is reconciled by BeginLocked,
  // after this deactivation: whatever it finishes or undoes, this thin
  // goes (or is gone: NotFound).
  ASSIGN_OR_RETURN(PendingOp op, BeginLocked(
                                     [&](std::optional<PendingOp>* blocking) {
                                       return state_.registry().BeginDelete(name_, name, blocking);
                                     },
                                     &reconciled));
  RETURN_IF_ERROR(CheckIntentLocked(op, reconciled));
  Failpoint("after_intent");
  absl::Status sent = SendMessage(dm::thin_msg::Delete{op.dev_id});
  if (!sent.ok() && !base::HasErrno(sent, ENODATA)) {
    (void)state_.registry().AbortOp(op, std::nullopt);
    return base::Annotate(sent, absl::StrCat("deleting thin device '", name, "'"));
  }
  Failpoint("after_message");
  absl::Status txid = SetTransactionId(op.old_txid, op.new_txid);
  if (!txid.ok()) {
    (void)ReconcileLocked();
    return txid;
  }
  Failpoint("after_set_txid");
  return state_.registry().CommitOp(op);
}

absl::StatusOr<ThinInfo> Pool::ResizeThin(absl::string_view name, uint64_t size_bytes) {
  RETURN_IF_ERROR(ValidateThinName(name));
  if (size_bytes == 0 || size_bytes % kSector != 0 || size_bytes > (uint64_t{1} << 60)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "thin device size ", size_bytes, " bytes must be a positive multiple of 512 up to 2^60"));
  }
  ASSIGN_OR_RETURN(PoolLock lock, state_.LockPool(name_));
  ASSIGN_OR_RETURN(ThinRecord thin, state_.registry().GetThin(name_, name));
  if (thin.state != ThinState::kReady) {
    return absl::FailedPreconditionError(absl::StrCat(
        "thin device '", name, "' is ", ThinStateName(thin.state)));
  }
  if (size_bytes < thin.size_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "thin device '", name, "' is ", thin.size_bytes, " bytes; shrinking to ", size_bytes,
        " is not supported"));
  }
  if (size_bytes > thin.size_bytes) {
    RETURN_IF_ERROR(state_.registry().SetThinSize(name_, name, size_bytes));
    thin.size_bytes = size_bytes;
  }
  Failpoint("after_thin_size");
  ASSIGN_OR_RETURN(dm::Name n, DmName(ThinDmName(thin.name)));
  ASSIGN_OR_RETURN(auto existing, dm_.Find(n));
  if (existing.has_value() && existing->live_table()) {
    ASSIGN_OR_RETURN(dm::Table live, dm_.GetTable(n));
    if (live.targets().size() != 1 ||
        !std::holds_alternative<dm::ThinTarget>(live.targets()[0].params)) {
      return absl::FailedPreconditionError(
          absl::StrCat(ThinDmName(thin.name), " does not have a single thin target"));
    }
    if (dm::BytesOf(live.size()) < thin.size_bytes) {
      // Same target, new length; the suspend flushes (the device is fine,
      // unlike a full pool's), the resume makes the new size live.
      dm::Table table = dm::Table::Single(dm::Sectors(thin.size_bytes / kSector),
                                          live.targets()[0].params);
      RETURN_IF_ERROR(dm_.Load(n, table));
      absl::Status suspended = dm_.Suspend(n).status();
      if (!suspended.ok()) {
        (void)dm_.ClearInactive(n);
        return base::Annotate(suspended, absl::StrCat("suspending ", ThinDmName(thin.name),
                                                      " to grow it"));
      }
      RETURN_IF_ERROR(dm_.Resume(n).status());
    }
  }
  return Describe(thin);
}

absl::StatusOr<ThinInfo> Pool::ActivateThin(absl::string_view name) {
  RETURN_IF_ERROR(ValidateThinName(name));
  ASSIGN_OR_RETURN(PoolLock lock, state_.LockPool(name_));
  ASSIGN_OR_RETURN(ThinRecord thin, state_.registry().GetThin(name_, name));
  if (thin.state != ThinState::kReady) {
    return absl::FailedPreconditionError(absl::StrCat(
        "thin device '", name, "' is ", ThinStateName(thin.state)));
  }
  return ActivateThinLocked(thin);
}

absl::StatusOr<ThinInfo> Pool::ActivateThinLocked(const ThinRecord& thin,
                                                 std::optional<dm::DevNum> pool_dev) {
  ASSIGN_OR_RETURN(dm::DeviceInfo dev, ActivateDevice(thin, pool_dev));
  return Describe(thin, dev);
}

absl::StatusOr<dm::DeviceInfo> Pool::ActivateDevice(const ThinRecord& thin,
                                                    std::optional<dm::DevNum> pool_dev) const {
  ASSIGN_OR_RETURN(dm::Name n, DmName(ThinDmName(thin.name)));
  ASSIGN_OR_RETURN(auto existing, dm_.Find(n));
  if (existing.has_value() && existing->live_table()) {
    if (existing->uuid != ThinDmUuid(thin.dev_id)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device-mapper device ", ThinDmName(thin.name), " exists with uuid '",
          existing->uuid, "', expected '", ThinDmUuid(thin.dev_id), "'"));
    }
    return *existing;
  }
  if (existing.has_value()) RETURN_IF_ERROR(dm_.Remove(n).status());
  if (!pool_dev.has_value()) {
    ASSIGN_OR_RETURN(dm::Name pool_name, DmName(dm_name()));
    ASSIGN_OR_RETURN(auto pool_info, dm_.Find(pool_name));
    if (!pool_info.has_value() || !pool_info->live_table()) {
      return absl::FailedPreconditionError(absl::StrCat("pool '", name_, "' is not active"));
    }
    pool_dev = pool_info->dev;
  }
  dm::ThinTarget target;
  target.pool = *pool_dev;
  target.device_id = thin.dev_id;
  dm::Table table = dm::Table::Single(dm::Sectors(thin.size_bytes / kSector), target);
  dm::CreateOptions create;
  ASSIGN_OR_RETURN(dm::Uuid uuid, dm::Uuid::Create(ThinDmUuid(thin.dev_id)));
  create.uuid = uuid;
  auto created = dm_.CreateDevice(n, table, create);
  if (!created.ok()) {
    return base::Annotate(created.status(),
                          absl::StrCat("activating thin device '", thin.name, "'"));
  }
  return *created;
}

absl::Status Pool::DeactivateThin(absl::string_view name) {
  RETURN_IF_ERROR(ValidateThinName(name));
  ASSIGN_OR_RETURN(PoolLock lock, state_.LockPool(name_));
  ASSIGN_OR_RETURN(ThinRecord thin, state_.registry().GetThin(name_, name));
  return DeactivateThinLocked(thin);
}

absl::Status Pool::DeactivateThinLocked(const ThinRecord& thin) {
  ASSIGN_OR_RETURN(dm::Name n, DmName(ThinDmName(thin.name)));
  ASSIGN_OR_RETURN(auto existing, dm_.Find(n));
  if (!existing.has_value()) return absl::OkStatus();
  if (existing->open_count > 0) {
    return base::WithErrno(absl::FailedPreconditionError(absl::StrCat(
                               "thin device '", thin.name, "' is in use (open count ",
                               existing->open_count, "; mounted?)")),
                           EBUSY);
  }
  auto removed = dm_.Remove(n);
  if (!removed.ok()) {
    return base::Annotate(removed.status(),
                          absl::StrCat("deactivating thin device '", thin.name, "'"));
  }
  return absl::OkStatus();
}

ThinInfo Pool::RecordInfo(const ThinRecord& thin) const {
  ThinInfo info;
  info.name = thin.name;
  info.dev_id = thin.dev_id;
  info.size_bytes = thin.size_bytes;
  info.parent_id = thin.parent_id;
  info.state = thin.state;
  info.dm_name = ThinDmName(thin.name);
  info.dm_uuid = ThinDmUuid(thin.dev_id);
  return info;
}

absl::StatusOr<ThinInfo> Pool::Describe(const ThinRecord& thin,
                                        std::optional<dm::DeviceInfo> live) const {
  ThinInfo info = RecordInfo(thin);
  if (thin.parent_id) {
    auto parent = state_.registry().GetThinById(name_, *thin.parent_id);
    if (parent.ok()) info.parent_name = parent->name;
  }
  if (!live.has_value()) {
    ASSIGN_OR_RETURN(dm::Name n, DmName(info.dm_name));
    ASSIGN_OR_RETURN(live, dm_.Find(n));
  }
  if (live.has_value() && live->live_table()) return WithDevice(std::move(info), *live);
  return info;
}

ThinInfo Pool::WithDevice(ThinInfo info, const dm::DeviceInfo& dev) const {
  info.active = true;
  info.devnum = dev.dev;
  info.device = NodeFor(dm_, info.dm_name, dev.dev);
  auto n = DmName(info.dm_name);
  if (n.ok()) {
    auto st = dm_.GetThinStatus(*n);
    if (st.ok() && st->ok()) info.mapped_bytes = dm::BytesOf(st->mapped);
  }
  return info;
}

absl::StatusOr<ThinInfo> Pool::GetThinInfo(absl::string_view name) const {
  RETURN_IF_ERROR(ValidateThinName(name));
  ASSIGN_OR_RETURN(ThinRecord thin, state_.registry().GetThin(name_, name));
  return Describe(thin);
}

absl::StatusOr<std::vector<ThinInfo>> Pool::ListThins() const {
  ASSIGN_OR_RETURN(auto thins, state_.registry().ListThins(name_));
  ASSIGN_OR_RETURN(auto active_names, ActiveThinDmNames());
  std::sort(active_names.begin(), active_names.end());
  std::vector<ThinInfo> out;
  out.reserve(thins.size());
  for (const auto& t : thins) {
    if (std::binary_search(active_names.begin(), active_names.end(), ThinDmName(t.name))) {
      ASSIGN_OR_RETURN(ThinInfo info, Describe(t));
      out.push_back(std::move(info));
    } else {
      out.push_back(RecordInfo(t));  // inactive: the registry says it all
    }
  }
  // Parent names from the same listing (no per-device lookups).
  std::map<uint32_t, std::string> names;
  for (const auto& t : thins) names[t.dev_id] = t.name;
  for (auto& info : out) {
    if (!info.parent_id) continue;
    auto it = names.find(*info.parent_id);
    if (it != names.end()) info.parent_name = it->second;
  }
  return out;
}

}  // namespace thinpool
