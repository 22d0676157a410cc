// graph::Driver — the interface every layer storage driver implements.
//
// In the spirit of Docker's graphdriver (Create/Remove/Get/Put/Exists/Status/
// Cleanup + Diff/ApplyDiff/Changes/DiffSize) with a containerd-style
// description of mounts (Mounts) for callers that mount themselves.
//
// Vocabulary:
//  - A layer is named by an `id` chosen by the caller (the layer store uses a
//    random cache id). Ids are validated by ValidateLayerId.
//  - A layer has at most one parent, fixed at Create. An empty parent means a
//    base layer.
//  - Image layers are created read-only (CreateOptions::read_write = false)
//    and filled once with ApplyDiff; container layers are read-write.
//  - Get mounts (or otherwise materialises) the layer's full view — parent
//    chain plus its own changes — and returns the directory. Get/Put are
//    reference counted across processes (a lock-protected count under the
//    driver root); the last Put unmounts.
//  - Diff/ApplyDiff speak OCI layer tarballs (pax tar, OCI whiteouts
//    `.wh.NAME` and `.wh..wh..opq`); each driver converts whiteouts to and from
//    its native form.
//
// Thread safety: a Driver may be used from several threads and processes at
// once for different ids; concurrent operations on the same id are
// serialised by the driver only for Get/Put (the refcount); the layer store
// serialises the rest.
#ifndef DMTHIN_GRAPH_DRIVER_H_
#define DMTHIN_GRAPH_DRIVER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"
#include "graph/records.h"
#include "graph/stream.h"

DMTHIN_API_BEGIN
namespace graph {

// Options for Create.
struct CreateOptions {
  // Container (read-write) layer rather than a read-only image layer.
  bool read_write = false;
  // SELinux mount label for the layer's mount ("" = none).
  std::string mount_label;
  // Driver-specific options (Docker's --storage-opt), e.g. "size" → "10G".
  // Unknown keys are rejected with InvalidArgument.
  std::map<std::string, std::string> storage_options;
};

// What a path in a layer did relative to its parent.
enum class ChangeKind { kModify = 0, kAdd = 1, kDelete = 2 };

// One change, `path` absolute within the layer ("/etc/passwd").
struct Change {
  std::string path;
  ChangeKind kind;

  bool operator==(const Change& o) const {
    return path == o.path && kind == o.kind;
  }
};

const char* ChangeKindName(ChangeKind kind);  // "modify", "add", "delete"

// One mount, described rather than done (containerd's mount.Mount).
// `target` is relative to the caller's chosen mount point ("" = the mount
// point itself).
struct MountSpec {
  std::string type;    // "overlay", "bind", "btrfs", "ext4", ...
  std::string source;  // "overlay", a directory, a device
  std::string target;
  std::vector<std::string> options;  // "ro", "lowerdir=...", "rbind", ...
};

// Result of ApplyDiff.
struct ApplyDiffResult {
  // Bytes of file content written (Docker's ApplyDiff size).
  int64_t size = 0;
  // Bytes of uncompressed tar consumed.
  uint64_t tar_bytes = 0;
  // "sha256:<hex>" of the uncompressed tar stream: the OCI diff id.
  std::string diff_id;
};

// Space a layer takes by itself (containerd's snapshots.Usage).
struct DiskUsage {
  int64_t bytes = 0;   // allocated bytes (blocks, not apparent sizes)
  int64_t inodes = 0;  // distinct inodes (hard links count once)
};

// Result of Diff.
struct DiffResult {
  uint64_t tar_bytes = 0;  // bytes written to the sink (uncompressed tar)
  std::string diff_id;     // "sha256:<hex>" of what was written
};

// The storage driver interface.
class Driver {
 public:
  virtual ~Driver() = default;

  // "overlay", "vfs", "btrfs", "aufs", "devicemapper".
  virtual std::string Name() const = 0;

  // Creates layer `id` on top of `parent` ("" = base). Fails with
  // AlreadyExists if `id` exists, NotFound if `parent` does not.
  virtual absl::Status Create(const std::string& id, const std::string& parent,
                              const CreateOptions& options) = 0;

  // Removes layer `id` (unmounting it if mounted). NotFound if absent.
  // Children are the caller's business: removing a parent of a live child is
  // undefined for drivers that share data (overlay).
  virtual absl::Status Remove(const std::string& id) = 0;

  // Mounts/materialises the full view of `id` and returns its directory.
  // Reference counted across processes; each Get needs one Put.
  virtual absl::StatusOr<std::string> Get(const std::string& id,
                                          const std::string& mount_label) = 0;

  // Drops one reference taken by Get; the last one unmounts.
  // FailedPrecondition ("... is not mounted") if `id` holds no reference,
  // on every driver.
  virtual absl::Status Put(const std::string& id) = 0;

  // References taken by Get and not yet dropped by Put, in every process:
  // 0 when nobody has the layer mounted (a count left by a crashed process
  // whose mount is gone counts 0). The layer store refuses to remove a layer
  // while it is positive (Remove itself does not look: it unmounts).
  virtual absl::StatusOr<int> MountCount(const std::string& id) const = 0;

  virtual bool Exists(const std::string& id) const = 0;

  // All layer ids known to the driver (for check/repair and `ls`).
  virtual absl::StatusOr<std::vector<std::string>> List() const = 0;

  // Key/value pairs like `docker info`'s Storage Driver section:
  // "Backing Filesystem", "Supports d_type", "Native Overlay Diff", ...
  virtual std::vector<std::pair<std::string, std::string>> Status() const = 0;

  // What `docker inspect` shows as GraphDriver.Data for `id`:
  // overlay: LowerDir/UpperDir/WorkDir/MergedDir; vfs/btrfs: Dir;
  // devicemapper: DeviceId/DeviceName/DeviceSize.
  virtual absl::StatusOr<std::map<std::string, std::string>> Metadata(
      const std::string& id) const = 0;

  // Unmounts everything the driver mounted under its root. Called on
  // shutdown; the driver stays usable (Get mounts again).
  virtual absl::Status Cleanup() = 0;

  // Writes the changes of `id` relative to `parent` as an OCI layer tar
  // (uncompressed) to `sink`. `parent` is normally the parent given at
  // Create ("" for a base layer: the full content).
  virtual absl::StatusOr<DiffResult> Diff(const std::string& id,
                                          const std::string& parent,
                                          ByteSink& sink) = 0;

  // Applies an OCI layer tar (plain, gzip or zstd; detected) from `source`
  // into `id`, whose parent is `parent`. On failure the layer content is
  // unspecified: the caller removes the layer.
  virtual absl::StatusOr<ApplyDiffResult> ApplyDiff(const std::string& id,
                                                    const std::string& parent,
                                                    ByteSource& source) = 0;

  // The changes of `id` relative to `parent`, sorted by path.
  virtual absl::StatusOr<std::vector<Change>> Changes(
      const std::string& id, const std::string& parent) = 0;

  // Bytes of file content added or modified in `id` relative to `parent`.
  virtual absl::StatusOr<int64_t> DiffSize(const std::string& id,
                                           const std::string& parent) = 0;

  // Space `id` itself takes on disk, parents excluded; works on active
  // layers (measured now). The default counts Changes' entries as inodes
  // and DiffSize's bytes; drivers override it with what their storage can
  // tell: a walk of the layer's own directory (overlay, vfs, btrfs, aufs),
  // mapped thin blocks (devicemapper).
  virtual absl::StatusOr<DiskUsage> Usage(const std::string& id, const std::string& parent);

  // The mounts that give `id`'s full view, for callers that mount
  // themselves. Does not take a reference.
  virtual absl::StatusOr<std::vector<MountSpec>> Mounts(
      const std::string& id) const = 0;

  // `id` was committed (containerd's Commit): nobody writes it again. A
  // driver that keeps something up for writers may let it go (devicemapper
  // deactivates the thin device unless it is mounted). The layer store
  // calls it after recording the commit and ignores a failure.
  virtual absl::Status Committed(const std::string& id) {
    (void)id;
    return absl::OkStatus();
  }

  // Compares what the driver derives from its records (LayerRecords) for
  // the kernel and outside tools — overlay's `l/` links and `<id>/link`
  // files — with the records, appending each difference to `problems`;
  // with `repair`, rebuilds them and says so in `repaired`. The default has
  // nothing derived.
  virtual absl::Status CheckDerived(bool repair, std::vector<std::string>* problems,
                                    std::vector<std::string>* repaired);
};

// ------------------------------------------------------------ registration ---

// Why a driver cannot serve on this machine.
enum class Unsupported {
  kKernelLacksFilesystem = 1,  // e.g. no aufs / overlay in /proc/filesystems
  kBackingFilesystem = 2,      // root is on a filesystem the driver cannot use
                               // (btrfs driver on ext4, overlay on overlay)
  kKernelLacksFeature = 3,     // e.g. no d_type, no device-mapper
  kPrivilege = 4,              // needs root / CAP_SYS_ADMIN
  kConfiguration = 5,          // needs options it was not given (a pool)
};

const char* UnsupportedName(Unsupported reason);

// A FailedPrecondition status carrying `reason` as a payload; drivers return
// it from probes and from Create/Get when the kernel cannot serve them.
absl::Status UnsupportedError(Unsupported reason, absl::string_view detail);

// The reason attached by UnsupportedError, if any.
std::optional<Unsupported> GetUnsupported(const absl::Status& status);

// What a driver factory is given.
struct DriverOptions {
  // The driver's own directory (e.g. /var/lib/dmthin/graph/overlay). Created
  // if missing.
  std::string root;
  // Driver-wide options, e.g. "overlay.mount_program", "dm.thinpool".
  // Unknown keys for the chosen driver are rejected with InvalidArgument.
  std::map<std::string, std::string> options;
  // Where the driver keeps its per-layer records (graph/records.h): the
  // layer store's registry when the store opens the driver; null = the
  // driver's own `<root>/records.db`.
  std::shared_ptr<LayerRecords> records;
};

// How a driver plugs into the registry.
struct DriverInfo {
  std::string name;
  // Auto-selection order: lower first (overlay 10, btrfs 20,
  // devicemapper 30, aufs 40, vfs 100).
  int priority = 100;
  // OK if the driver can serve `options.root` on this kernel, else an
  // UnsupportedError. Must not leave state behind.
  std::function<absl::Status(const DriverOptions&)> probe;
  std::function<absl::StatusOr<std::unique_ptr<Driver>>(const DriverOptions&)>
      create;
};

// Adds a driver to the process-wide registry (built-in drivers are listed in
// graph/drivers/registry_builtin.cc; others may call this at run time).
// AlreadyExists if the name is taken.
absl::Status RegisterDriver(DriverInfo info);

// Registered drivers, in priority order.
std::vector<DriverInfo> RegisteredDrivers();

// One line of what auto-selection saw.
struct ProbeReport {
  std::string name;
  absl::Status status;  // OK = usable; else UnsupportedError
};

// Probes every registered driver, in priority order; driver NAME is probed
// with root `<base_root>/<NAME>`.
std::vector<ProbeReport> ProbeDrivers(
    const std::string& base_root,
    const std::map<std::string, std::string>& options = {});

// Opens driver `name` with root `<base_root>/<name>`. An empty name selects
// the first driver in priority order whose probe succeeds (if none does, the
// error lists every driver's reason). NotFound for an unknown name; the
// probe's UnsupportedError if the named driver cannot serve.
// `records` (null: the driver's own) as DriverOptions::records.
absl::StatusOr<std::unique_ptr<Driver>> OpenDriver(
    const std::string& name, const std::string& base_root,
    const std::map<std::string, std::string>& options = {},
    std::shared_ptr<LayerRecords> records = nullptr);

// Validates a layer id: 1..128 bytes of [A-Za-z0-9_.-], not "." or "..",
// not starting with '-'.
absl::Status ValidateLayerId(absl::string_view id);

}  // namespace graph
DMTHIN_API_END

#endif  // DMTHIN_GRAPH_DRIVER_H_
