// graph::LayerRecords: drivers' per-layer records in SQLite.
#include "graph/records.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "base/fsutil.h"
#include "base/sqlite.h"
#include "base/sqlite_shared.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace graph {

using base::sqlite::Db;
using base::sqlite::SharedDb;
using base::sqlite::Writer;
using base::sqlite::Stmt;

std::string LayerRecord::Field(const std::string& key) const {
  auto it = fields.find(key);
  return it == fields.end() ? std::string() : it->second;
}

std::string DriverEntry::Field(const std::string& key) const {
  auto it = fields.find(key);
  return it == fields.end() ? std::string() : it->second;
}

namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS driver_records(
  id TEXT PRIMARY KEY,
  state TEXT NOT NULL CHECK(state IN ('creating', 'ready', 'removing')),
  fields TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS driver_entries(
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  fields TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(kind, name));
)sql";

// "key=value" lines, both C-escaped (a value may hold '\n').
std::string EncodeFields(const std::map<std::string, std::string>& fields) {
  std::string out;
  for (const auto& [k, v] : fields) absl::StrAppend(&out, absl::CEscape(k), "=", absl::CEscape(v), "\n");
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> DecodeFields(const std::string& id, absl::string_view text) {
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    size_t eq = line.find('=');
    std::string k, v;
    if (eq == absl::string_view::npos || !absl::CUnescape(line.substr(0, eq), &k) ||
        !absl::CUnescape(line.substr(eq + 1), &v)) {
      return absl::DataLossError(absl::StrCat("driver record of layer ", id, " is malformed"));
    }
    out[k] = v;
  }
  return out;
}

absl::StatusOr<DriverEntry> ReadEntry(const Stmt& s) {
  DriverEntry e;
  e.kind = s.Text(0);
  e.name = s.Text(1);
  ASSIGN_OR_RETURN(e.fields, DecodeFields(absl::StrCat(e.kind, " entry ", e.name), s.Text(2)));
  return e;
}

absl::Status InsertEntry(Db& db, const DriverEntry& e, const char* verb) {
  ASSIGN_OR_RETURN(Stmt s, db.Prepare(absl::StrCat(verb, " INTO driver_entries(kind, name, fields) VALUES(?, ?, ?)")));
  return s.Bind(1, e.kind).Bind(2, e.name).Bind(3, EncodeFields(e.fields)).Run();
}

absl::Status MakeRoot(const std::string& root) {
  std::string cur;
  for (absl::string_view part : absl::StrSplit(root, '/', absl::SkipEmpty())) {
    cur = (root[0] == '/' || !cur.empty()) ? absl::StrCat(cur, "/", part) : std::string(part);
    if (::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) {
      return base::ErrnoError(errno, absl::StrCat("creating ", cur));
    }
  }
  return absl::OkStatus();
}

const char* HomeName(bool own) { return own ? "own" : "store"; }

absl::StatusOr<LayerRecord> ReadRecord(const Stmt& s) {
  LayerRecord r;
  r.id = s.Text(0);
  ASSIGN_OR_RETURN(r.state, RecordStateFromRegistry(s.Text(1), "driver record of layer", r.id));
  ASSIGN_OR_RETURN(r.fields, DecodeFields(r.id, s.Text(2)));
  return r;
}

}  // namespace

const char* LayerRecords::Schema() { return kSchema; }

std::vector<std::string> LayerRecords::SchemaTables() { return {"driver_records", "driver_entries"}; }

absl::Status LayerRecords::ClaimHome(const std::string& root, bool own, absl::string_view driver) {
  const std::string path = absl::StrCat(root, "/records-home");
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd) {
    char buf[64];
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) return base::ErrnoError(errno, absl::StrCat("reading ", path));
    std::string have(absl::StripAsciiWhitespace(absl::string_view(buf, static_cast<size_t>(n))));
    if (have == HomeName(own)) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        driver, ": the layer records of ", root, " are ",
        have == "store" ? "in the layer store that made it (open the store, not the driver alone)"
                        : "in its own records.db (it was made without a layer store; open the driver alone)",
        "; opened the other way its layers would look like orphans"));
  }
  if (errno != ENOENT) return base::ErrnoError(errno, absl::StrCat("opening ", path));
  RETURN_IF_ERROR(MakeRoot(root));
  return base::WriteFileAtomic(path, absl::StrCat(HomeName(own), "\n"), /*durable=*/true);
}

LayerRecords::LayerRecords(std::string path, std::shared_ptr<SharedDb> conn, bool staged)
    : path_(std::move(path)), conn_(std::move(conn)), staged_(staged) {}

LayerRecords::~LayerRecords() = default;

absl::StatusOr<std::shared_ptr<LayerRecords>> LayerRecords::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<Db> db, Db::Open(path, /*create=*/true));
  // Only a database without a table is written to (opening must work on
  // a full filesystem).
  {
    ASSIGN_OR_RETURN(Stmt have, db->Prepare(
                                    "SELECT count(*) FROM sqlite_master WHERE name IN "
                                    "('driver_records', 'driver_entries')"));
    ASSIGN_OR_RETURN(bool row, have.Step());
    if (!row || have.Int(0) != 2) RETURN_IF_ERROR(db->Exec(kSchema));
  }
  return std::shared_ptr<LayerRecords>(
      new LayerRecords(path, std::make_shared<SharedDb>(std::move(db)), /*staged=*/false));
}

std::shared_ptr<LayerRecords> LayerRecords::InStore(const std::string& path, std::shared_ptr<SharedDb> conn) {
  return std::shared_ptr<LayerRecords>(new LayerRecords(path, std::move(conn), /*staged=*/true));
}

absl::StatusOr<std::shared_ptr<LayerRecords>> LayerRecords::ForDriver(
    const std::string& root, const std::shared_ptr<LayerRecords>& given) {
  if (given != nullptr) return given;
  RETURN_IF_ERROR(MakeRoot(root));
  return Open(absl::StrCat(root, "/records.db"));
}

absl::Status LayerRecords::Reentered(const char* what) const {
  if (!conn_->HeldByThisThread()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(
      "driver records: ", what, " called under the registry lock (a driver call made while the "
      "store held it)"));
}

std::optional<LayerRecord> LayerRecords::Staged(const std::string& id) const {
  std::lock_guard<std::mutex> l(staged_mu_);
  auto it = staged_ready_.find(id);
  if (it == staged_ready_.end()) return std::nullopt;
  return it->second;
}

absl::Status LayerRecords::Begin(const std::string& id, const std::map<std::string, std::string>& fields,
                                 bool relaxed) {
  RETURN_IF_ERROR(Reentered("Begin"));
  if (Staged(id)) return absl::AlreadyExistsError(absl::StrCat("layer ", id, " already exists"));
  ASSIGN_OR_RETURN(Writer w, conn_->Write(/*relaxed=*/staged_ || relaxed));
  ASSIGN_OR_RETURN(Stmt s, w.db().Prepare(
                               "INSERT INTO driver_records(id, state, fields) VALUES(?, 'creating', ?)"));
  absl::Status st = s.Bind(1, id).Bind(2, EncodeFields(fields)).Run();
  if (absl::IsAlreadyExists(st)) return absl::AlreadyExistsError(absl::StrCat("layer ", id, " already exists"));
  RETURN_IF_ERROR(st);
  return w.Commit();
}

absl::Status LayerRecords::Ready(const std::string& id, const std::map<std::string, std::string>& fields,
                                 bool relaxed) {
  RETURN_IF_ERROR(Reentered("Ready"));
  if (staged_) {
    // Held until the store's transaction that makes the layer ready.
    ASSIGN_OR_RETURN(std::optional<LayerRecord> now, Get(id));
    if (!now) return absl::NotFoundError(absl::StrCat("layer ", id, " has no record"));
    LayerRecord r{id, RecordState::kReady, fields};
    std::lock_guard<std::mutex> l(staged_mu_);
    staged_ready_[id] = std::move(r);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(Writer w, conn_->Write(relaxed));
  ASSIGN_OR_RETURN(Stmt s, w.db().Prepare("UPDATE driver_records SET state = 'ready', fields = ? WHERE id = ?"));
  RETURN_IF_ERROR(s.Bind(1, EncodeFields(fields)).Bind(2, id).Run());
  if (w.db().Changes() == 0) return absl::NotFoundError(absl::StrCat("layer ", id, " has no record"));
  return w.Commit();
}

absl::Status LayerRecords::WriteStaged(Writer& w, const std::vector<std::string>& ids) {
  for (const std::string& id : ids) {
    std::optional<LayerRecord> r;
    {
      std::lock_guard<std::mutex> l(staged_mu_);
      auto it = staged_ready_.find(id);
      if (it == staged_ready_.end()) continue;
      r = std::move(it->second);
      // Gone from memory before the commit: should it fail, the store undoes
      // the layer, and Remove finds the intent in the database.
      staged_ready_.erase(it);
    }
    ASSIGN_OR_RETURN(Stmt s, w.db().Prepare(
                                 "UPDATE driver_records SET state = 'ready', fields = ? WHERE id = ?"));
    RETURN_IF_ERROR(s.Bind(1, EncodeFields(r->fields)).Bind(2, id).Run());
  }
  return absl::OkStatus();
}

absl::Status LayerRecords::SetState(const std::string& id, RecordState state, bool relaxed, const char* what) {
  RETURN_IF_ERROR(Reentered(what));
  {
    std::lock_guard<std::mutex> l(staged_mu_);
    staged_ready_.erase(id);  // an unfinished create taken apart: its intent is in the database
  }
  ASSIGN_OR_RETURN(Writer w, conn_->Write(/*relaxed=*/relaxed || (staged_ && state == RecordState::kRemoving)));
  ASSIGN_OR_RETURN(Stmt s, w.db().Prepare("UPDATE driver_records SET state = ? WHERE id = ?"));
  RETURN_IF_ERROR(s.Bind(1, RecordStateName(state)).Bind(2, id).Run());
  if (w.db().Changes() == 0) return absl::NotFoundError(absl::StrCat(what, ": layer ", id, " has no record"));
  return w.Commit();
}

absl::Status LayerRecords::Removing(const std::string& id, bool relaxed) {
  return SetState(id, RecordState::kRemoving, relaxed, "removing");
}

absl::Status LayerRecords::Restore(const std::string& id) {
  return SetState(id, RecordState::kReady, /*relaxed=*/false, "restoring");
}

absl::Status LayerRecords::Drop(const std::string& id, bool relaxed) {
  RETURN_IF_ERROR(Reentered("Drop"));
  {
    std::lock_guard<std::mutex> l(staged_mu_);
    staged_ready_.erase(id);
  }
  ASSIGN_OR_RETURN(Writer w, conn_->Write(/*relaxed=*/staged_ || relaxed));
  ASSIGN_OR_RETURN(Stmt s, w.db().Prepare("DELETE FROM driver_records WHERE id = ?"));
  RETURN_IF_ERROR(s.Bind(1, id).Run());
  return w.Commit();
}

absl::StatusOr<std::optional<LayerRecord>> LayerRecords::Get(const std::string& id) const {
  RETURN_IF_ERROR(Reentered("Get"));
  if (std::optional<LayerRecord> staged = Staged(id)) return staged;
  auto l = conn_->Lock();
  ASSIGN_OR_RETURN(Stmt s, conn_->db().Prepare("SELECT id, state, fields FROM driver_records WHERE id = ?"));
  ASSIGN_OR_RETURN(bool row, s.Bind(1, id).Step());
  if (!row) return std::optional<LayerRecord>();
  ASSIGN_OR_RETURN(LayerRecord r, ReadRecord(s));
  return std::optional<LayerRecord>(std::move(r));
}

absl::StatusOr<LayerRecord> LayerRecords::GetReady(const std::string& id) const {
  ASSIGN_OR_RETURN(std::optional<LayerRecord> r, Get(id));
  if (!r || r->state != RecordState::kReady) {
    return absl::NotFoundError(absl::StrCat("layer ", id, " does not exist"));
  }
  return std::move(*r);
}

absl::StatusOr<std::vector<LayerRecord>> LayerRecords::List() const {
  RETURN_IF_ERROR(Reentered("List"));
  std::vector<LayerRecord> out;
  {
    auto l = conn_->Lock();
    ASSIGN_OR_RETURN(Stmt s, conn_->db().Prepare("SELECT id, state, fields FROM driver_records ORDER BY id"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      ASSIGN_OR_RETURN(LayerRecord r, ReadRecord(s));
      out.push_back(std::move(r));
    }
  }
  std::lock_guard<std::mutex> l(staged_mu_);
  for (LayerRecord& r : out) {
    auto it = staged_ready_.find(r.id);
    if (it != staged_ready_.end()) r = it->second;
  }
  return out;
}

absl::StatusOr<std::set<std::string>> LayerRecords::Ids() const {
  RETURN_IF_ERROR(Reentered("Ids"));
  std::set<std::string> out;
  {
    auto l = conn_->Lock();
    ASSIGN_OR_RETURN(Stmt s, conn_->db().Prepare("SELECT id FROM driver_records"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      out.insert(s.Text(0));
    }
  }
  // A staged Ready has its record's row already (Begin wrote it).
  return out;
}

absl::StatusOr<std::vector<std::string>> LayerRecords::ReadyOrUnowned(const std::vector<std::string>& names) const {
  ASSIGN_OR_RETURN(std::vector<LayerRecord> all, List());
  std::map<std::string, RecordState> state;
  for (const LayerRecord& r : all) state[r.id] = r.state;
  std::vector<std::string> out;
  for (const std::string& n : names) {
    auto it = state.find(n);
    if (it == state.end() || it->second == RecordState::kReady) out.push_back(n);
  }
  return out;
}

absl::Status LayerRecords::Migrate(const std::vector<LayerRecord>& records,
                                   const std::vector<DriverEntry>& entries) {
  if (records.empty() && entries.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(Reentered("Migrate"));
  ASSIGN_OR_RETURN(Writer w, conn_->Write());
  for (const LayerRecord& r : records) {
    ASSIGN_OR_RETURN(Stmt s, w.db().Prepare(
                                 "INSERT OR IGNORE INTO driver_records(id, state, fields) VALUES(?, ?, ?)"));
    RETURN_IF_ERROR(s.Bind(1, r.id).Bind(2, RecordStateName(r.state)).Bind(3, EncodeFields(r.fields)).Run());
  }
  for (const DriverEntry& e : entries) RETURN_IF_ERROR(InsertEntry(w.db(), e, "INSERT OR IGNORE"));
  return w.Commit();
}

absl::Status LayerRecords::PutEntry(const DriverEntry& entry, bool relaxed) {
  RETURN_IF_ERROR(Reentered("PutEntry"));
  ASSIGN_OR_RETURN(Writer w, conn_->Write(relaxed));
  RETURN_IF_ERROR(InsertEntry(w.db(), entry, "INSERT OR REPLACE"));
  return w.Commit();
}

absl::Status LayerRecords::DeleteEntry(const std::string& kind, const std::string& name) {
  RETURN_IF_ERROR(Reentered("DeleteEntry"));
  ASSIGN_OR_RETURN(Writer w, conn_->Write(/*relaxed=*/true));
  ASSIGN_OR_RETURN(Stmt s, w.db().Prepare("DELETE FROM driver_entries WHERE kind = ? AND name = ?"));
  RETURN_IF_ERROR(s.Bind(1, kind).Bind(2, name).Run());
  return w.Commit();
}

absl::StatusOr<std::optional<DriverEntry>> LayerRecords::GetEntry(const std::string& kind,
                                                                  const std::string& name) const {
  RETURN_IF_ERROR(Reentered("GetEntry"));
  auto l = conn_->Lock();
  ASSIGN_OR_RETURN(Stmt s, conn_->db().Prepare(
                               "SELECT kind, name, fields FROM driver_entries WHERE kind = ? AND name = ?"));
  ASSIGN_OR_RETURN(bool row, s.Bind(1, kind).Bind(2, name).Step());
  if (!row) return std::optional<DriverEntry>();
  ASSIGN_OR_RETURN(DriverEntry e, ReadEntry(s));
  return std::optional<DriverEntry>(std::move(e));
}

absl::StatusOr<std::vector<DriverEntry>> LayerRecords::Entries(const std::string& kind) const {
  RETURN_IF_ERROR(Reentered("Entries"));
  std::vector<DriverEntry> out;
  auto l = conn_->Lock();
  ASSIGN_OR_RETURN(Stmt s, conn_->db().Prepare(
                               "SELECT kind, name, fields FROM driver_entries WHERE kind = ? ORDER BY name"));
  s.Bind(1, kind);
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(DriverEntry e, ReadEntry(s));
    out.push_back(std::move(e));
  }
  return out;
}

absl::Status LayerRecords::DropWithEntry(const std::string& id, const DriverEntry& entry) {
  RETURN_IF_ERROR(Reentered("DropWithEntry"));
  {
    std::lock_guard<std::mutex> l(staged_mu_);
    staged_ready_.erase(id);
  }
  ASSIGN_OR_RETURN(Writer w, conn_->Write(/*relaxed=*/staged_));
  ASSIGN_OR_RETURN(Stmt s, w.db().Prepare("DELETE FROM driver_records WHERE id = ?"));
  RETURN_IF_ERROR(s.Bind(1, id).Run());
  RETURN_IF_ERROR(InsertEntry(w.db(), entry, "INSERT OR REPLACE"));
  return w.Commit();
}

}  // namespace graph
