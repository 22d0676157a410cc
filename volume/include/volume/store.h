// Managed volumes: named, sized filesystems for containers, kept in a volume
// store with its own registry.
//
// Two backends:
//   - thin: one thin device of a thinpool pool per volume, with its own ext4
//     (or xfs) filesystem, mounted under <root>/mnt/<name> while in use;
//     snapshots and clones are thin snapshots; usage is mapped bytes.
//   - directory: one directory per volume under the store's data dir. On
//     btrfs it is a subvolume with a qgroup limit (the size; a write past it
//     fails with EDQUOT); on ext4/xfs with project quota enforced, a
//     directory in a project of its own whose limit is the size (EDQUOT on
//     ext4, ENOSPC on xfs); elsewhere a plain directory, where a size is
//     refused since nothing can enforce it.
//
// Layout of a store's root (created 0700):
//   <root>/volumes.db     SQLite registry (base/sqlite.h)
//   <root>/lock           flock()ed around every change
//   <root>/mnt/<name>     mount points of thin volumes
//   <data dir>/<name>     directory volumes (default <root>/data)
//
// Every change follows the registry discipline of thinpool and graph:
// intent (a row in state creating/removing) → act on the kernel/filesystem
// → done (row ready / row gone). Open leaves interrupted work alone; Check
// reports it and Check(repair) finishes or undoes it. A registry missing
// next to existing volumes, or one written by something else, is an error,
// never a fresh start.
//
// Mount references are counted per (volume, caller) and in total: a caller
// id need not be unique (podman passes one constant id), so a caller that
// mounts twice must unmount twice. References carry the boot id: after a
// reboot they are stale and dropped.
//
// Failpoints (base/failpoint.h): volume_create_after_intent,
// volume_create_after_act, volume_remove_after_intent,
// volume_remove_after_act, volume_mount_after_act, volume_unmount_after_act,
// volume_grow_after_intent, volume_grow_after_act.
#ifndef DMTHIN_VOLUME_STORE_H_
#define DMTHIN_VOLUME_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace volume {

// Volume names: 1-64 of [A-Za-z0-9_.-], starting with a letter or digit
// (Docker's rule, with a length bound).
absl::Status ValidateVolumeName(absl::string_view name);

enum class Backend { kThin, kDirectory };
absl::string_view BackendName(Backend backend);
absl::StatusOr<Backend> ParseBackend(absl::string_view name);

struct StoreOptions {
  std::string root;  // absolute; the store's own directory
  // Where directory volumes live; default <root>/data. Recorded at the
  // first open; a later open naming another one is refused.
  std::string data_dir;
  // Thin backend: the thinpool state dir (default /var/lib/dmthin) and the
  // pool to take devices from. Recorded at the first open that names a
  // pool; later opens may leave both empty, and may not name another.
  // No pool at all: no thin backend.
  std::string thin_state_dir;
  std::string pool;
};

struct CreateOptions {
  // Bytes; 0 = no size (directory backend: unlimited; thin: refused).
  uint64_t size_bytes = 0;
  std::string fs;  // thin: "ext4" (default) or "xfs"; directory: ignored
  std::map<std::string, std::string> labels;
  // The default backend is thin when the store has a pool, else directory.
  std::optional<Backend> backend;
};

struct VolumeInfo {
  std::string name;
  Backend backend = Backend::kDirectory;
  std::string state;      // "ready", or "creating"/"removing" (interrupted)
  std::string fs;         // "ext4", "xfs", "btrfs", or the data dir's fs
  uint64_t size_bytes = 0;  // 0: unlimited
  std::string origin;     // volume it was snapshotted from, if any
  std::map<std::string, std::string> labels;
  std::string path;       // where the data is (thin: while mounted)
  uint64_t mount_refs = 0;  // total references (this boot)
  bool mounted = false;   // thin: mounted now; directory: mount_refs > 0
  bool populated = false; // copy-up done (or skipped)
  int64_t created_unix = 0;
};

struct Usage {
  uint64_t used_bytes = 0;  // thin: mapped; btrfs: qgroup referenced
  uint64_t size_bytes = 0;  // 0: unlimited
};

struct VolumeCheckReport {
  std::vector<std::string> findings;  // problems still present
  std::vector<std::string> actions;   // what repair did
  bool clean() const { return findings.empty(); }
};


class VolumeStore {
 public:
  static absl::StatusOr<std::unique_ptr<VolumeStore>> Open(const StoreOptions& options);
  ~VolumeStore();
  VolumeStore(const VolumeStore&) = delete;
  VolumeStore& operator=(const VolumeStore&) = delete;

  const std::string& root() const { return root_; }

  absl::StatusOr<VolumeInfo> Create(absl::string_view name, const CreateOptions& options);
  // A new volume `name` with the contents of `source` (thin: a thin
  // snapshot; btrfs: a subvolume snapshot, with the source's size limit).
  // `snapshot` is a point-in-time copy meant to be kept; `clone` the same
  // operation meant to be used — both give a writable volume. The source
  // may be mounted.
  absl::StatusOr<VolumeInfo> Snapshot(absl::string_view source, absl::string_view name,
                                      const std::map<std::string, std::string>& labels = {});
  // Refused (FailedPrecondition, EBUSY) while mounted unless `force`, which
  // unmounts first; refused while snapshots made from it exist (thin keeps
  // working either way, the refusal keeps "origin" honest) unless `force`.
  absl::Status Remove(absl::string_view name, bool force = false);

  // Counts a reference for `caller` and returns the path. The first
  // reference mounts a thin volume.
  absl::StatusOr<std::string> Mount(absl::string_view name, absl::string_view caller);
  // Drops one reference of `caller` (FailedPrecondition if it holds none);
  // the last reference unmounts a thin volume.
  absl::Status Unmount(absl::string_view name, absl::string_view caller);
  // Where the volume's data is; "" for a thin volume not mounted.
  absl::StatusOr<std::string> Path(absl::string_view name);

  absl::StatusOr<VolumeInfo> Get(absl::string_view name);
  absl::StatusOr<std::vector<VolumeInfo>> List();
  absl::StatusOr<Usage> GetUsage(absl::string_view name);
  // Grows the volume to `size_bytes` (never shrinks): thin, the device
  // then its filesystem online (mounted for it if need be); directories, a
  // new limit. Intent (the new size, apart from the recorded one) → act →
  // done (the new size recorded): a grow cut short is finished by
  // Check(repair); the recorded size is never above what was applied.
  absl::Status Grow(absl::string_view name, uint64_t size_bytes);

  // Copies the tree at `source` into the volume once, if it is still
  // unpopulated and empty (owners, modes, xattrs, hard links, holes kept);
  // marks it populated. `skip` (Docker's nocopy) only marks it.
  absl::Status Populate(absl::string_view name, const std::string& source, bool skip = false);

  // Registry against the filesystem/kernel; with `repair`, interrupted
  // creates are undone, interrupted removes finished, references that do
  // not match the mounts dropped, mounts nobody references unmounted.
  absl::StatusOr<VolumeCheckReport> Check(bool repair);

 private:
  class Impl;
  explicit VolumeStore(std::string root);
  std::string root_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace volume
DMTHIN_API_END

#endif  // DMTHIN_VOLUME_STORE_H_
