// graph::LayerRecords: drivers' per-layer records in SQLite.
#include "graph/records.h"

#include <sys/stat.h>

#include <cerrno>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/sqlite.h"
#include "base/status.h"

namespace graph {

using base::sqlite::Db;
using base::sqlite::Stmt;
using base::sqlite::Transaction;

const char* RecordStateName(RecordState state) {
  switch (state) {
    case RecordState::kCreating: return "creating";
    case RecordState::kReady: return "ready";
    case RecordState::kRemoving: return "removing";
  }
  return "?";
}

std::optional<RecordState> ParseRecordState(absl::string_view name) {
  if (name == "creating") return RecordState::kCreating;
  if (name == "ready") return RecordState::kReady;
  if (name == "removing") return RecordState::kRemoving;
  return std::nullopt;
}

std::string LayerRecord::Field(const std::string& key) const {
  auto it = fields.find(key);
  return it == fields.end() ? std::string() : it->second;
}

namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS driver_records(
  id TEXT PRIMARY KEY,
  state TEXT NOT NULL CHECK(state IN ('creating', 'ready', 'removing')),
  fields TEXT NOT NULL DEFAULT '');
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

absl::StatusOr<LayerRecord> ReadRecord(const Stmt& s) {
  LayerRecord r;
  r.id = s.Text(0);
  std::optional<RecordState> state = ParseRecordState(s.Text(1));
  if (!state) return absl::DataLossError(absl::StrCat("driver record of layer ", r.id, " has no valid state"));
  r.state = *state;
  ASSIGN_OR_RETURN(r.fields, DecodeFields(r.id, s.Text(2)));
  return r;
}

}  // namespace

const char* LayerRecords::Schema() { return kSchema; }

LayerRecords::LayerRecords(std::string path, std::unique_ptr<Db> db)
    : path_(std::move(path)), db_(std::move(db)) {}

LayerRecords::~LayerRecords() = default;

absl::StatusOr<std::shared_ptr<LayerRecords>> LayerRecords::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<Db> db, Db::Open(path, /*create=*/true));
  // Only a database without the table is written to (opening must work on
  // a full filesystem).
  ASSIGN_OR_RETURN(Stmt have, db->Prepare("SELECT 1 FROM sqlite_master WHERE name = 'driver_records'"));
  ASSIGN_OR_RETURN(bool present, have.Step());
  if (!present) RETURN_IF_ERROR(db->Exec(kSchema));
  return std::shared_ptr<LayerRecords>(new LayerRecords(path, std::move(db)));
}

absl::StatusOr<std::shared_ptr<LayerRecords>> LayerRecords::ForDriver(
    const std::string& root, const std::shared_ptr<LayerRecords>& given) {
  if (given != nullptr) return given;
  std::string cur;
  for (absl::string_view part : absl::StrSplit(root, '/', absl::SkipEmpty())) {
    cur = (root[0] == '/' || !cur.empty()) ? absl::StrCat(cur, "/", part) : std::string(part);
    if (::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) {
      return base::ErrnoError(errno, absl::StrCat("creating ", cur));
    }
  }
  return Open(absl::StrCat(root, "/records.db"));
}

absl::Status LayerRecords::Begin(const std::string& id, const std::map<std::string, std::string>& fields) {
  std::lock_guard<std::mutex> l(mu_);
  ASSIGN_OR_RETURN(Stmt s, db_->Prepare("INSERT INTO driver_records(id, state, fields) VALUES(?, 'creating', ?)"));
  absl::Status st = s.Bind(1, id).Bind(2, EncodeFields(fields)).Run();
  if (absl::IsAlreadyExists(st)) return absl::AlreadyExistsError(absl::StrCat("layer ", id, " already exists"));
  return st;
}

absl::Status LayerRecords::Ready(const std::string& id, const std::map<std::string, std::string>& fields) {
  std::lock_guard<std::mutex> l(mu_);
  ASSIGN_OR_RETURN(Stmt s, db_->Prepare("UPDATE driver_records SET state = 'ready', fields = ? WHERE id = ?"));
  RETURN_IF_ERROR(s.Bind(1, EncodeFields(fields)).Bind(2, id).Run());
  if (db_->Changes() == 0) return absl::NotFoundError(absl::StrCat("layer ", id, " has no record"));
  return absl::OkStatus();
}

absl::Status LayerRecords::SetState(const std::string& id, RecordState state, const char* what) {
  std::lock_guard<std::mutex> l(mu_);
  ASSIGN_OR_RETURN(Stmt s, db_->Prepare("UPDATE driver_records SET state = ? WHERE id = ?"));
  RETURN_IF_ERROR(s.Bind(1, RecordStateName(state)).Bind(2, id).Run());
  if (db_->Changes() == 0) return absl::NotFoundError(absl::StrCat(what, ": layer ", id, " has no record"));
  return absl::OkStatus();
}

absl::Status LayerRecords::Removing(const std::string& id) {
  return SetState(id, RecordState::kRemoving, "removing");
}

absl::Status LayerRecords::Restore(const std::string& id) {
  return SetState(id, RecordState::kReady, "restoring");
}

absl::Status LayerRecords::Drop(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  ASSIGN_OR_RETURN(Stmt s, db_->Prepare("DELETE FROM driver_records WHERE id = ?"));
  return s.Bind(1, id).Run();
}

absl::StatusOr<std::optional<LayerRecord>> LayerRecords::Get(const std::string& id) const {
  std::lock_guard<std::mutex> l(mu_);
  ASSIGN_OR_RETURN(Stmt s, db_->Prepare("SELECT id, state, fields FROM driver_records WHERE id = ?"));
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
  std::lock_guard<std::mutex> l(mu_);
  ASSIGN_OR_RETURN(Stmt s, db_->Prepare("SELECT id, state, fields FROM driver_records ORDER BY id"));
  std::vector<LayerRecord> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(LayerRecord r, ReadRecord(s));
    out.push_back(std::move(r));
  }
  return out;
}

absl::Status LayerRecords::Migrate(const std::vector<LayerRecord>& records) {
  if (records.empty()) return absl::OkStatus();
  std::lock_guard<std::mutex> l(mu_);
  ASSIGN_OR_RETURN(auto txn, Transaction::Begin(*db_));
  for (const LayerRecord& r : records) {
    ASSIGN_OR_RETURN(Stmt s, db_->Prepare(
                                 "INSERT OR IGNORE INTO driver_records(id, state, fields) VALUES(?, ?, ?)"));
    RETURN_IF_ERROR(s.Bind(1, r.id).Bind(2, RecordStateName(r.state)).Bind(3, EncodeFields(r.fields)).Run());
  }
  return txn->Commit();
}

}  // namespace graph
