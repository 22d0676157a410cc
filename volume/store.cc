#include "volume/store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <fstream>
#include <algorithm>
#include <functional>
#include <mutex>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "base/failpoint.h"
#include "base/file_lock.h"
#include "base/fsutil.h"
#include "base/sqlite.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "thinpool/state_dir.h"
#include "volume/backend.h"
#include "volume/dir_backend.h"
#include "volume/thin_backend.h"

namespace volume {

using base::sqlite::Db;
using base::sqlite::Stmt;
using base::sqlite::Transaction;

absl::Status ValidateVolumeName(absl::string_view name) {
  if (name.empty() || name.size() > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid volume name \"", absl::CHexEscape(name.substr(0, 80)), "\": must be 1-64 characters"));
  }
  if (!absl::ascii_isalnum(static_cast<unsigned char>(name[0]))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid volume name \"", absl::CHexEscape(name), "\": must start with a letter or digit"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid volume name \"", absl::CHexEscape(name),
          "\": only letters, digits, '_', '.' and '-' are allowed"));
    }
  }
  return absl::OkStatus();
}

absl::string_view BackendName(Backend backend) {
  return backend == Backend::kThin ? "thin" : "directory";
}

absl::StatusOr<Backend> ParseBackend(absl::string_view name) {
  if (name == "thin") return Backend::kThin;
  if (name == "directory" || name == "dir") return Backend::kDirectory;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown volume backend \"", absl::CHexEscape(name), "\": thin or directory"));
}

namespace {

constexpr char kFormat[] = "dmthin-volumes-1";

constexpr char kSchema[] = R"sql(
CREATE TABLE meta(
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL);
CREATE TABLE volumes(
  name TEXT PRIMARY KEY,
  backend TEXT NOT NULL CHECK(backend IN ('thin', 'directory')),
  fs TEXT NOT NULL,
  size INTEGER NOT NULL,
  origin TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL CHECK(state IN ('creating', 'ready', 'removing')),
  -- 0 not populated, 1 populated (or nocopy), 2 a copy-up was under way
  populated INTEGER NOT NULL DEFAULT 0,
  created INTEGER NOT NULL);
CREATE TABLE labels(
  volume TEXT NOT NULL REFERENCES volumes(name) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY(volume, key));
CREATE TABLE mounts(
  volume TEXT NOT NULL REFERENCES volumes(name) ON DELETE CASCADE,
  caller TEXT NOT NULL,
  boot TEXT NOT NULL,
  refs INTEGER NOT NULL CHECK(refs > 0),
  PRIMARY KEY(volume, caller));
)sql";

constexpr char kColumns[] = "name, backend, fs, size, origin, state, populated, created";

struct Row {
  std::string name;
  Backend backend = Backend::kDirectory;
  std::string fs;
  uint64_t size = 0;
  std::string origin;
  std::string state;
  int populated = 0;
  int64_t created = 0;
};

Row ReadRow(const Stmt& s) {
  Row r;
  r.name = s.Text(0);
  r.backend = s.Text(1) == "thin" ? Backend::kThin : Backend::kDirectory;
  r.fs = s.Text(2);
  r.size = static_cast<uint64_t>(s.Int(3));
  r.origin = s.Text(4);
  r.state = s.Text(5);
  r.populated = static_cast<int>(s.Int(6));
  r.created = s.Int(7);
  return r;
}

absl::Status EnsureDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return base::ErrnoError(errno, absl::StrCat("mkdir ", path));
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return base::ErrnoError(errno, absl::StrCat("stat ", path));
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("refusing ", path, ": not a directory (or a symlink)"));
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    return absl::FailedPreconditionError(
        absl::StrCat("refusing ", path, ": writable by group or others"));
  }
  return absl::OkStatus();
}

// Entries of `dir` other than . and .. (and lost+found); ENOENT is empty.
absl::StatusOr<bool> HasEntries(const std::string& dir) {
  base::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return false;
    return base::ErrnoError(errno, absl::StrCat("open ", dir));
  }
  ASSIGN_OR_RETURN(std::vector<base::DirEntry> entries, base::ListDirBeneath(fd.get(), ""));
  for (const base::DirEntry& e : entries) {
    if (e.name != "lost+found") return true;
  }
  return false;
}

absl::StatusOr<std::string> BootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (!(in >> id) || id.empty()) {
    return absl::UnavailableError("cannot read /proc/sys/kernel/random/boot_id");
  }
  return id;
}

absl::Status ValidateCaller(absl::string_view caller) {
  if (caller.empty() || caller.size() > 256 || caller.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError("mount caller id must be 1-256 bytes without NUL");
  }
  return absl::OkStatus();
}

absl::Status ValidateLabels(const std::map<std::string, std::string>& labels) {
  for (const auto& [k, v] : labels) {
    if (k.empty() || k.size() > 256 || v.size() > 4096 ||
        k.find('\0') != std::string::npos || v.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid label \"", absl::CHexEscape(k.substr(0, 80)),
          "\": keys 1-256 bytes, values up to 4096, no NUL"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

class VolumeStore::Impl {
 public:
  std::string root;
  std::string boot;
  std::unique_ptr<Db> db;
  std::unique_ptr<VolumeBackend> dir;
  std::unique_ptr<VolumeBackend> thin;
  absl::Status thin_error;  // why there is no thin backend
  std::mutex mu;  // this process's threads; base::FileLock serialises processes

  absl::StatusOr<base::FileLock> Lock() { return base::FileLock::Take(root + "/lock"); }

  absl::StatusOr<VolumeBackend*> BackendFor(Backend b) {
    if (b == Backend::kDirectory) return dir.get();
    if (thin) return thin.get();
    return thin_error;
  }

  absl::StatusOr<Row> GetRow(absl::string_view name) {
    RETURN_IF_ERROR(ValidateVolumeName(name));
    ASSIGN_OR_RETURN(Stmt s, db->Prepare(absl::StrCat("SELECT ", kColumns,
                                                      " FROM volumes WHERE name = ?")));
    s.Bind(1, name);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) {
      return base::WithErrno(absl::NotFoundError(absl::StrCat("no volume \"", name, "\"")), ENOENT);
    }
    return ReadRow(s);
  }

  absl::StatusOr<Row> ReadyRow(absl::string_view name) {
    ASSIGN_OR_RETURN(Row r, GetRow(name));
    if (r.state != "ready") {
      return absl::FailedPreconditionError(absl::StrCat(
          "volume \"", name, "\" is ", r.state, " (interrupted; run check --repair)"));
    }
    return r;
  }

  absl::StatusOr<std::vector<Row>> Rows() {
    ASSIGN_OR_RETURN(Stmt s, db->Prepare(absl::StrCat("SELECT ", kColumns,
                                                      " FROM volumes ORDER BY name")));
    std::vector<Row> rows;
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      rows.push_back(ReadRow(s));
    }
    return rows;
  }

  // References of this boot: per caller.
  absl::StatusOr<std::map<std::string, uint64_t>> Refs(absl::string_view name) {
    ASSIGN_OR_RETURN(Stmt s, db->Prepare(
        "SELECT caller, refs FROM mounts WHERE volume = ? AND boot = ?"));
    s.Bind(1, name).Bind(2, boot);
    std::map<std::string, uint64_t> refs;
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      refs[s.Text(0)] = static_cast<uint64_t>(s.Int(1));
    }
    return refs;
  }

  static uint64_t Total(const std::map<std::string, uint64_t>& refs) {
    uint64_t n = 0;
    for (const auto& [c, r] : refs) n += r;
    return n;
  }

  absl::Status SetState(absl::string_view name, absl::string_view state) {
    ASSIGN_OR_RETURN(Stmt s, db->Prepare("UPDATE volumes SET state = ? WHERE name = ?"));
    return s.Bind(1, state).Bind(2, name).Run();
  }

  absl::Status SetPopulated(absl::string_view name, int populated) {
    ASSIGN_OR_RETURN(Stmt s, db->Prepare("UPDATE volumes SET populated = ? WHERE name = ?"));
    return s.Bind(1, int64_t{populated}).Bind(2, name).Run();
  }

  absl::Status DeleteRow(absl::string_view name) {
    ASSIGN_OR_RETURN(auto txn, Transaction::Begin(*db));
    {
      ASSIGN_OR_RETURN(Stmt s, db->Prepare("DELETE FROM volumes WHERE name = ?"));
      RETURN_IF_ERROR(s.Bind(1, name).Run());
      ASSIGN_OR_RETURN(Stmt g, db->Prepare("DELETE FROM meta WHERE key = ?"));
      RETURN_IF_ERROR(g.Bind(1, GrowKey(name)).Run());
    }
    return txn->Commit();
  }

  // A grow's intent: meta row "grow:<name>" = the new size, recorded before
  // the backend acts, dropped with the new size's record.
  static std::string GrowKey(absl::string_view name) { return absl::StrCat("grow:", name); }

  absl::StatusOr<std::optional<uint64_t>> PendingGrow(absl::string_view name) {
    ASSIGN_OR_RETURN(Stmt s, db->Prepare("SELECT value FROM meta WHERE key = ?"));
    s.Bind(1, GrowKey(name));
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return std::nullopt;
    uint64_t size = 0;
    if (!absl::SimpleAtoi(s.Text(0), &size)) {
      return absl::DataLossError(absl::StrCat("volume ", name, ": bad grow record \"",
                                              absl::CHexEscape(s.Text(0)), "\""));
    }
    return size;
  }

  // The act and done of a grow whose intent is recorded: the backend
  // grows (idempotent), then the size and the intent's removal are one
  // transaction. A failed act drops the intent (the volume keeps its
  // recorded size; a thin device left larger than that is harmless).
  absl::Status FinishGrow(VolumeBackend& b, const Row& r, uint64_t size) {
    absl::Status grown = b.Grow(r.name, r.fs, r.size, size);
    if (grown.ok()) base::Failpoint("volume_grow_after_act");
    ASSIGN_OR_RETURN(auto txn, Transaction::Begin(*db));
    {
      if (grown.ok()) {
        ASSIGN_OR_RETURN(Stmt s, db->Prepare("UPDATE volumes SET size = ? WHERE name = ?"));
        RETURN_IF_ERROR(s.Bind(1, static_cast<int64_t>(size)).Bind(2, r.name).Run());
      }
      ASSIGN_OR_RETURN(Stmt g, db->Prepare("DELETE FROM meta WHERE key = ?"));
      RETURN_IF_ERROR(g.Bind(1, GrowKey(r.name)).Run());
    }
    RETURN_IF_ERROR(txn->Commit());
    return grown;
  }

  absl::Status InsertIntent(absl::string_view name, Backend backend, const std::string& fs,
                            uint64_t size, absl::string_view origin, int populated,
                            const std::map<std::string, std::string>& labels) {
    ASSIGN_OR_RETURN(auto txn, Transaction::Begin(*db));
    {
      ASSIGN_OR_RETURN(Stmt s, db->Prepare(
          "INSERT INTO volumes(name, backend, fs, size, origin, state, populated, created) "
          "VALUES(?, ?, ?, ?, ?, 'creating', ?, ?)"));
      s.Bind(1, name).Bind(2, BackendName(backend)).Bind(3, fs)
          .Bind(4, static_cast<int64_t>(size)).Bind(5, origin)
          .Bind(6, int64_t{populated}).Bind(7, static_cast<int64_t>(::time(nullptr)));
      absl::Status st = s.Run();
      if (absl::IsAlreadyExists(st)) {
        return base::WithErrno(absl::AlreadyExistsError(
            absl::StrCat("volume \"", name, "\" already exists")), EEXIST);
      }
      RETURN_IF_ERROR(st);
    }
    for (const auto& [k, v] : labels) {
      ASSIGN_OR_RETURN(Stmt s, db->Prepare("INSERT INTO labels(volume, key, value) VALUES(?, ?, ?)"));
      RETURN_IF_ERROR(s.Bind(1, name).Bind(2, k).Bind(3, v).Run());
    }
    return txn->Commit();
  }

  // The backend must not already hold `name` (data left without a record
  // is someone's: never adopted, never overwritten).
  absl::Status CheckNoOrphan(VolumeBackend& b, absl::string_view name) {
    if (GetRow(name).ok()) {
      return base::WithErrno(absl::AlreadyExistsError(
          absl::StrCat("volume \"", name, "\" already exists")), EEXIST);
    }
    ASSIGN_OR_RETURN(std::vector<std::string> names, b.ListNames());
    for (const std::string& n : names) {
      if (n == name) {
        return absl::FailedPreconditionError(absl::StrCat(
            "volume \"", name, "\" is not registered but its data exists (",
            b.DataPath(std::string(name)), "); refusing to overwrite it"));
      }
    }
    return absl::OkStatus();
  }

  // Intent recorded: act, then mark ready; a failure undoes both.
  absl::Status FinishCreate(VolumeBackend& b, const std::string& name,
                            const std::function<absl::Status()>& act) {
    base::Failpoint("volume_create_after_intent");
    absl::Status st = act();
    if (!st.ok()) {
      (void)b.Unmount(name);
      (void)b.Remove(name);
      (void)DeleteRow(name);
      return st;
    }
    base::Failpoint("volume_create_after_act");
    return SetState(name, "ready");
  }

  absl::StatusOr<VolumeInfo> Info(const Row& r) {
    VolumeInfo info;
    info.name = r.name;
    info.backend = r.backend;
    info.state = r.state;
    info.fs = r.fs;
    info.size_bytes = r.size;
    info.origin = r.origin;
    info.populated = r.populated == 1;
    info.created_unix = r.created;
    ASSIGN_OR_RETURN(Stmt s, db->Prepare("SELECT key, value FROM labels WHERE volume = ? ORDER BY key"));
    s.Bind(1, r.name);
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      info.labels[s.Text(0)] = s.Text(1);
    }
    ASSIGN_OR_RETURN(auto refs, Refs(r.name));
    info.mount_refs = Total(refs);
    absl::StatusOr<VolumeBackend*> b = BackendFor(r.backend);
    if (b.ok()) {
      if ((*b)->NeedsMount()) {
        absl::StatusOr<bool> m = (*b)->Mounted(r.name);
        info.mounted = m.ok() && *m;
        if (info.mounted) info.path = (*b)->DataPath(r.name);
      } else {
        info.mounted = info.mount_refs > 0;
        info.path = (*b)->DataPath(r.name);
      }
    }
    return info;
  }

  absl::Status Undo(const Row& r, VolumeCheckReport* report) {
    ASSIGN_OR_RETURN(VolumeBackend * b, BackendFor(r.backend));
    RETURN_IF_ERROR(b->Unmount(r.name));
    RETURN_IF_ERROR(b->Remove(r.name));
    RETURN_IF_ERROR(DeleteRow(r.name));
    report->actions.push_back(absl::StrCat(
        "volume ", r.name, ": ", r.state == "creating" ? "undid the interrupted create"
                                                       : "finished the interrupted remove"));
    return absl::OkStatus();
  }
};

VolumeStore::VolumeStore(std::string root) : root_(std::move(root)) {}
VolumeStore::~VolumeStore() = default;

absl::StatusOr<std::unique_ptr<VolumeStore>> VolumeStore::Open(const StoreOptions& options) {
  std::string root = options.root;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  if (root.empty() || root[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("volume store root must be an absolute path, got \"", options.root, "\""));
  }
  RETURN_IF_ERROR(EnsureDir(root, 0700));
  RETURN_IF_ERROR(EnsureDir(root + "/mnt", 0700));
  std::unique_ptr<VolumeStore> store(new VolumeStore(root));
  store->impl_ = std::make_unique<Impl>();
  Impl& impl = *store->impl_;
  impl.root = root;
  ASSIGN_OR_RETURN(impl.boot, BootId());
  ASSIGN_OR_RETURN(base::FileLock lock, impl.Lock());

  std::string db_path = root + "/volumes.db";
  ASSIGN_OR_RETURN(impl.db, Db::Open(db_path));
  Db& db = *impl.db;
  ASSIGN_OR_RETURN(Stmt tables, db.Prepare("SELECT count(*) FROM sqlite_master"));
  ASSIGN_OR_RETURN(bool have, tables.Step());
  bool fresh = !have || tables.Int(0) == 0;
  std::string data_dir;
  if (fresh) {
    data_dir = options.data_dir.empty() ? root + "/data" : options.data_dir;
    // No registry: volumes already on disk would be forgotten. Refuse.
    for (const std::string& dir : {data_dir, root + "/mnt"}) {
      ASSIGN_OR_RETURN(bool used, HasEntries(dir));
      if (used) {
        return base::WithErrno(absl::FailedPreconditionError(absl::StrCat(
            "volume store ", root, ": no registry (", db_path, ") but ", dir,
            " holds volumes; refusing to start a new registry over them")), EEXIST);
      }
    }
    ASSIGN_OR_RETURN(auto txn, Transaction::Begin(db));
    RETURN_IF_ERROR(db.Exec(kSchema));
    ASSIGN_OR_RETURN(Stmt put, db.Prepare("INSERT INTO meta(key, value) VALUES('format', ?), ('data_dir', ?)"));
    RETURN_IF_ERROR(put.Bind(1, kFormat).Bind(2, data_dir).Run());
    RETURN_IF_ERROR(txn->Commit());
  } else {
    absl::StatusOr<Stmt> get = db.Prepare("SELECT value FROM meta WHERE key = 'format'");
    std::string format;
    if (get.ok()) {
      ASSIGN_OR_RETURN(bool row, get->Step());
      if (row) format = get->Text(0);
    }
    if (format != kFormat) {
      return absl::FailedPreconditionError(absl::StrCat(
          db_path, " is not a dmthin volume registry (format \"", format, "\", want \"",
          kFormat, "\"); refusing to use it"));
    }
    ASSIGN_OR_RETURN(Stmt dd, db.Prepare("SELECT value FROM meta WHERE key = 'data_dir'"));
    ASSIGN_OR_RETURN(bool row, dd.Step());
    if (row) data_dir = dd.Text(0);
    if (!options.data_dir.empty() && options.data_dir != data_dir) {
      return absl::FailedPreconditionError(absl::StrCat(
          "volume store ", root, " keeps its directory volumes in ", data_dir, ", not ",
          options.data_dir));
    }
  }
  ASSIGN_OR_RETURN(impl.dir, NewDirectoryBackend(data_dir));
  // The thin pool is recorded at the first open that names one; later opens
  // may leave it out, and may not name another.
  std::string pool = options.pool;
  std::string thin_state_dir = options.thin_state_dir;
  {
    ASSIGN_OR_RETURN(Stmt get, db.Prepare(
        "SELECT (SELECT value FROM meta WHERE key = 'pool'), "
        "(SELECT value FROM meta WHERE key = 'thin_state_dir')"));
    ASSIGN_OR_RETURN(bool row, get.Step());
    std::string have_pool = row ? get.Text(0) : "";
    std::string have_state = row ? get.Text(1) : "";
    if (!have_pool.empty()) {
      if (!pool.empty() && (pool != have_pool ||
                            (!thin_state_dir.empty() && thin_state_dir != have_state))) {
        return absl::FailedPreconditionError(absl::StrCat(
            "volume store ", root, " takes its thin volumes from pool ", have_pool, " in ",
            have_state, ", not ", pool, " in ", thin_state_dir));
      }
      pool = have_pool;
      thin_state_dir = have_state;
    } else if (!pool.empty()) {
      if (thin_state_dir.empty()) thin_state_dir = thinpool::kDefaultStateDir;
      ASSIGN_OR_RETURN(Stmt put, db.Prepare(
          "INSERT INTO meta(key, value) VALUES('pool', ?), ('thin_state_dir', ?)"));
      RETURN_IF_ERROR(put.Bind(1, pool).Bind(2, thin_state_dir).Run());
    }
  }
  if (pool.empty()) {
    impl.thin_error = absl::FailedPreconditionError(
        "no thin pool given for thin volumes (the store was opened without one)");
  } else {
    absl::StatusOr<std::unique_ptr<VolumeBackend>> thin =
        NewThinBackend(thin_state_dir, pool, root + "/mnt");
    if (thin.ok()) {
      impl.thin = std::move(*thin);
    } else {
      impl.thin_error = base::Annotate(thin.status(), absl::StrCat("thin pool ", pool));
    }
  }
  // References from an earlier boot mean nothing now.
  ASSIGN_OR_RETURN(Stmt stale, db.Prepare("DELETE FROM mounts WHERE boot != ?"));
  RETURN_IF_ERROR(stale.Bind(1, impl.boot).Run());
  return store;
}

absl::StatusOr<VolumeInfo> VolumeStore::Create(absl::string_view name, const CreateOptions& options) {
  RETURN_IF_ERROR(ValidateVolumeName(name));
  RETURN_IF_ERROR(ValidateLabels(options.labels));
  std::lock_guard<std::mutex> guard(impl_->mu);
  Backend kind = options.backend.value_or(impl_->thin ? Backend::kThin : Backend::kDirectory);
  ASSIGN_OR_RETURN(VolumeBackend * b, impl_->BackendFor(kind));
  ASSIGN_OR_RETURN(std::string fs, b->CheckCreate(options.size_bytes, options.fs));
  ASSIGN_OR_RETURN(base::FileLock lock, impl_->Lock());
  std::string n(name);
  RETURN_IF_ERROR(impl_->CheckNoOrphan(*b, n));
  RETURN_IF_ERROR(impl_->InsertIntent(n, kind, fs, options.size_bytes, "", 0, options.labels));
  RETURN_IF_ERROR(impl_->FinishCreate(*b, n, [&] { return b->Create(n, options.size_bytes, fs); }));
  ASSIGN_OR_RETURN(Row r, impl_->GetRow(n));
  return impl_->Info(r);
}

absl::StatusOr<VolumeInfo> VolumeStore::Snapshot(absl::string_view source, absl::string_view name,
                                                 const std::map<std::string, std::string>& labels) {
  RETURN_IF_ERROR(ValidateVolumeName(name));
  RETURN_IF_ERROR(ValidateLabels(labels));
  std::lock_guard<std::mutex> guard(impl_->mu);
  ASSIGN_OR_RETURN(base::FileLock lock, impl_->Lock());
  ASSIGN_OR_RETURN(Row src, impl_->ReadyRow(source));
  ASSIGN_OR_RETURN(VolumeBackend * b, impl_->BackendFor(src.backend));
  std::string n(name);
  RETURN_IF_ERROR(impl_->CheckNoOrphan(*b, n));
  RETURN_IF_ERROR(impl_->InsertIntent(n, src.backend, src.fs, src.size, src.name,
                                      src.populated == 1 ? 1 : 0, labels));
  RETURN_IF_ERROR(impl_->FinishCreate(*b, n, [&] { return b->Snapshot(src.name, n, src.size); }));
  ASSIGN_OR_RETURN(Row r, impl_->GetRow(n));
  return impl_->Info(r);
}

absl::Status VolumeStore::Remove(absl::string_view name, bool force) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  ASSIGN_OR_RETURN(base::FileLock lock, impl_->Lock());
  ASSIGN_OR_RETURN(Row r, impl_->GetRow(name));
  ASSIGN_OR_RETURN(VolumeBackend * b, impl_->BackendFor(r.backend));
  ASSIGN_OR_RETURN(auto refs, impl_->Refs(r.name));
  uint64_t total = Impl::Total(refs);
  if (total > 0 && !force) {
    std::vector<std::string> callers;
    for (const auto& [c, n] : refs) callers.push_back(absl::StrCat(c, " x", n));
    return base::WithErrno(absl::FailedPreconditionError(absl::StrCat(
        "volume \"", name, "\" is in use (", total, " mount references: ",
        absl::StrJoin(callers, ", "), "); unmount it first or force")), EBUSY);
  }
  RETURN_IF_ERROR(impl_->SetState(r.name, "removing"));
  base::Failpoint("volume_remove_after_intent");
  RETURN_IF_ERROR(b->Unmount(r.name));
  RETURN_IF_ERROR(b->Remove(r.name));
  base::Failpoint("volume_remove_after_act");
  return impl_->DeleteRow(r.name);
}

absl::StatusOr<std::string> VolumeStore::Mount(absl::string_view name, absl::string_view caller) {
  RETURN_IF_ERROR(ValidateCaller(caller));
  std::lock_guard<std::mutex> guard(impl_->mu);
  ASSIGN_OR_RETURN(base::FileLock lock, impl_->Lock());
  ASSIGN_OR_RETURN(Row r, impl_->ReadyRow(name));
  ASSIGN_OR_RETURN(VolumeBackend * b, impl_->BackendFor(r.backend));
  // Mount whenever the data is not reachable, whatever the count says.
  ASSIGN_OR_RETURN(std::string path, b->Mount(r.name, r.fs));
  base::Failpoint("volume_mount_after_act");
  ASSIGN_OR_RETURN(Stmt s, impl_->db->Prepare(
      "INSERT INTO mounts(volume, caller, boot, refs) VALUES(?, ?, ?, 1) "
      "ON CONFLICT(volume, caller) DO UPDATE SET "
      "refs = CASE WHEN boot = excluded.boot THEN refs + 1 ELSE 1 END, boot = excluded.boot"));
  RETURN_IF_ERROR(s.Bind(1, r.name).Bind(2, caller).Bind(3, impl_->boot).Run());
  return path;
}

absl::Status VolumeStore::Unmount(absl::string_view name, absl::string_view caller) {
  RETURN_IF_ERROR(ValidateCaller(caller));
  std::lock_guard<std::mutex> guard(impl_->mu);
  ASSIGN_OR_RETURN(base::FileLock lock, impl_->Lock());
  ASSIGN_OR_RETURN(Row r, impl_->GetRow(name));
  ASSIGN_OR_RETURN(VolumeBackend * b, impl_->BackendFor(r.backend));
  ASSIGN_OR_RETURN(auto refs, impl_->Refs(r.name));
  auto it = refs.find(std::string(caller));
  if (it == refs.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume \"", name, "\" holds no mount reference for caller \"",
        absl::CHexEscape(caller), "\""));
  }
  if (Impl::Total(refs) == 1) RETURN_IF_ERROR(b->Unmount(r.name));
  base::Failpoint("volume_unmount_after_act");
  ASSIGN_OR_RETURN(auto txn, Transaction::Begin(*impl_->db));
  {
    ASSIGN_OR_RETURN(Stmt s, impl_->db->Prepare(
        "UPDATE mounts SET refs = refs - 1 WHERE volume = ? AND caller = ? AND refs > 1"));
    RETURN_IF_ERROR(s.Bind(1, r.name).Bind(2, caller).Run());
    if (impl_->db->Changes() == 0) {
      ASSIGN_OR_RETURN(Stmt d, impl_->db->Prepare("DELETE FROM mounts WHERE volume = ? AND caller = ?"));
      RETURN_IF_ERROR(d.Bind(1, r.name).Bind(2, caller).Run());
    }
  }
  return txn->Commit();
}

absl::StatusOr<std::string> VolumeStore::Path(absl::string_view name) {
  ASSIGN_OR_RETURN(VolumeInfo info, Get(name));
  return info.path;
}

absl::StatusOr<VolumeInfo> VolumeStore::Get(absl::string_view name) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  ASSIGN_OR_RETURN(Row r, impl_->GetRow(name));
  return impl_->Info(r);
}

absl::StatusOr<std::vector<VolumeInfo>> VolumeStore::List() {
  std::lock_guard<std::mutex> guard(impl_->mu);
  ASSIGN_OR_RETURN(std::vector<Row> rows, impl_->Rows());
  std::vector<VolumeInfo> out;
  for (const Row& r : rows) {
    ASSIGN_OR_RETURN(VolumeInfo info, impl_->Info(r));
    out.push_back(std::move(info));
  }
  return out;
}

absl::StatusOr<Usage> VolumeStore::GetUsage(absl::string_view name) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  ASSIGN_OR_RETURN(Row r, impl_->ReadyRow(name));
  ASSIGN_OR_RETURN(VolumeBackend * b, impl_->BackendFor(r.backend));
  return b->GetUsage(r.name, r.size);
}

absl::Status VolumeStore::Grow(absl::string_view name, uint64_t size_bytes) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  ASSIGN_OR_RETURN(base::FileLock lock, impl_->Lock());
  ASSIGN_OR_RETURN(Row r, impl_->ReadyRow(name));
  if (size_bytes <= r.size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "volume \"", name, "\" is ", r.size, " bytes; grow takes a larger size, got ", size_bytes));
  }
  ASSIGN_OR_RETURN(VolumeBackend * b, impl_->BackendFor(r.backend));
  ASSIGN_OR_RETURN(std::optional<uint64_t> pending, impl_->PendingGrow(r.name));
  if (pending) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume \"", name, "\": an earlier grow to ", *pending,
        " bytes was interrupted; run check --repair"));
  }
  {
    ASSIGN_OR_RETURN(Stmt s, impl_->db->Prepare("INSERT INTO meta(key, value) VALUES(?, ?)"));
    RETURN_IF_ERROR(s.Bind(1, Impl::GrowKey(r.name)).Bind(2, absl::StrCat(size_bytes)).Run());
  }
  base::Failpoint("volume_grow_after_intent");
  return impl_->FinishGrow(*b, r, size_bytes);
}

absl::Status VolumeStore::Populate(absl::string_view name, const std::string& source, bool skip) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  ASSIGN_OR_RETURN(base::FileLock lock, impl_->Lock());
  ASSIGN_OR_RETURN(Row r, impl_->ReadyRow(name));
  if (r.populated == 1) return absl::OkStatus();  // once only
  if (r.populated == 2) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume \"", name, "\": an earlier copy-up was interrupted; run check --repair"));
  }
  if (skip) return impl_->SetPopulated(r.name, 1);
  ASSIGN_OR_RETURN(VolumeBackend * b, impl_->BackendFor(r.backend));
  ASSIGN_OR_RETURN(bool was_mounted, b->Mounted(r.name));
  ASSIGN_OR_RETURN(std::string path, b->Mount(r.name, r.fs));
  absl::Status st = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(bool used, HasEntries(path));
    if (used) {
      // Docker copies into empty volumes only; a volume with data keeps it.
      return impl_->SetPopulated(r.name, 1);
    }
    RETURN_IF_ERROR(impl_->SetPopulated(r.name, 2));
    RETURN_IF_ERROR(base::Annotate(base::CopyTreeInto(source, path).status(),
                                   absl::StrCat("copying ", source, " into volume ", r.name)));
    return impl_->SetPopulated(r.name, 1);
  }();
  if (!was_mounted) {
    absl::Status u = b->Unmount(r.name);
    if (st.ok()) st = u;
  }
  return st;
}

absl::StatusOr<VolumeCheckReport> VolumeStore::Check(bool repair) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  ASSIGN_OR_RETURN(base::FileLock lock, impl_->Lock());
  VolumeCheckReport report;
  ASSIGN_OR_RETURN(std::vector<Row> rows, impl_->Rows());
  std::map<Backend, std::vector<std::string>> held;
  for (Backend kind : {Backend::kDirectory, Backend::kThin}) {
    absl::StatusOr<VolumeBackend*> b = impl_->BackendFor(kind);
    if (!b.ok()) continue;
    ASSIGN_OR_RETURN(held[kind], (*b)->ListNames());
  }
  std::map<Backend, std::set<std::string>> known;
  for (const Row& r : rows) {
    known[r.backend].insert(r.name);
    absl::StatusOr<VolumeBackend*> bk = impl_->BackendFor(r.backend);
    if (!bk.ok()) {
      report.findings.push_back(absl::StrCat("volume ", r.name, ": cannot check (",
                                             bk.status().message(), ")"));
      continue;
    }
    VolumeBackend* b = *bk;
    if (r.state != "ready") {
      if (repair) {
        absl::Status st = impl_->Undo(r, &report);
        if (st.ok()) continue;
        report.findings.push_back(absl::StrCat("volume ", r.name, ": repair failed: ", st.message()));
      } else {
        report.findings.push_back(absl::StrCat("volume ", r.name, ": interrupted while ", r.state));
      }
      continue;
    }
    const auto& names = held[r.backend];
    if (std::find(names.begin(), names.end(), r.name) == names.end()) {
      report.findings.push_back(absl::StrCat("volume ", r.name, ": its data is missing (",
                                             b->DataPath(r.name), ")"));
      continue;
    }
    ASSIGN_OR_RETURN(std::optional<uint64_t> grow, impl_->PendingGrow(r.name));
    if (grow) {
      if (repair) {
        absl::Status st = impl_->FinishGrow(*b, r, *grow);
        if (st.ok()) {
          report.actions.push_back(absl::StrCat("volume ", r.name, ": finished the interrupted grow to ",
                                                *grow, " bytes"));
        } else {
          report.findings.push_back(absl::StrCat("volume ", r.name, ": finishing the grow to ", *grow,
                                                 " bytes failed: ", st.message()));
        }
      } else {
        report.findings.push_back(absl::StrCat("volume ", r.name, ": grow to ", *grow,
                                               " bytes was interrupted"));
      }
    }
    if (r.populated == 2) {
      if (repair) {
        // An interrupted copy-up: empty the volume so it can be filled again.
        ASSIGN_OR_RETURN(bool was_mounted, b->Mounted(r.name));
        ASSIGN_OR_RETURN(std::string path, b->Mount(r.name, r.fs));
        base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fd) return base::ErrnoError(errno, absl::StrCat("open ", path));
        ASSIGN_OR_RETURN(auto entries, base::ListDirBeneath(fd.get(), ""));
        for (const base::DirEntry& e : entries) {
          if (e.name == "lost+found") continue;
          RETURN_IF_ERROR(base::RemoveTree(fd.get(), e.name));
        }
        if (!was_mounted) RETURN_IF_ERROR(b->Unmount(r.name));
        RETURN_IF_ERROR(impl_->SetPopulated(r.name, 0));
        report.actions.push_back(absl::StrCat("volume ", r.name, ": emptied after an interrupted copy-up"));
      } else {
        report.findings.push_back(absl::StrCat("volume ", r.name, ": copy-up was interrupted"));
      }
    }
    if (!b->NeedsMount()) continue;
    ASSIGN_OR_RETURN(auto refs, impl_->Refs(r.name));
    ASSIGN_OR_RETURN(bool mounted, b->Mounted(r.name));
    uint64_t total = Impl::Total(refs);
    if (total > 0 && !mounted) {
      if (repair) {
        ASSIGN_OR_RETURN(Stmt d, impl_->db->Prepare("DELETE FROM mounts WHERE volume = ?"));
        RETURN_IF_ERROR(d.Bind(1, r.name).Run());
        report.actions.push_back(absl::StrCat("volume ", r.name, ": dropped ", total,
                                              " references (not mounted)"));
      } else {
        report.findings.push_back(absl::StrCat("volume ", r.name, ": ", total,
                                               " references but not mounted"));
      }
    } else if (total == 0 && mounted) {
      if (repair) {
        RETURN_IF_ERROR(b->Unmount(r.name));
        report.actions.push_back(absl::StrCat("volume ", r.name, ": unmounted (no references)"));
      } else {
        report.findings.push_back(absl::StrCat("volume ", r.name, ": mounted with no references"));
      }
    }
  }
  for (const auto& [kind, names] : held) {
    for (const std::string& n : names) {
      if (known[kind].count(n) == 0) {
        // Never deleted: intent is recorded before any data is made, so
        // this is not ours to throw away.
        report.findings.push_back(absl::StrCat(BackendName(kind), " volume data \"", n,
                                               "\" has no registry record (left alone)"));
      }
    }
  }
  return report;
}

}  // namespace volume
