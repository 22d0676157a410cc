// The zfs driver's boundary with OpenZFS's userland libraries: libzfs_core
// (lzc_create, lzc_snapshot, lzc_clone, lzc_destroy...) for every change to
// datasets, libzfs only where lzc has no call (pool create and import on a
// file, listing children and snapshots, properties, pool health).
//
// Its own translation unit because libzfs's headers need libspl's, which
// shadow system headers (sys/types.h...) and define macros (`fallthrough`)
// that break other code: nothing here names an OpenZFS type. Every call
// returns 0 or an errno, with libzfs's own description in `*why` where it
// gave one. One handle serialises its libzfs calls (libzfs handles are not
// thread-safe); lzc calls need no lock.
#ifndef DMTHIN_GRAPH_DRIVERS_ZFS_LIB_H_
#define DMTHIN_GRAPH_DRIVERS_ZFS_LIB_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace graph::zfslib {

// Properties for a new dataset: strings ("mountpoint" = "legacy") and
// numbers ("quota" = bytes).
struct Props {
  std::map<std::string, std::string> strings;
  std::map<std::string, uint64_t> numbers;
};

struct SnapshotInfo {
  std::string name;     // "pool/fs@snap"
  uint64_t clones = 0;  // datasets cloned from it
};

class Handle {
 public:
  // libzfs_init + libzfs_core_init; errno (ENOENT: no /dev/zfs) on failure.
  static std::unique_ptr<Handle> Open(int* err, std::string* why);
  ~Handle();
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  // ---- libzfs_core
  bool Exists(const std::string& name);
  int CreateFilesystem(const std::string& name, const Props& props);
  int Snapshot(const std::string& snapshot);
  int Clone(const std::string& name, const std::string& origin, const Props& props);
  int Destroy(const std::string& name);
  // Marks a snapshot for destruction once its last clone is gone.
  int DeferDestroy(const std::string& snapshot);

  // ---- libzfs
  // Child filesystems of `parent` (full names).
  int ListFilesystems(const std::string& parent, std::vector<std::string>* out, std::string* why);
  // Snapshots of `fs` with their clone counts.
  int ListSnapshots(const std::string& fs, std::vector<SnapshotInfo>* out, std::string* why);
  // A dataset property by name ("used", "origin", "compression"...), as
  // `zfs get` shows it (literal: exact numbers).
  int GetProperty(const std::string& name, const std::string& property, bool literal,
                  std::string* value, std::string* why);
  // A pool property by name ("health", "size"...).
  int GetPoolProperty(const std::string& pool, const std::string& property, std::string* value,
                      std::string* why);
  bool PoolImported(const std::string& pool);
  // A pool whose only vdev is the file `path` (absolute); `fs_props` set on
  // its root dataset.
  int CreateFilePool(const std::string& pool, const std::string& path,
                     const std::map<std::string, std::string>& fs_props, std::string* why);
  // Imports pool `pool` from the files in directory `dir`; ENOENT if none
  // there holds it.
  int ImportFilePool(const std::string& pool, const std::string& dir, std::string* why);
  // Number of ZFS labels on the file or device `path` (0: not a vdev).
  static int CountLabels(const std::string& path, int* labels);

 private:
  Handle() = default;
  std::string LastError();

  std::mutex mu_;
  void* zfs_ = nullptr;  // libzfs_handle_t*
};

}  // namespace graph::zfslib

#endif  // DMTHIN_GRAPH_DRIVERS_ZFS_LIB_H_
