// The state dir: where a set of pools keeps its registry, locks and (for
// file-backed pools) data and metadata files.
//
//   <dir>/.registry.db         SQLite registry (see registry.h)
//   <dir>/.locks/<pool>.lock   flock()ed around every change to a pool
//   <dir>/<pool>/data          sparse data file        (file-backed pools)
//   <dir>/<pool>/metadata      sparse metadata file
//
// The state dir's own entries start with '.', which no pool name may: a pool
// can never be named after (and so remove) the registry or the locks.
//
// The directory is created 0700. An existing one is refused if it is a
// symlink, not a directory, not owned by us (or root), or writable by group
// or others: whoever can write there can swap a pool's files.
#ifndef DMTHIN_THINPOOL_STATE_DIR_H_
#define DMTHIN_THINPOOL_STATE_DIR_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"
#include "base/unique_fd.h"
#include "thinpool/registry.h"

DMTHIN_API_BEGIN
namespace thinpool {

inline constexpr char kDefaultStateDir[] = "/var/lib/dmthin";

// Pool names: 1-32 of [A-Za-z0-9_.], not starting with '.'. No '-': it
// separates pool and thin in device-mapper names (dmthin-<pool>-<thin>).
absl::Status ValidatePoolName(absl::string_view name);
// Thin names: 1-80 of [A-Za-z0-9_.+-], not starting with '.' or '-'.
absl::Status ValidateThinName(absl::string_view name);

// An exclusive flock on one pool's lock file, and the StateDir's mutex for
// that pool (the StateDir keeps the file open for its next locks, and a
// flock excludes only other open files, not the threads sharing one);
// released on destruction (the flock by the kernel if the process dies).
class PoolLock {
 public:
  PoolLock() = default;
  PoolLock(PoolLock&& o) noexcept : mu_(std::move(o.mu_)), fd_(std::exchange(o.fd_, -1)) {}
  PoolLock& operator=(PoolLock&& o) noexcept;
  ~PoolLock();
  bool held() const { return mu_.owns_lock(); }

 private:
  friend class StateDir;
  PoolLock(std::unique_lock<std::mutex> mu, int fd) : mu_(std::move(mu)), fd_(fd) {}
  void Release();
  std::unique_lock<std::mutex> mu_;
  int fd_ = -1;  // the StateDir's
};

class StateDir {
 public:
  // Opens (creating if missing, mode 0700) the state dir at `path`.
  static absl::StatusOr<std::unique_ptr<StateDir>> Open(
      const std::string& path = kDefaultStateDir);

  const std::string& path() const { return path_; }
  Registry& registry() { return *registry_; }

  // <dir>/<pool>
  std::string PoolDir(absl::string_view pool) const;
  // Blocks until this process holds the pool's lock (no PoolLock may
  // outlive the StateDir). The lock file is opened at the first lock and
  // kept open: a lock is a flock and an unlock, no open or close.
  absl::StatusOr<PoolLock> LockPool(absl::string_view pool);

 private:
  StateDir(std::string path, std::unique_ptr<Registry> registry)
      : path_(std::move(path)), registry_(std::move(registry)) {}

  struct LockFile {
    std::mutex mu;      // held with the flock
    base::UniqueFd fd;  // opened under mu
  };

  std::string path_;
  std::unique_ptr<Registry> registry_;
  std::mutex lock_files_mu_;
  std::map<std::string, std::unique_ptr<LockFile>, std::less<>> lock_files_;
};

}  // namespace thinpool
DMTHIN_API_END

#endif  // DMTHIN_THINPOOL_STATE_DIR_H_
