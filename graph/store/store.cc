#include "graph/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <mutex>
#include <filesystem>
#include <set>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "base/failpoint.h"
#include "base/fsutil.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "base/utf8.h"
#include "graph/digest.h"
#include "graph/fsutil.h"
#include "graph/records.h"
#include "graph/store/init_layer.h"
#include "base/sqlite.h"
#include "base/sqlite_shared.h"

namespace graph {

using base::sqlite::Db;
using base::sqlite::Stmt;
using base::sqlite::SharedDb;
using base::sqlite::Writer;
using base::Failpoint;

absl::StatusOr<std::string> ChainId(absl::string_view parent_chain_id,
                                    absl::string_view diff_id) {
  if (!IsSha256Digest(diff_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("diff id \"", diff_id, "\" is not sha256:<64 hex>"));
  }
  if (parent_chain_id.empty()) return std::string(diff_id);
  if (!IsSha256Digest(parent_chain_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("chain id \"", parent_chain_id, "\" is not sha256:<64 hex>"));
  }
  return Sha256Digest(absl::StrCat(parent_chain_id, " ", diff_id));
}

std::string NewCacheId() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    // Fall back to the kernel directly; RAND_bytes only fails without entropy.
    base::UniqueFd fd(::open("/dev/urandom", O_RDONLY | O_CLOEXEC));
    if (!fd || ::read(fd.get(), bytes, sizeof(bytes)) != sizeof(bytes)) std::abort();
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

const char* LayerKindName(LayerKind kind) {
  switch (kind) {
    case LayerKind::kCommitted: return "committed";
    case LayerKind::kActive: return "active";
    case LayerKind::kView: return "view";
  }
  return "unknown";
}

namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS meta(
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layers(
  cache_id TEXT PRIMARY KEY,
  name TEXT UNIQUE,
  kind INTEGER NOT NULL,
  parent TEXT REFERENCES layers(cache_id),
  init_id TEXT,
  diff_id TEXT NOT NULL DEFAULT '',
  chain_id TEXT NOT NULL DEFAULT '',
  size INTEGER NOT NULL DEFAULT 0,
  tar_size INTEGER NOT NULL DEFAULT 0,
  refs INTEGER NOT NULL DEFAULT 1,
  state TEXT NOT NULL CHECK(state IN ('creating', 'ready', 'removing')),
  created INTEGER NOT NULL,
  updated INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS layers_parent ON layers(parent);
CREATE TABLE IF NOT EXISTS labels(
  cache_id TEXT NOT NULL REFERENCES layers(cache_id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY(cache_id, key));
)sql";

#define LAYER_OWN_COLUMNS                                                    \
  "l.cache_id, l.name, l.kind, l.parent, l.init_id, l.diff_id, l.chain_id, " \
  "l.size, l.tar_size, l.refs, l.state, l.created, l.updated, "
constexpr char kColumns[] = LAYER_OWN_COLUMNS
    "(SELECT name FROM layers p WHERE p.cache_id = l.parent), "
    "(SELECT count(*) FROM layers c WHERE c.parent = l.cache_id)";
// The same without the parent's name and the count of children (NULL, 0):
// for reads of every row, which join those themselves (counting children
// is a scan of the parent index per row).
constexpr char kOwnColumns[] = LAYER_OWN_COLUMNS "NULL, 0";
#undef LAYER_OWN_COLUMNS

struct Row {
  LayerInfo info;
  std::string parent_cache;
  RecordState state = RecordState::kCreating;
};

absl::StatusOr<Row> ReadRow(const Stmt& s) {
  Row r;
  r.info.cache_id = s.Text(0);
  r.info.name = s.Text(1);
  r.info.kind = static_cast<LayerKind>(s.Int(2));
  r.parent_cache = s.Text(3);
  r.info.init_id = s.Text(4);
  r.info.diff_id = s.Text(5);
  r.info.chain_id = s.Text(6);
  r.info.size = s.Int(7);
  r.info.tar_size = static_cast<uint64_t>(s.Int(8));
  r.info.refs = s.Int(9);
  // Spelled as RecordStateName spells it (the schema's CHECK allows no other).
  ASSIGN_OR_RETURN(r.state, RecordStateFromRegistry(s.Text(10), "layer with cache id", r.info.cache_id));
  r.info.created = absl::FromUnixNanos(s.Int(11));
  r.info.updated = absl::FromUnixNanos(s.Int(12));
  r.info.parent = s.Text(13);
  r.info.children = s.Int(14);
  return r;
}

int64_t NowNanos() { return absl::ToUnixNanos(absl::Now()); }

// Layer names: 1..4096 bytes of UTF-8 without NUL (JSON carries only
// UTF-8; containerd keys may hold spaces, tabs and newlines, which text
// output escapes).
absl::Status ValidateName(absl::string_view name) {
  if (name.empty() || name.size() > 4096 || name.find('\0') != absl::string_view::npos ||
      !base::IsValidUtf8(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid layer name \"", absl::CHexEscape(name.substr(0, 80)),
                     "\": want 1..4096 bytes of UTF-8 without NUL"));
  }
  return absl::OkStatus();
}

// FailedPrecondition + EBUSY while `layer` is mounted (a Get without its
// Put, in any process).
absl::Status NotMounted(const Driver& driver, const LayerInfo& layer) {
  ASSIGN_OR_RETURN(int mounts, driver.MountCount(layer.cache_id));
  if (mounts <= 0) return absl::OkStatus();
  return base::WithErrno(
      absl::FailedPreconditionError(absl::StrCat(
          "cannot remove layer \"", layer.name, "\": it is mounted (", mounts,
          mounts == 1 ? " mount reference" : " mount references",
          "); unmount it first (graphctl umount, once per mount; graph_umount), "
          "or force the removal (graphctl rm --force; GRAPH_REMOVE_FORCE)")),
      EBUSY);
}

// A driver's error about `info`'s layer, speaking of the layer by its name:
// drivers only know cache ids, which mean nothing to the caller. Code and
// payloads (errno, unsupported reason) are kept.
absl::Status Named(const LayerInfo& info, const absl::Status& s) {
  if (s.ok() || info.cache_id.empty()) return s;
  std::string quoted = absl::StrCat("\"", info.name, "\"");
  std::vector<std::pair<std::string, std::string>> replace;
  if (!info.init_id.empty()) replace.push_back({info.init_id, absl::StrCat("init layer of ", quoted)});
  replace.push_back({info.cache_id, quoted});
  std::string msg = absl::StrReplaceAll(s.message(), replace);
  if (msg == s.message()) return s;
  absl::Status out(s.code(), msg);
  s.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

}  // namespace

// containerd's limit: a label's key and value together ≤ 4096 bytes; keys
// not empty; keys and values UTF-8 without NUL (JSON carries only UTF-8).
absl::Status ValidateLabels(const std::map<std::string, std::string>& labels) {
  for (const auto& [k, v] : labels) {
    if (k.empty() || !base::IsValidUtf8(k) || k.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("invalid label key \"", absl::CHexEscape(k.substr(0, 80)),
                                                     "\": want a non-empty UTF-8 string without NUL"));
    }
    if (!base::IsValidUtf8(v) || v.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("invalid value of label \"", absl::CHexEscape(k.substr(0, 80)),
                                                     "\": want UTF-8 without NUL"));
    }
    if (k.size() + v.size() > 4096) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label \"", absl::CHexEscape(k.substr(0, 80)), "\": key and value are ",
          k.size() + v.size(), " bytes, more than 4096"));
    }
  }
  return absl::OkStatus();
}

namespace {

bool GoneOrNotFound(const absl::Status& s) {
  return absl::IsNotFound(s) || base::HasErrno(s, ENOENT);
}

// A driver call on a layer that another thread or process removed meanwhile
// fails with ENOENT somewhere inside: to the caller the layer is not found.
absl::Status VanishedIsNotFound(const absl::Status& s, const std::string& name) {
  if (GoneOrNotFound(s) && !absl::IsNotFound(s)) {
    return absl::NotFoundError(absl::StrCat("layer \"", name, "\" not found (removed meanwhile): ",
                                            s.message()));
  }
  return s;
}

// Counts bytes read for the import progress callback.
class ProgressSource : public ByteSource {
 public:
  ProgressSource(ByteSource& inner, const std::function<void(uint64_t)>& progress)
      : inner_(inner), progress_(progress) {}
  absl::StatusOr<size_t> Read(void* buf, size_t len) override {
    absl::StatusOr<size_t> n = inner_.Read(buf, len);
    if (n.ok()) {
      total_ += *n;
      if (progress_ && (total_ - reported_ >= (1u << 20) || *n == 0)) {
        reported_ = total_;
        progress_(total_);
      }
    }
    return n;
  }

 private:
  ByteSource& inner_;
  const std::function<void(uint64_t)>& progress_;
  uint64_t total_ = 0;
  uint64_t reported_ = 0;
};

// The file in `root`/locks/ whose byte ranges are the operation locks.
constexpr char kOpLockFile[] = "ops";

// An exclusive lock on one layer, held while it is being created or removed
// so that Check(repair) in another process can tell an operation in
// progress from an interrupted one. A one-byte open-file-description lock
// (F_OFD_SETLKW: per open, like flock, and released by the kernel when the
// process dies) at an offset hashed from the cache id, in the one file
// `root`/locks/ops made with the store: taking it writes nothing and makes no
// file, so `rm` works on a full filesystem (a new lock file per operation
// needed an inode it could not get).
class OpLock {
 public:
  static absl::StatusOr<OpLock> Acquire(const std::string& locks_dir,
                                        const std::string& cache_id, bool wait) {
    OpLock lock;
    std::string path = absl::StrCat(locks_dir, "/", kOpLockFile);
    lock.fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!lock.fd_) return base::ErrnoError(errno, absl::StrCat("open lock ", path));
    uint64_t hash = 14695981039346656037ull;  // FNV-1a: the same offset in every process
    for (unsigned char c : cache_id) hash = (hash ^ c) * 1099511628211ull;
    struct flock fl = {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = static_cast<off_t>(hash >> 2);  // positive, below OFF_MAX
    fl.l_len = 1;
    while (::fcntl(lock.fd_.get(), wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) != 0) {
      int err = errno == EACCES ? EWOULDBLOCK : errno;
      if (err == EINTR) continue;
      return base::ErrnoError(err, absl::StrCat("lock layer ", cache_id, " (", path, ")"));
    }
    return lock;
  }
  void Release() { fd_.reset(); }

 private:
  base::UniqueFd fd_;
};


}  // namespace

class LayerStore::Impl {
 public:
  // The registry's one connection in this process, shared with the
  // driver's records (base/sqlite_shared.h): its lock is held for registry
  // work only, never across driver calls; writers take it through Write,
  // which does not hold it while another process writes.
  std::shared_ptr<SharedDb> conn;
  Db* db = nullptr;  // conn's
  // The driver's records when they are in this registry (OpenLayerStore):
  // their staged Ready commits with the layer's.
  std::shared_ptr<LayerRecords> records;

  absl::Status WriteStaged(Writer& w, const std::vector<std::string>& ids) {
    return records == nullptr ? absl::OkStatus() : records->WriteStaged(w, ids);
  }
  std::string locks_dir;
  std::string db_path;

  // Space held back for the writes that free space (rm, umount, the undo of
  // a failed import or create): on a full btrfs even an in-place rewrite of
  // the registry or of a mount count needs metadata space, while an unlink
  // does not (it draws on btrfs's global reserve). `locks/reserve`, 4 MiB
  // allocated with the store (btrfs only), is given back when such a write
  // fails with ENOSPC, the write is tried once more, and the reserve is made
  // again once a removal has freed space.
  static constexpr off_t kReserveBytes = 4 << 20;
  std::string ReservePath() const { return locks_dir + "/reserve"; }
  void MakeReserve() {
    absl::StatusOr<std::string> fs = base::BackingFsName(locks_dir);
    if (!fs.ok() || *fs != "btrfs") return;
    std::string path = ReservePath();
    base::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd && ::fallocate(fd.get(), 0, 0, kReserveBytes) != 0) ::unlink(path.c_str());
  }
  bool FreeReserve() {
    if (::unlink(ReservePath().c_str()) != 0) return false;
    base::UniqueFd dir(::open(locks_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir) (void)::syncfs(dir.get());  // btrfs returns the space at its commit
    return true;
  }
  static absl::Status StatusOf(const absl::Status& s) { return s; }
  template <typename T>
  static absl::Status StatusOf(const absl::StatusOr<T>& s) { return s.status(); }
  // Runs `fn`; when it fails for want of space, gives the reserve back and
  // runs it once more.
  template <typename F>
  auto WithReserve(F fn) -> decltype(fn()) {
    auto result = fn();
    if (!result.ok() && base::GetErrno(StatusOf(result)) == ENOSPC && FreeReserve()) result = fn();
    return result;
  }
  dev_t db_dev = 0;
  ino_t db_ino = 0;

  absl::Status RememberRegistry() {
    struct stat st;
    if (::stat(db_path.c_str(), &st) != 0) return base::ErrnoError(errno, absl::StrCat("stat ", db_path));
    db_dev = st.st_dev;
    db_ino = st.st_ino;
    return absl::OkStatus();
  }

  // DataLoss if the registry file this store has open was deleted or
  // replaced on disk (what was just committed went to an unlinked file).
  absl::Status StillThere(absl::string_view what) {
    struct stat st;
    if (::stat(db_path.c_str(), &st) == 0 && st.st_dev == db_dev && st.st_ino == db_ino) {
      return absl::OkStatus();
    }
    return absl::DataLossError(absl::StrCat(
        "the registry ", db_path, " was deleted or replaced while ", what,
        " ran: its record is not in the store. Restore the registry from a backup (the layer's data "
        "is kept under the driver's directory)"));
  }

  absl::StatusOr<std::map<std::string, std::string>> Labels(const std::string& cache_id) {
    ASSIGN_OR_RETURN(Stmt s, db->Prepare("SELECT key, value FROM labels WHERE cache_id = ?"));
    s.Bind(1, cache_id);
    std::map<std::string, std::string> labels;
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      labels[s.Text(0)] = s.Text(1);
    }
    return labels;
  }

  absl::Status SetLabels(const std::string& cache_id,
                         const std::map<std::string, std::string>& labels) {
    ASSIGN_OR_RETURN(Stmt del, db->Prepare("DELETE FROM labels WHERE cache_id = ?"));
    RETURN_IF_ERROR(del.Bind(1, cache_id).Run());
    for (const auto& [k, v] : labels) {
      ASSIGN_OR_RETURN(Stmt ins, db->Prepare(
                                     "INSERT INTO labels(cache_id, key, value) VALUES(?, ?, ?)"));
      RETURN_IF_ERROR(ins.Bind(1, cache_id).Bind(2, k).Bind(3, v).Run());
    }
    return absl::OkStatus();
  }

  // A visible (ready) layer by name, with labels.
  absl::StatusOr<Row> Find(const std::string& name) { return FindWith(name, kColumns, true); }

  // The same with the layer's own columns only (no parent name, children
  // counted as 0, no labels), for building on it: counting the children of
  // an image every snapshot sits on scans one index entry per snapshot.
  absl::StatusOr<Row> FindOwn(const std::string& name) { return FindWith(name, kOwnColumns, false); }

  absl::StatusOr<Row> FindWith(const std::string& name, const char* columns, bool labels) {
    ASSIGN_OR_RETURN(Stmt s, db->Prepare(absl::StrCat(
                                 "SELECT ", columns,
                                 " FROM layers l WHERE l.name = ? AND l.state = 'ready'")));
    s.Bind(1, name);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("layer \"", name, "\" not found"));
    ASSIGN_OR_RETURN(Row r, ReadRow(s));
    if (labels) {
      ASSIGN_OR_RETURN(r.info.labels, Labels(r.info.cache_id));
    }
    return r;
  }

  absl::StatusOr<Row> FindLocked(const std::string& name) {
    auto l = conn->Lock();
    return Find(name);
  }

  absl::StatusOr<std::vector<Row>> AllRows() {
    ASSIGN_OR_RETURN(Stmt s, db->Prepare(absl::StrCat("SELECT ", kColumns, " FROM layers l")));
    std::vector<Row> rows;
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      ASSIGN_OR_RETURN(Row r, ReadRow(s));
      rows.push_back(std::move(r));
    }
    return rows;
  }

  absl::Status DeleteRow(const std::string& cache_id) {
    ASSIGN_OR_RETURN(Stmt s, db->Prepare("DELETE FROM layers WHERE cache_id = ?"));
    return s.Bind(1, cache_id).Run();
  }

  // DeleteRow in a transaction of its own (`relaxed`: SharedDb::Write).
  absl::Status DeleteRowNow(const std::string& cache_id, bool relaxed = false) {
    ASSIGN_OR_RETURN(Writer txn, conn->Write(relaxed));
    RETURN_IF_ERROR(DeleteRow(cache_id));
    return txn.Commit();
  }
};

LayerStore::LayerStore(std::string root, std::unique_ptr<Driver> driver)
    : root_(std::move(root)), driver_(std::move(driver)), impl_(std::make_unique<Impl>()) {}

LayerStore::~LayerStore() = default;

namespace {
absl::Status MakeDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return base::ErrnoError(errno, absl::StrCat("mkdir ", path));
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<std::string> AbsoluteRoot(const std::string& root) {
  if (root.empty()) return absl::InvalidArgumentError("layer store needs a root directory");
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(root, ec);
  if (ec) return base::ErrnoError(ec.value(), absl::StrCat("making root ", root, " absolute"));
  std::string out = abs.lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

namespace {

constexpr char kStoreFormat[] = "dmthin-graph-1";

// What `root` holds, looked at before anything is created in it.
enum class RootState { kNew, kStore };

absl::StatusOr<RootState> ExamineRoot(const std::string& root) {
  struct stat st;
  if (::lstat(root.c_str(), &st) != 0) {
    if (errno == ENOENT) return RootState::kNew;
    return base::ErrnoError(errno, absl::StrCat("examining layer store ", root));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("layer store root ", root, " is not a directory"));
  }
  std::string db = root + "/layers.db";
  if (::lstat(db.c_str(), &st) == 0) {
    if (st.st_size == 0) {
      return absl::DataLossError(absl::StrCat(
          "the registry ", db, " is empty (0 bytes): the layer records are lost. Not starting a new "
          "registry over the existing layers: restore ", db, " (and layers.db-wal, if kept) from a "
          "backup; or, to give these layers up, move ", root, " aside and open a new store"));
    }
    return RootState::kStore;
  }
  if (errno != ENOENT) return base::ErrnoError(errno, absl::StrCat("examining ", db));
  DIR* dir = ::opendir(root.c_str());
  if (dir == nullptr) return base::ErrnoError(errno, absl::StrCat("listing ", root));
  std::vector<std::string> ours, foreign;
  std::set<std::string> drivers;
  for (const DriverInfo& d : RegisteredDrivers()) drivers.insert(d.name);
  while (struct dirent* e = ::readdir(dir)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    bool store_file = n == "locks" || absl::StartsWith(n, "layers.db") || drivers.count(n) != 0;
    (store_file ? ours : foreign).push_back(n);
  }
  ::closedir(dir);
  if (ours.empty() && foreign.empty()) return RootState::kNew;
  std::sort(ours.begin(), ours.end());
  if (!ours.empty()) {
    return absl::DataLossError(absl::StrCat(
        "layer store ", root, " has no registry (layers.db) but holds store data (",
        absl::StrJoin(ours, ", "), "): the registry was deleted or moved. Not starting a new, empty "
        "registry over existing layers: restore ", db, " (and layers.db-wal, if kept) from a backup; "
        "or, to give these layers up, move ", root, " aside and open a new store"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      root, " is not empty and is not a layer store (no layers.db): give the store an empty or new directory"));
}

// Object names made by kSchema ("CREATE TABLE IF NOT EXISTS name(...)").
std::vector<std::string> SchemaObjects() {
  std::vector<std::string> names;
  absl::string_view s = kSchema;
  for (absl::string_view marker : {"CREATE TABLE IF NOT EXISTS ", "CREATE INDEX IF NOT EXISTS "}) {
    for (size_t at = s.find(marker); at != absl::string_view::npos; at = s.find(marker, at + 1)) {
      absl::string_view rest = s.substr(at + marker.size());
      size_t end = rest.find_first_of("( \n");
      names.emplace_back(rest.substr(0, end));
    }
  }
  return names;
}

// Makes the registry of a new store: built under a temporary name
// (schema, the driver, WAL checkpointed into the file) and linked into
// place, so layers.db never exists half made, and never 0 bytes with its
// content only in a WAL. A concurrent creator's registry wins (link fails
// with EEXIST) and is opened instead.
absl::Status CreateRegistry(const std::string& root, const std::string& driver) {
  std::string path = root + "/layers.db";
  std::string tmp = absl::StrCat(path, ".new-", ::getpid(), "-", NewCacheId().substr(0, 8));
  absl::Cleanup drop = [&] {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) ::unlink((tmp + suffix).c_str());
  };
  {
    ASSIGN_OR_RETURN(std::unique_ptr<Db> db, Db::Open(tmp, /*create=*/true));
    RETURN_IF_ERROR(db->Exec(kSchema));
    RETURN_IF_ERROR(db->Exec(LayerRecords::Schema()));
    ASSIGN_OR_RETURN(Stmt put, db->Prepare(
        "INSERT INTO meta(key, value) VALUES('driver', ?), ('format', ?)"));
    RETURN_IF_ERROR(put.Bind(1, driver).Bind(2, kStoreFormat).Run());
    RETURN_IF_ERROR(db->Exec("PRAGMA wal_checkpoint(TRUNCATE)"));
  }
  int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
  if (::link(tmp.c_str(), path.c_str()) != 0 && errno != EEXIST) {
    return base::ErrnoError(errno, absl::StrCat("creating registry ", path));
  }
  base::UniqueFd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir) (void)::fsync(dir.get());
  return absl::OkStatus();
}

// Opens an existing registry without writing to it: checks that it is a
// layer store's (foreign or damaged files are refused with how to recover)
// and returns it with the recorded driver.
absl::StatusOr<std::unique_ptr<Db>> OpenRegistry(const std::string& root, std::string* driver) {
  std::string path = root + "/layers.db";
  auto hint = [&](const absl::Status& s) {
    return base::Annotate(s, absl::StrCat(
        path, " is not a usable layer store registry (restore it from a backup; the layers' data "
        "under ", root, " is left alone, 'graphctl check' compares the two afterwards)"));
  };
  absl::StatusOr<std::unique_ptr<Db>> db = Db::Open(path, /*create=*/false);
  if (!db.ok()) return absl::IsDataLoss(db.status()) ? hint(db.status()) : db.status();
  absl::StatusOr<Stmt> get = (*db)->Prepare("SELECT value FROM meta WHERE key = 'driver'");
  if (!get.ok()) {
    if (absl::IsDataLoss(get.status()) || absl::StrContains(get.status().message(), "no such table")) {
      return hint(absl::DataLossError(absl::StrCat("no store metadata: ", get.status().message())));
    }
    return get.status();
  }
  absl::StatusOr<bool> have = get->Step();
  if (!have.ok()) return absl::IsDataLoss(have.status()) ? hint(have.status()) : have.status();
  if (!*have || get->Text(0).empty()) return hint(absl::DataLossError("no driver recorded"));
  *driver = get->Text(0);
  // A store made by an older version may lack a table or index added since:
  // only then is the schema (re)applied (a write).
  std::set<std::string> present;
  ASSIGN_OR_RETURN(Stmt objects, (*db)->Prepare("SELECT name FROM sqlite_master"));
  for (;;) {
    ASSIGN_OR_RETURN(bool row, objects.Step());
    if (!row) break;
    present.insert(objects.Text(0));
  }
  for (const std::string& name : SchemaObjects()) {
    if (present.count(name) == 0) {
      RETURN_IF_ERROR((*db)->Exec(kSchema));
      break;
    }
  }
  for (const std::string& table : LayerRecords::SchemaTables()) {
    if (present.count(table) == 0) {
      RETURN_IF_ERROR((*db)->Exec(LayerRecords::Schema()));
      break;
    }
  }
  return db;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LayerStore>> LayerStore::Open(const std::string& given_root,
                                                             std::unique_ptr<Driver> driver) {
  if (driver == nullptr) return absl::InvalidArgumentError("layer store needs a driver");
  ASSIGN_OR_RETURN(std::string root, AbsoluteRoot(given_root));
  ASSIGN_OR_RETURN(RootState state, ExamineRoot(root));
  return OpenExamined(root, std::move(driver), state == RootState::kNew);
}

absl::StatusOr<std::unique_ptr<LayerStore>> LayerStore::OpenExamined(const std::string& root,
                                                                     std::unique_ptr<Driver> driver,
                                                                     bool is_new,
                                                                     std::shared_ptr<SharedDb> conn,
                                                                     std::shared_ptr<LayerRecords> records) {
  std::string name = driver->Name();
  if (is_new) {
    RETURN_IF_ERROR(MakeDir(root, 0700));
    RETURN_IF_ERROR(MakeDir(root + "/locks", 0700));
    RETURN_IF_ERROR(CreateRegistry(root, name));
  }
  std::unique_ptr<LayerStore> store(new LayerStore(root, std::move(driver)));
  store->impl_->locks_dir = root + "/locks";
  store->impl_->db_path = root + "/layers.db";
  std::string recorded = name;  // a connection given was opened (and checked) by OpenLayerStore
  if (conn == nullptr) {
    ASSIGN_OR_RETURN(std::unique_ptr<Db> db, OpenRegistry(root, &recorded));
    conn = std::make_shared<SharedDb>(std::move(db));
  }
  store->impl_->conn = std::move(conn);
  store->impl_->db = &store->impl_->conn->db();
  store->impl_->records = std::move(records);
  if (recorded != name) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer store ", root, " was created with driver \"", recorded, "\", not \"", name, "\""));
  }
  RETURN_IF_ERROR(store->impl_->RememberRegistry());
  struct stat st;
  if (::stat(store->impl_->locks_dir.c_str(), &st) != 0) {
    RETURN_IF_ERROR(MakeDir(store->impl_->locks_dir, 0700));  // only where it went missing
  }
  // The lock file, made with the store (opening must not need space: a
  // store whose file is missing on a full disk gets ENOSPC at its first
  // create or remove instead).
  std::string ops = absl::StrCat(store->impl_->locks_dir, "/", kOpLockFile);
  if (::access(ops.c_str(), F_OK) != 0) {
    base::UniqueFd made(::open(ops.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!made && is_new) return base::ErrnoError(errno, absl::StrCat("creating ", ops));
  }
  if (::access(store->impl_->ReservePath().c_str(), F_OK) != 0) store->impl_->MakeReserve();
  return store;
}

absl::StatusOr<std::string> LayerStore::RecordedDriver(const std::string& given_root) {
  ASSIGN_OR_RETURN(std::string root, AbsoluteRoot(given_root));
  ASSIGN_OR_RETURN(RootState state, ExamineRoot(root));
  if (state == RootState::kNew) return std::string();
  std::string driver;
  ASSIGN_OR_RETURN(auto db, OpenRegistry(root, &driver));
  return driver;
}

absl::StatusOr<LayerInfo> LayerStore::Import(ByteSource& tar, const ImportOptions& options) {
  RETURN_IF_ERROR(ValidateLabels(options.labels));
  if (!options.name.empty()) RETURN_IF_ERROR(ValidateName(options.name));
  Db& db = *impl_->db;
  std::string parent_cache, parent_chain;
  if (!options.name.empty()) {
    auto l = impl_->conn->Lock();
    if (absl::StatusOr<Row> taken = impl_->FindOwn(options.name); taken.ok()) {
      return absl::AlreadyExistsError(absl::StrCat("layer \"", options.name, "\" already exists"));
    } else if (!absl::IsNotFound(taken.status())) {
      return taken.status();
    }
  }
  if (!options.parent.empty()) {
    auto l = impl_->conn->Lock();
    ASSIGN_OR_RETURN(Row parent, impl_->Find(options.parent));
    if (parent.info.chain_id.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "parent \"", options.parent, "\" is not an imported layer (it has no chain id)"));
    }
    parent_cache = parent.info.cache_id;
    parent_chain = parent.info.chain_id;
  }
  const std::string cache_id = NewCacheId();
  ASSIGN_OR_RETURN(OpLock lock, OpLock::Acquire(impl_->locks_dir, cache_id, true));
  {
    ASSIGN_OR_RETURN(Writer txn, impl_->conn->Write());
    // The parent may have been removed since we looked.
    if (!parent_cache.empty()) RETURN_IF_ERROR(impl_->Find(options.parent).status());
    ASSIGN_OR_RETURN(Stmt ins, db.Prepare(
        "INSERT INTO layers(cache_id, name, kind, parent, state, created, updated) "
        "VALUES(?, NULL, ?, ?, 'creating', ?, ?)"));
    int64_t now = NowNanos();
    RETURN_IF_ERROR(ins.Bind(1, cache_id)
                        .Bind(2, static_cast<int64_t>(LayerKind::kCommitted))
                        .BindOrNull(3, parent_cache)
                        .Bind(4, now)
                        .Bind(5, now)
                        .Run());
    RETURN_IF_ERROR(txn.Commit());
  }
  Failpoint("store_import_after_intent");
  // Undo on any failure below: driver layer, then the record.
  auto undo = [&](absl::Status cause) {
    absl::Status rm = driver_->Remove(cache_id);
    if (rm.ok() || GoneOrNotFound(rm)) {
      (void)impl_->WithReserve([&] { return impl_->DeleteRowNow(cache_id); });
      lock.Release();
    }
    return cause;
  };

  CreateOptions create;
  create.read_write = false;
  if (absl::Status s = driver_->Create(cache_id, parent_cache, create); !s.ok()) {
    return undo(base::Annotate(s, "import: create layer"));
  }
  ProgressSource source(tar, options.progress);
  absl::StatusOr<ApplyDiffResult> applied = driver_->ApplyDiff(cache_id, parent_cache, source);
  if (!applied.ok()) return undo(base::Annotate(applied.status(), "import: apply layer tar"));
  Failpoint("store_import_after_apply");
  absl::StatusOr<std::string> chain = ChainId(parent_chain, applied->diff_id);
  if (!chain.ok()) return undo(chain.status());
  const std::string name = options.name.empty() ? *chain : options.name;

  // Publishes our copy, or — when another import of the same chain id won
  // meanwhile — takes a reference to that one and hides ours (true: drop it).
  absl::StatusOr<bool> shared = [&]() -> absl::StatusOr<bool> {
    ASSIGN_OR_RETURN(Writer txn, impl_->conn->Write());
    absl::StatusOr<Row> existing = impl_->Find(name);
    if (existing.ok() && !options.name.empty()) {
      return absl::AlreadyExistsError(absl::StrCat("layer \"", name, "\" already exists"));
    }
    if (existing.ok()) {
      ASSIGN_OR_RETURN(Stmt ref, db.Prepare("UPDATE layers SET refs = refs + 1 WHERE cache_id = ?"));
      RETURN_IF_ERROR(ref.Bind(1, existing->info.cache_id).Run());
      if (!options.labels.empty()) {
        // The labels given with this import are set on the existing layer
        // (merged: other labels stay), not dropped.
        std::map<std::string, std::string> merged = existing->info.labels;
        for (const auto& [k, v] : options.labels) merged[k] = v;
        RETURN_IF_ERROR(impl_->SetLabels(existing->info.cache_id, merged));
      }
      ASSIGN_OR_RETURN(Stmt hide, db.Prepare(
                                      "UPDATE layers SET state = 'removing' WHERE cache_id = ?"));
      RETURN_IF_ERROR(hide.Bind(1, cache_id).Run());
      RETURN_IF_ERROR(txn.Commit());
      return true;
    }
    if (!absl::IsNotFound(existing.status())) return existing.status();
    ASSIGN_OR_RETURN(Stmt up, db.Prepare(
        "UPDATE layers SET name = ?, diff_id = ?, chain_id = ?, size = ?, tar_size = ?, "
        "state = 'ready', updated = created WHERE cache_id = ?"));
    RETURN_IF_ERROR(up.Bind(1, name)
                        .Bind(2, applied->diff_id)
                        .Bind(3, *chain)
                        .Bind(4, applied->size)
                        .Bind(5, static_cast<int64_t>(applied->tar_bytes))
                        .Bind(6, cache_id)
                        .Run());
    RETURN_IF_ERROR(impl_->SetLabels(cache_id, options.labels));
    RETURN_IF_ERROR(impl_->WriteStaged(txn, {cache_id}));  // the driver's record commits with it
    RETURN_IF_ERROR(txn.Commit());
    return false;
  }();
  if (!shared.ok()) return undo(shared.status());
  if (*shared) {
    (void)undo(absl::OkStatus());
    RETURN_IF_ERROR(impl_->StillThere("the import"));
  } else {
    lock.Release();
    RETURN_IF_ERROR(impl_->StillThere(absl::StrCat("the import of ", name)));
  }
  return Stat(name);
}

absl::StatusOr<LayerInfo> LayerStore::Create(const std::string& name, const std::string& parent,
                                             const CreateLayerOptions& options) {
  RETURN_IF_ERROR(ValidateName(name));
  RETURN_IF_ERROR(ValidateLabels(options.labels));
  if (options.kind == LayerKind::kCommitted) {
    return absl::InvalidArgumentError("Create makes active or view layers; commit makes committed ones");
  }
  if (options.init_layer && options.kind != LayerKind::kActive) {
    return absl::InvalidArgumentError("an init layer only goes under an active layer");
  }
  Db& db = *impl_->db;
  const std::string cache_id = NewCacheId();
  const std::string init_id = options.init_layer ? cache_id + "-init" : "";
  std::string parent_cache;
  ASSIGN_OR_RETURN(OpLock lock, OpLock::Acquire(impl_->locks_dir, cache_id, true));
  {
    ASSIGN_OR_RETURN(Writer txn, impl_->conn->Write(/*relaxed=*/true));  // synced by the commit that marks it ready
    if (!parent.empty()) {
      ASSIGN_OR_RETURN(Row p, impl_->FindOwn(parent));
      if (p.info.kind != LayerKind::kCommitted && !options.any_parent) {
        return absl::InvalidArgumentError(absl::StrCat(
            "parent \"", parent, "\" is ", LayerKindName(p.info.kind), ", not committed"));
      }
      parent_cache = p.info.cache_id;
    }
    ASSIGN_OR_RETURN(Stmt taken, db.Prepare("SELECT state FROM layers WHERE name = ?"));
    ASSIGN_OR_RETURN(bool exists, taken.Bind(1, name).Step());
    if (exists) {
      return absl::AlreadyExistsError(absl::StrCat(
          "layer \"", name, "\" already exists",
          taken.Text(0) == RecordStateName(RecordState::kReady) ? "" : absl::StrCat(" (", taken.Text(0), ")")));
    }
    ASSIGN_OR_RETURN(Stmt ins, db.Prepare(
        "INSERT INTO layers(cache_id, name, kind, parent, init_id, state, created, updated) "
        "VALUES(?, ?, ?, ?, ?, 'creating', ?, ?)"));
    int64_t now = NowNanos();
    RETURN_IF_ERROR(ins.Bind(1, cache_id)
                        .Bind(2, name)
                        .Bind(3, static_cast<int64_t>(options.kind))
                        .BindOrNull(4, parent_cache)
                        .BindOrNull(5, init_id)
                        .Bind(6, now)
                        .Bind(7, now)
                        .Run());
    RETURN_IF_ERROR(impl_->SetLabels(cache_id, options.labels));
    RETURN_IF_ERROR(txn.Commit());
  }
  Failpoint("store_create_after_intent");
  auto undo = [&](absl::Status cause) {
    absl::Status rm = driver_->Remove(cache_id);
    absl::Status rm_init = init_id.empty() ? absl::OkStatus() : driver_->Remove(init_id);
    if ((rm.ok() || GoneOrNotFound(rm)) && (rm_init.ok() || GoneOrNotFound(rm_init))) {
      (void)impl_->WithReserve([&] { return impl_->DeleteRowNow(cache_id); });
      lock.Release();
    }
    return cause;
  };
  std::string below = parent_cache;
  if (!init_id.empty()) {
    // Read-write, as Docker's CreateReadWrite of "<id>-init": it is
    // written through Get below.
    CreateOptions init_opts;
    init_opts.read_write = true;
    if (absl::Status s = driver_->Create(init_id, parent_cache, init_opts); !s.ok()) {
      return undo(base::Annotate(s, "create init layer"));
    }
    absl::StatusOr<std::string> dir = driver_->Get(init_id, "");
    if (!dir.ok()) return undo(base::Annotate(dir.status(), "mount init layer"));
    absl::Status populated = store::PopulateInitLayer(*dir);
    absl::Status put = driver_->Put(init_id);
    if (!populated.ok()) return undo(base::Annotate(populated, "populate init layer"));
    if (!put.ok()) return undo(base::Annotate(put, "unmount init layer"));
    Failpoint("store_create_after_init");
    below = init_id;
  }
  CreateOptions opts;
  opts.read_write = options.kind == LayerKind::kActive;
  opts.storage_options = options.storage_options;
  if (absl::Status s = driver_->Create(cache_id, below, opts); !s.ok()) {
    return undo(base::Annotate(s, absl::StrCat("create layer \"", name, "\"")));
  }
  Failpoint("store_create_after_driver");
  absl::Status ready = [&]() -> absl::Status {
    // The driver's records of the layer (and of its init layer) commit
    // with its state.
    ASSIGN_OR_RETURN(Writer txn, impl_->conn->Write());
    ASSIGN_OR_RETURN(Stmt up, db.Prepare(
                                  "UPDATE layers SET state = 'ready' WHERE cache_id = ?"));
    RETURN_IF_ERROR(up.Bind(1, cache_id).Run());
    std::vector<std::string> ids = {cache_id};
    if (!init_id.empty()) ids.push_back(init_id);
    RETURN_IF_ERROR(impl_->WriteStaged(txn, ids));
    return txn.Commit();
  }();
  if (!ready.ok()) return undo(ready);
  lock.Release();
  RETURN_IF_ERROR(impl_->StillThere(absl::StrCat("the create of \"", name, "\"")));
  return Stat(name);
}

absl::StatusOr<LayerInfo> LayerStore::Commit(const std::string& name, const std::string& key,
                                             const std::map<std::string, std::string>& labels) {
  RETURN_IF_ERROR(ValidateName(name));
  RETURN_IF_ERROR(ValidateLabels(labels));
  Db& db = *impl_->db;
  std::string cache_id;
  {
    ASSIGN_OR_RETURN(Writer txn, impl_->conn->Write());
    ASSIGN_OR_RETURN(Row row, impl_->Find(key));
    if (row.info.kind != LayerKind::kActive) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot commit \"", key, "\": it is ", LayerKindName(row.info.kind), ", not active"));
    }
    ASSIGN_OR_RETURN(Stmt taken, db.Prepare("SELECT 1 FROM layers WHERE name = ?"));
    ASSIGN_OR_RETURN(bool exists, taken.Bind(1, name).Step());
    if (exists) return absl::AlreadyExistsError(absl::StrCat("layer \"", name, "\" already exists"));
    ASSIGN_OR_RETURN(Stmt up, db.Prepare(
        "UPDATE layers SET name = ?, kind = ?, created = ?, updated = ? WHERE cache_id = ?"));
    int64_t now = NowNanos();
    RETURN_IF_ERROR(up.Bind(1, name)
                        .Bind(2, static_cast<int64_t>(LayerKind::kCommitted))
                        .Bind(3, now)
                        .Bind(4, now)
                        .Bind(5, row.info.cache_id)
                        .Run());
    std::map<std::string, std::string> merged = row.info.labels;
    for (const auto& [k, v] : labels) merged[k] = v;
    RETURN_IF_ERROR(impl_->SetLabels(row.info.cache_id, merged));
    Failpoint("store_commit_before_commit");  // one transaction: all or nothing
    RETURN_IF_ERROR(txn.Commit());
    cache_id = row.info.cache_id;
  }
  // Best effort: a device left active costs a dm node until Remove.
  (void)driver_->Committed(cache_id);
  return Stat(name);
}

absl::StatusOr<LayerInfo> LayerStore::Stat(const std::string& name) {
  auto l = impl_->conn->Lock();
  ASSIGN_OR_RETURN(Row row, impl_->Find(name));
  return row.info;
}

absl::StatusOr<LayerInfo> LayerStore::Update(const std::string& name,
                                             const std::map<std::string, std::string>& labels,
                                             const std::vector<std::string>& field_paths) {
  RETURN_IF_ERROR(ValidateLabels(labels));
  Db& db = *impl_->db;
  {
    ASSIGN_OR_RETURN(Writer txn, impl_->conn->Write());
    ASSIGN_OR_RETURN(Row row, impl_->Find(name));
    std::map<std::string, std::string> result = row.info.labels;
    if (field_paths.empty()) {
      result = labels;
    } else {
      for (const std::string& path : field_paths) {
        absl::string_view p = path;
        if (p == "labels") {
          result = labels;
        } else if (absl::ConsumePrefix(&p, "labels.") && !p.empty()) {
          auto it = labels.find(std::string(p));
          if (it == labels.end()) {
            result.erase(std::string(p));
          } else {
            result[it->first] = it->second;
          }
        } else {
          return absl::InvalidArgumentError(
              absl::StrCat("cannot update field \"", path, "\": only labels are mutable"));
        }
      }
    }
    RETURN_IF_ERROR(impl_->SetLabels(row.info.cache_id, result));
    ASSIGN_OR_RETURN(Stmt up, db.Prepare("UPDATE layers SET updated = ? WHERE cache_id = ?"));
    RETURN_IF_ERROR(up.Bind(1, NowNanos()).Bind(2, row.info.cache_id).Run());
    RETURN_IF_ERROR(txn.Commit());
  }
  return Stat(name);
}

absl::StatusOr<std::vector<LayerInfo>> LayerStore::List() {
  std::vector<LayerInfo> out;
  RETURN_IF_ERROR(Walk(Filter(), [&](const LayerInfo& info) {
    out.push_back(info);
    return absl::OkStatus();
  }));
  return out;
}

namespace {
// containerd's snapshot adaptor: name, parent, kind, labels.KEY (a dotted
// key may also be written as several fields: labels.a.b is label "a.b").
std::optional<absl::string_view> LayerField(const LayerInfo& info,
                                            const std::vector<std::string>& path,
                                            std::string& scratch) {
  if (path.empty()) return std::nullopt;
  const std::string& f = path[0];
  if (path.size() == 1) {
    if (f == "name") return absl::string_view(info.name);
    if (f == "parent") return absl::string_view(info.parent);
    if (f == "kind") return absl::string_view(LayerKindName(info.kind));
    return std::nullopt;
  }
  if (f != "labels" || info.labels.empty()) return std::nullopt;
  const std::string* key = &path[1];
  if (path.size() > 2) {
    scratch = absl::StrJoin(path.begin() + 1, path.end(), ".");
    key = &scratch;
  }
  auto it = info.labels.find(*key);
  if (it == info.labels.end()) return std::nullopt;
  return absl::string_view(it->second);
}
}  // namespace

absl::Status LayerStore::Walk(const std::vector<std::string>& filters,
                              const std::function<absl::Status(const LayerInfo&)>& fn) {
  ASSIGN_OR_RETURN(Filter filter, Filter::ParseAll(filters));
  return Walk(filter, fn);
}

absl::Status LayerStore::Walk(const Filter& filter,
                              const std::function<absl::Status(const LayerInfo&)>& fn) {
  // Rows stay where they were read (a deque does not move them as it
  // grows); sorting and filtering handle pointers, and `fn` gets them
  // after the lock is let go.
  std::deque<Row> rows;
  std::vector<const LayerInfo*> matched;
  {
    // Two reads in one transaction (a consistent snapshot): the visible
    // layers, then every label, joined here; filtered before returning.
    auto l = impl_->conn->Lock();
    Db& db = *impl_->db;
    RETURN_IF_ERROR(db.Exec("BEGIN"));
    absl::Cleanup end = [&] { (void)db.Exec("COMMIT"); };
    // Every row in one scan (parent names and children counted over every
    // state, as Find's subqueries count them), joined here rather than by a
    // subquery per row; then every label. In table order, sorted by name
    // below: ORDER BY l.name walked the name index and looked each row up
    // in the table (a b-tree search per layer, the most of Walk's time at
    // 5,000 layers).
    ASSIGN_OR_RETURN(Stmt s, db.Prepare(absl::StrCat("SELECT ", kOwnColumns, " FROM layers l")));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      ASSIGN_OR_RETURN(Row r, ReadRow(s));
      rows.push_back(std::move(r));
    }
    absl::flat_hash_map<absl::string_view, size_t> by_cache;  // keys point into rows
    by_cache.reserve(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) by_cache.emplace(rows[i].info.cache_id, i);
    for (Row& r : rows) {
      if (r.parent_cache.empty()) continue;
      auto it = by_cache.find(r.parent_cache);
      if (it == by_cache.end()) continue;
      rows[it->second].info.children++;
      if (r.state == RecordState::kReady) r.info.parent = rows[it->second].info.name;
    }
    ASSIGN_OR_RETURN(Stmt ls, db.Prepare("SELECT cache_id, key, value FROM labels"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, ls.Step());
      if (!row) break;
      auto it = by_cache.find(ls.Text(0));
      if (it != by_cache.end() && rows[it->second].state == RecordState::kReady) {
        rows[it->second].info.labels.emplace(ls.Text(1), ls.Text(2));
      }
    }
    std::vector<const LayerInfo*> all;
    all.reserve(rows.size());
    for (const Row& r : rows) {
      if (r.state == RecordState::kReady) all.push_back(&r.info);
    }
    // By name (a ready layer's is never NULL; UNIQUE makes the order total).
    std::sort(all.begin(), all.end(), [](const LayerInfo* a, const LayerInfo* b) { return a->name < b->name; });
    std::string scratch;
    for (const LayerInfo* info : all) {
      if (filter.Match([&](const std::vector<std::string>& path) {
            return LayerField(*info, path, scratch);
          })) {
        matched.push_back(info);
      }
    }
  }
  for (const LayerInfo* info : matched) RETURN_IF_ERROR(fn(*info));
  return absl::OkStatus();
}

absl::Status LayerStore::Remove(const std::string& name, const RemoveOptions& options) {
  Db& db = *impl_->db;
  Row row;
  std::optional<OpLock> lock;
  if (!options.force) {
    // Asked of the driver before the transaction (no driver call under the
    // registry's lock); a mount that races with it is caught after hiding.
    ASSIGN_OR_RETURN(Row seen, impl_->FindLocked(name));
    if (seen.info.refs <= 1 && seen.info.children == 0) RETURN_IF_ERROR(NotMounted(*driver_, seen.info));
  }
  // true: done (one reference dropped); false: hidden, to be reaped.
  ASSIGN_OR_RETURN(bool dropped, impl_->WithReserve([&]() -> absl::StatusOr<bool> {
    ASSIGN_OR_RETURN(Writer txn, impl_->conn->Write());
    ASSIGN_OR_RETURN(row, impl_->Find(name));
    if (row.info.refs > 1) {
      ASSIGN_OR_RETURN(Stmt down, db.Prepare("UPDATE layers SET refs = refs - 1 WHERE cache_id = ?"));
      RETURN_IF_ERROR(down.Bind(1, row.info.cache_id).Run());
      RETURN_IF_ERROR(txn.Commit());
      return true;
    }
    if (row.info.children > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot remove layer \"", name, "\": it has ", row.info.children,
          row.info.children == 1 ? " child" : " children"));
    }
    if (!lock) {
      ASSIGN_OR_RETURN(lock, OpLock::Acquire(impl_->locks_dir, row.info.cache_id, true));
    }
    ASSIGN_OR_RETURN(Stmt hide, db.Prepare(
        "UPDATE layers SET name = NULL, state = 'removing' WHERE cache_id = ?"));
    RETURN_IF_ERROR(hide.Bind(1, row.info.cache_id).Run());
    RETURN_IF_ERROR(txn.Commit());
    return false;
  }));
  if (dropped) return absl::OkStatus();
  if (!options.force) {
    // A mount that raced with the check above (Mount found the layer before
    // it was hidden): give the layer back rather than pull it from under it.
    if (absl::Status busy = NotMounted(*driver_, row.info); !busy.ok()) {
      ASSIGN_OR_RETURN(Writer txn, impl_->conn->Write());
      ASSIGN_OR_RETURN(Stmt unhide, db.Prepare(
          "UPDATE layers SET name = ?, state = 'ready' WHERE cache_id = ?"));
      RETURN_IF_ERROR(unhide.Bind(1, row.info.name).Bind(2, row.info.cache_id).Run());
      RETURN_IF_ERROR(txn.Commit());
      lock->Release();
      return busy;
    }
  }
  // Hidden: from here on the layer is gone for every reader; reap it.
  Failpoint("store_remove_after_intent");
  absl::Status rm = driver_->Remove(row.info.cache_id);
  if (!rm.ok() && !GoneOrNotFound(rm)) {
    return base::Annotate(Named(row.info, rm), absl::StrCat("remove layer \"", name, "\" (check --repair retries)"));
  }
  Failpoint("store_remove_after_driver");
  if (!row.info.init_id.empty()) {
    absl::Status rm_init = driver_->Remove(row.info.init_id);
    if (!rm_init.ok() && !GoneOrNotFound(rm_init)) {
      return base::Annotate(Named(row.info, rm_init), absl::StrCat("remove init layer of \"", name, "\""));
    }
  }
  // Lost only to a power loss: a hidden record Check reaps.
  RETURN_IF_ERROR(impl_->WithReserve([&] { return impl_->DeleteRowNow(row.info.cache_id, /*relaxed=*/true); }));
  lock->Release();
  impl_->MakeReserve();  // again, if it was given: the layer's space is free
  return absl::OkStatus();
}

absl::StatusOr<std::string> LayerStore::Mount(const std::string& name) {
  ASSIGN_OR_RETURN(Row row, impl_->FindLocked(name));
  absl::StatusOr<std::string> dir = driver_->Get(row.info.cache_id, "");
  if (!dir.ok()) return Named(row.info, dir.status());
  return dir;
}

absl::Status LayerStore::Unmount(const std::string& name) {
  ASSIGN_OR_RETURN(Row row, impl_->FindLocked(name));
  // Every driver answers FailedPrecondition for a layer nobody mounted.
  return Named(row.info, impl_->WithReserve([&] { return driver_->Put(row.info.cache_id); }));
}

absl::Status LayerStore::MountReadOnly(const std::string& name, const std::string& target) {
  ASSIGN_OR_RETURN(std::string dir, Mount(name));
  absl::Status bound = absl::OkStatus();
  if (::mount(dir.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    bound = base::ErrnoError(errno, absl::StrCat("binding ", dir, " at ", target));
  } else if (::mount(nullptr, target.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
    bound = base::ErrnoError(errno, absl::StrCat("making ", target, " read-only"));
    (void)::umount2(target.c_str(), MNT_DETACH);
  }
  if (bound.ok()) return absl::OkStatus();
  (void)Unmount(name);
  return bound;
}

absl::Status LayerStore::UnmountReadOnly(const std::string& name, const std::string& target) {
  RETURN_IF_ERROR(impl_->FindLocked(name).status());
  if (::umount2(target.c_str(), UMOUNT_NOFOLLOW) != 0) {
    return base::ErrnoError(errno, absl::StrCat("unmounting ", target, " (the read-only view of \"", name, "\")"));
  }
  return Unmount(name);
}

absl::StatusOr<std::vector<MountSpec>> LayerStore::Mounts(const std::string& name) {
  ASSIGN_OR_RETURN(Row row, impl_->FindLocked(name));
  absl::StatusOr<std::vector<MountSpec>> described = driver_->Mounts(row.info.cache_id);
  if (!described.ok()) return Named(row.info, VanishedIsNotFound(described.status(), name));
  std::vector<MountSpec> mounts = std::move(*described);
  if (row.info.kind != LayerKind::kActive) {
    for (MountSpec& m : mounts) {
      m.options.erase(std::remove(m.options.begin(), m.options.end(), "rw"), m.options.end());
      if (std::find(m.options.begin(), m.options.end(), "ro") == m.options.end()) {
        m.options.push_back("ro");
      }
    }
  }
  return mounts;
}

namespace {
std::string DiffBase(const Row& row) {
  return row.info.init_id.empty() ? row.parent_cache : row.info.init_id;
}
}  // namespace

absl::StatusOr<DiffResult> LayerStore::Diff(const std::string& name, ByteSink& sink) {
  ASSIGN_OR_RETURN(Row row, impl_->FindLocked(name));
  absl::StatusOr<DiffResult> r = driver_->Diff(row.info.cache_id, DiffBase(row), sink);
  if (!r.ok()) return Named(row.info, r.status());
  return r;
}

absl::StatusOr<std::vector<Change>> LayerStore::Changes(const std::string& name) {
  ASSIGN_OR_RETURN(Row row, impl_->FindLocked(name));
  absl::StatusOr<std::vector<Change>> r = driver_->Changes(row.info.cache_id, DiffBase(row));
  if (!r.ok()) return Named(row.info, r.status());
  return r;
}

absl::StatusOr<DiskUsage> LayerStore::Usage(const std::string& name) {
  ASSIGN_OR_RETURN(Row row, impl_->FindLocked(name));
  absl::StatusOr<DiskUsage> usage = driver_->Usage(row.info.cache_id, DiffBase(row));
  if (!usage.ok()) return Named(row.info, VanishedIsNotFound(usage.status(), name));
  return usage;
}

absl::StatusOr<std::map<std::string, std::string>> LayerStore::Metadata(const std::string& name) {
  ASSIGN_OR_RETURN(Row row, impl_->FindLocked(name));
  absl::StatusOr<std::map<std::string, std::string>> r = driver_->Metadata(row.info.cache_id);
  if (!r.ok()) return Named(row.info, r.status());
  return r;
}

absl::StatusOr<std::map<std::string, int64_t>> LayerStore::Counts() {
  auto l = impl_->conn->Lock();
  ASSIGN_OR_RETURN(std::vector<Row> rows, impl_->AllRows());
  std::map<std::string, int64_t> counts = {
      {"committed", 0}, {"active", 0}, {"view", 0}, {"incomplete", 0}};
  for (const Row& r : rows) {
    if (r.state == RecordState::kReady) {
      counts[LayerKindName(r.info.kind)]++;
    } else {
      counts["incomplete"]++;
    }
  }
  return counts;
}

absl::StatusOr<CheckReport> LayerStore::Check(bool repair, bool prune) {
  CheckReport report;
  Db& db = *impl_->db;
  // 0. The registry file itself: SQLite's own consistency check (b-trees,
  //    indexes). Index damage is rebuilt by REINDEX; anything else needs
  //    the backup.
  {
    auto l = impl_->conn->Lock();
    ASSIGN_OR_RETURN(Stmt q, db.Prepare("PRAGMA integrity_check"));
    std::vector<std::string> damage;
    for (;;) {
      absl::StatusOr<bool> row = q.Step();
      if (!row.ok()) {
        damage.push_back(std::string(row.status().message()));
        break;
      }
      if (!*row) break;
      if (q.Text(0) != "ok") damage.push_back(q.Text(0));
    }
    for (const std::string& d : damage) {
      report.problems.push_back(absl::StrCat("registry ", impl_->db_path, " is damaged: ", d,
                                             repair ? "" : " (check --repair rebuilds its indexes)"));
    }
    if (!damage.empty() && repair) {
      if (absl::Status s = db.Exec("REINDEX"); s.ok()) {
        report.repaired.push_back("rebuilt the registry's indexes (REINDEX)");
      } else {
        report.problems.push_back(absl::StrCat("REINDEX: ", s.message(),
                                               "; restore the registry from a backup"));
      }
    }
  }
  std::vector<Row> rows;
  {
    auto l = impl_->conn->Lock();
    ASSIGN_OR_RETURN(rows, impl_->AllRows());
  }

  // 1. Interrupted creates and removes: reap children before parents.
  std::vector<Row> stale;
  for (const Row& r : rows) {
    if (r.state == RecordState::kReady) continue;
    absl::StatusOr<OpLock> probe = OpLock::Acquire(impl_->locks_dir, r.info.cache_id, false);
    if (!probe.ok()) {
      if (base::HasErrno(probe.status(), EWOULDBLOCK)) {
        report.skipped.push_back(absl::StrCat("layer ", r.info.cache_id, " is being ",
                                              r.state == RecordState::kCreating ? "created" : "removed",
                                              " by another process"));
        continue;
      }
      return probe.status();
    }
    {
      // Finished (or reaped) between our read and the probe: not stale.
      auto l = impl_->conn->Lock();
      ASSIGN_OR_RETURN(Stmt again, db.Prepare("SELECT state FROM layers WHERE cache_id = ?"));
      ASSIGN_OR_RETURN(bool still, again.Bind(1, r.info.cache_id).Step());
      if (!still || again.Text(0) == RecordStateName(RecordState::kReady)) {
        probe->Release();
        continue;
      }
    }
    report.problems.push_back(absl::StrCat(
        "interrupted ", r.state == RecordState::kCreating ? "create" : "remove", " of layer ",
        r.info.name.empty() ? r.info.cache_id : absl::StrCat("\"", r.info.name, "\" (", r.info.cache_id, ")")));
    if (repair) {
      bool reaped = false;
      absl::Status rm = driver_->Remove(r.info.cache_id);
      absl::Status rm_init = r.info.init_id.empty() ? absl::OkStatus() : driver_->Remove(r.info.init_id);
      if ((rm.ok() || GoneOrNotFound(rm)) && (rm_init.ok() || GoneOrNotFound(rm_init))) {
        absl::Status del = [&]() -> absl::Status {
          ASSIGN_OR_RETURN(Writer txn, impl_->conn->Write());
          // Re-read under the transaction: only reap what is still stale.
          ASSIGN_OR_RETURN(Stmt s, db.Prepare(
              "SELECT count(*) FROM layers WHERE parent = ?"));
          ASSIGN_OR_RETURN(bool any, s.Bind(1, r.info.cache_id).Step());
          if (any && s.Int(0) > 0) {
            return absl::FailedPreconditionError("layers are built on it");
          }
          RETURN_IF_ERROR(impl_->DeleteRow(r.info.cache_id));
          return txn.Commit();
        }();
        reaped = del.ok();
        if (!del.ok()) {
          report.problems.push_back(absl::StrCat("cannot reap ", r.info.cache_id, ": ", del.message()));
        }
      } else {
        report.problems.push_back(absl::StrCat(
            "cannot remove driver layer ", r.info.cache_id, ": ", (!rm.ok() ? rm : rm_init).message()));
      }
      if (reaped) {
        report.repaired.push_back(absl::StrCat("reaped ", r.info.cache_id));
        probe->Release();
      }
    }
  }

  // 2. Records whose driver layers are gone; dangling parents.
  std::set<std::string> known;
  for (const Row& r : rows) {
    known.insert(r.info.cache_id);
    if (!r.info.init_id.empty()) known.insert(r.info.init_id);
  }
  for (const Row& r : rows) {
    if (r.state != RecordState::kReady) continue;
    bool missing = !driver_->Exists(r.info.cache_id) ||
                   (!r.info.init_id.empty() && !driver_->Exists(r.info.init_id));
    if (!r.parent_cache.empty() && known.count(r.parent_cache) == 0) {
      report.problems.push_back(absl::StrCat("layer \"", r.info.name, "\": parent ",
                                             r.parent_cache, " is not recorded"));
    }
    if (!missing) continue;
    report.problems.push_back(absl::StrCat("layer \"", r.info.name, "\": driver layer ",
                                           r.info.cache_id, " is missing"));
    if (!repair) continue;
    if (r.info.children > 0) {
      report.problems.push_back(absl::StrCat("cannot drop record of \"", r.info.name, "\": it has ",
                                             r.info.children, " children"));
      continue;
    }
    (void)driver_->Remove(r.info.cache_id);
    if (!r.info.init_id.empty()) (void)driver_->Remove(r.info.init_id);
    absl::Status s;
    s = impl_->DeleteRowNow(r.info.cache_id);
    if (s.ok()) {
      report.repaired.push_back(absl::StrCat("dropped record of \"", r.info.name, "\""));
    } else {
      report.problems.push_back(absl::StrCat("drop record of \"", r.info.name, "\": ", s.message()));
    }
  }

  // 3. What the driver derives from its records for the kernel and outside
  //    tools (overlay's l/ links and link files): rebuilt on --repair.
  RETURN_IF_ERROR(driver_->CheckDerived(repair, &report.problems, &report.repaired));

  // 4. Driver layers no record owns (a crash between Create and the record's
  //    removal, or foreign ids). Re-read the records first: another process
  //    may have created layers since.
  ASSIGN_OR_RETURN(std::vector<std::string> ids, driver_->List());
  // Driver records read before the rows: a create's row commits before its
  // driver's intent, so a record with no row below is no live create's.
  std::vector<LayerRecord> records;
  if (impl_->records != nullptr) {
    ASSIGN_OR_RETURN(records, impl_->records->List());
  }
  std::vector<Row> now_rows;
  {
    auto l = impl_->conn->Lock();
    ASSIGN_OR_RETURN(now_rows, impl_->AllRows());
  }
  for (const Row& r : now_rows) {
    known.insert(r.info.cache_id);
    if (!r.info.init_id.empty()) known.insert(r.info.init_id);
  }
  for (const std::string& id : ids) {
    if (known.count(id) != 0) continue;
    if (!prune) {
      // Data the registry cannot account for is never deleted unasked: it
      // may be all that is left of layers whose records were lost.
      std::string where;
      absl::StatusOr<std::map<std::string, std::string>> meta = driver_->Metadata(id);
      if (meta.ok() && !meta->empty()) {
        auto dir = meta->count("Dir") ? meta->find("Dir")
                   : meta->count("UpperDir") ? meta->find("UpperDir") : meta->begin();
        where = absl::StrCat(" at ", dir->second);
      }
      report.problems.push_back(absl::StrCat(
          "driver layer ", id, where, " has no record",
          repair ? " (kept: check --repair --prune deletes layers no record owns)" : ""));
      continue;
    }
    report.problems.push_back(absl::StrCat("driver layer ", id, " has no record"));
    if (!repair) continue;
    absl::Status rm = driver_->Remove(id);
    if (rm.ok() || GoneOrNotFound(rm)) {
      report.repaired.push_back(absl::StrCat("removed driver layer ", id));
    } else {
      report.problems.push_back(absl::StrCat("remove driver layer ", id, ": ", rm.message()));
    }
  }

  // 5. Driver records half-way (creating, removing) that no layer owns: a
  //    driver's create or removal whose store row is gone. The driver's
  //    Remove finishes them on --repair.
  for (const LayerRecord& r : records) {
    if (r.state == RecordState::kReady || known.count(r.id) != 0) continue;
    // A removal finishing meanwhile drops its record before its row.
    ASSIGN_OR_RETURN(std::optional<LayerRecord> still, impl_->records->Get(r.id));
    if (!still || still->state == RecordState::kReady) continue;
    report.problems.push_back(absl::StrCat("driver record of ", r.id, " is left ", RecordStateName(r.state),
                                           " and no layer owns it"));
    if (!repair) continue;
    absl::Status rm = driver_->Remove(r.id);
    if (rm.ok() || GoneOrNotFound(rm)) {
      report.repaired.push_back(absl::StrCat("finished the driver's removal of ", r.id));
    } else {
      report.problems.push_back(absl::StrCat("remove driver layer ", r.id, ": ", rm.message()));
    }
  }
  return report;
}

absl::StatusOr<std::unique_ptr<LayerStore>> OpenLayerStore(
    const std::string& given_root, const std::string& driver_name,
    const std::map<std::string, std::string>& options) {
  // Relative roots become absolute here, at the edge: mount paths, overlay
  // lowerdirs and Metadata are absolute whatever the caller's cwd.
  ASSIGN_OR_RETURN(std::string root, AbsoluteRoot(given_root));
  // What the root holds decides before anything is made: a new store only
  // in an empty or new directory, never over a lost registry.
  ASSIGN_OR_RETURN(RootState state, ExamineRoot(root));
  std::string recorded;
  // The registry is opened once: the connection that read the recorded
  // driver is the store's (each open and close of a connection costs reads
  // of the WAL, and the last close a checkpoint).
  std::unique_ptr<Db> db;
  if (state == RootState::kStore) {
    ASSIGN_OR_RETURN(db, OpenRegistry(root, &recorded));
  }
  std::string name = driver_name;
  if (name.empty()) name = recorded;
  if (!recorded.empty() && name != recorded) {
    return absl::FailedPreconditionError(absl::StrCat(
        "layer store ", root, " was created with driver \"", recorded, "\", not \"", name, "\""));
  }
  if (!name.empty()) {
    // An unknown driver fails before the root is made.
    std::vector<DriverInfo> known = RegisteredDrivers();
    if (std::none_of(known.begin(), known.end(), [&](const DriverInfo& d) { return d.name == name; })) {
      std::vector<std::string> names;
      for (const DriverInfo& d : known) names.push_back(d.name);
      return absl::NotFoundError(absl::StrCat("unknown graph driver \"", name, "\" (known: ",
                                              absl::StrJoin(names, ", "), ")"));
    }
  }
  if (name.empty()) {
    // Auto-selection: the first driver whose probe succeeds names the
    // registry made below (none: OpenDriver's error lists every reason).
    for (const ProbeReport& r : ProbeDrivers(root, options)) {
      if (r.status.ok()) {
        name = r.name;
        break;
      }
    }
    if (name.empty()) return OpenDriver("", root, options).status();
  }
  bool made_root = false;
  bool made_registry = false;
  if (state == RootState::kNew) {
    made_root = ::mkdir(root.c_str(), 0700) == 0;
    if (!made_root && errno != EEXIST) return base::ErrnoError(errno, absl::StrCat("mkdir ", root));
  }
  // A failed first open leaves nothing behind: no directory it made, no
  // registry in an empty one it was given.
  absl::Cleanup undo = [&] {
    if (made_root) {
      (void)RemoveTree(root);
    } else if (made_registry) {
      for (const std::string& n : {std::string("layers.db"), std::string("layers.db-wal"),
                                   std::string("layers.db-shm"), std::string("locks"), name}) {
        (void)RemoveTree(absl::StrCat(root, "/", n));
      }
    }
  };
  if (state == RootState::kNew) {
    // The registry comes first: the driver keeps its records in it.
    made_registry = true;
    RETURN_IF_ERROR(MakeDir(root + "/locks", 0700));
    RETURN_IF_ERROR(CreateRegistry(root, name));
  }
  // One connection for the store and its driver's records.
  if (db == nullptr) {
    std::string now_recorded;
    ASSIGN_OR_RETURN(db, OpenRegistry(root, &now_recorded));
    if (now_recorded != name) {  // a concurrent first open with another driver won
      return absl::FailedPreconditionError(absl::StrCat(
          "layer store ", root, " was created with driver \"", now_recorded, "\", not \"", name, "\""));
    }
  }
  auto conn = std::make_shared<SharedDb>(std::move(db));
  std::shared_ptr<LayerRecords> records = LayerRecords::InStore(root + "/layers.db", conn);
  absl::StatusOr<std::unique_ptr<Driver>> driver = OpenDriver(name, root, options, records);
  if (!driver.ok()) return driver.status();
  absl::StatusOr<std::unique_ptr<LayerStore>> store =
      LayerStore::OpenExamined(root, std::move(*driver), false, std::move(conn), std::move(records));
  if (store.ok()) std::move(undo).Cancel();
  return store;
}

}  // namespace graph
