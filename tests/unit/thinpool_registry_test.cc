// Registry and state dir: schema, the intent/commit/abort protocol, 24-bit id
// allocation (reuse, quarantine), persistence and several processes at once.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/sqlite.h"
#include "gtest/gtest.h"
#include "tests/support/sqlite_column.h"
#include "thinpool/registry.h"
#include "thinpool/state_dir.h"

namespace thinpool {
namespace {

namespace fs = std::filesystem;
using testsupport::SqlColumn;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    base_ = absl::StrCat(fs::temp_directory_path().string(),
                         "/thinpool_registry_test.", getpid(), ".", counter++);
    fs::create_directories(base_);
    fs::permissions(base_, fs::perms::owner_all, fs::perm_options::replace);
    dir_ = base_ + "/state";
  }
  void TearDown() override { fs::remove_all(base_); }

  std::unique_ptr<StateDir> OpenState() {
    auto state = StateDir::Open(dir_);
    EXPECT_TRUE(state.ok()) << state.status();
    return state.ok() ? std::move(*state) : nullptr;
  }

  PoolRecord Pool(const std::string& name) {
    PoolRecord p;
    p.name = name;
    p.data_path = "/x/data";
    p.metadata_path = "/x/metadata";
    p.data_bytes = 1 << 30;
    p.metadata_bytes = 8 << 20;
    p.features = {"skip_block_zeroing", "error_if_no_space"};
    return p;
  }

  // Creates a ready thin device through the protocol; returns its id.
  uint32_t Create(Registry& r, const std::string& pool, const std::string& name,
                  std::optional<uint32_t> origin = std::nullopt) {
    auto op = r.BeginCreate(pool, name, 1 << 20, origin);
    EXPECT_TRUE(op.ok()) << op.status();
    if (!op.ok()) return 0;
    EXPECT_TRUE(r.CommitOp(*op).ok());
    return op->dev_id;
  }

  std::string base_;
  std::string dir_;
};

TEST_F(RegistryTest, StateDirCreatedPrivate) {
  auto state = OpenState();
  ASSERT_NE(state, nullptr);
  struct stat st;
  ASSERT_EQ(stat(dir_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_TRUE(fs::exists(dir_ + "/.registry.db"));
  EXPECT_EQ(state->PoolDir("p"), dir_ + "/p");
  // Reopening an existing dir is fine; trailing slashes are dropped.
  auto again = StateDir::Open(dir_ + "/");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->path(), dir_);
}

TEST_F(RegistryTest, StateDirRefusesUnsafeDirs) {
  fs::create_directories(base_ + "/real");
  fs::permissions(base_ + "/real", fs::perms::owner_all, fs::perm_options::replace);
  fs::create_directory_symlink(base_ + "/real", base_ + "/link");
  auto link = StateDir::Open(base_ + "/link");
  EXPECT_EQ(link.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(link.status().message().find("symlink"), absl::string_view::npos);

  fs::create_directories(base_ + "/open");
  fs::permissions(base_ + "/open", fs::perms::all, fs::perm_options::replace);
  auto open = StateDir::Open(base_ + "/open");
  EXPECT_EQ(open.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(open.status().message().find("writable"), absl::string_view::npos);

  fs::create_directories(base_ + "/group");
  fs::permissions(base_ + "/group", fs::perms::owner_all | fs::perms::group_write,
                  fs::perm_options::replace);
  EXPECT_FALSE(StateDir::Open(base_ + "/group").ok());

  { std::ofstream(base_ + "/file") << "x"; }
  auto file = StateDir::Open(base_ + "/file");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kFailedPrecondition);

  EXPECT_EQ(StateDir::Open("relative/dir").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(StateDir::Open(base_ + "/missing/parent/dir").ok());
}

TEST_F(RegistryTest, NameValidation) {
  EXPECT_TRUE(ValidatePoolName("pool0").ok());
  EXPECT_TRUE(ValidatePoolName("my_pool.v2").ok());
  EXPECT_FALSE(ValidatePoolName("").ok());
  EXPECT_FALSE(ValidatePoolName("a-b").ok());  // '-' separates pool and thin
  EXPECT_FALSE(ValidatePoolName(".hidden").ok());
  EXPECT_FALSE(ValidatePoolName("a/b").ok());
  EXPECT_FALSE(ValidatePoolName(std::string(33, 'a')).ok());
  EXPECT_TRUE(ValidatePoolName(std::string(32, 'a')).ok());
  EXPECT_TRUE(ValidateThinName("layer-1+init").ok());
  EXPECT_FALSE(ValidateThinName("-x").ok());
  EXPECT_FALSE(ValidateThinName("a b").ok());
  EXPECT_FALSE(ValidateThinName("a\nb").ok());
  EXPECT_FALSE(ValidateThinName(std::string(81, 'a')).ok());
  EXPECT_FALSE(ValidateThinName("..").ok());
}

TEST_F(RegistryTest, PoolsAddGetListRemove) {
  auto state = OpenState();
  Registry& r = state->registry();
  ASSERT_TRUE(r.AddPool(Pool("b")).ok());
  ASSERT_TRUE(r.AddPool(Pool("a")).ok());
  EXPECT_EQ(r.AddPool(Pool("a")).code(), absl::StatusCode::kAlreadyExists);
  auto a = r.GetPool("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->data_bytes, 1u << 30);
  EXPECT_EQ(a->features,
            (std::vector<std::string>{"skip_block_zeroing", "error_if_no_space"}));
  EXPECT_EQ(a->block_sectors, 128u);
  EXPECT_EQ(r.GetPool("zz").status().code(), absl::StatusCode::kNotFound);
  auto all = r.ListPools();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "a");
  ASSERT_TRUE(r.SetPoolSizes("a", 2u << 30, 16 << 20).ok());
  EXPECT_EQ(r.GetPool("a")->data_bytes, 2u << 30);
  EXPECT_EQ(r.SetPoolSizes("zz", 1, 1).code(), absl::StatusCode::kNotFound);

  Create(r, "a", "t1");
  ASSERT_TRUE(r.RemovePool("a").ok());
  EXPECT_EQ(r.GetPool("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(r.ListThins("a")->empty());  // cascaded
}

TEST_F(RegistryTest, CreateProtocolRecordsIntentThenCommits) {
  auto state = OpenState();
  Registry& r = state->registry();
  ASSERT_TRUE(r.AddPool(Pool("p")).ok());
  auto op = r.BeginCreate("p", "t1", 4096, std::nullopt);
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(op->kind, OpKind::kCreateThin);
  EXPECT_EQ(op->dev_id, 1u);
  EXPECT_EQ(op->old_txid, 0u);
  EXPECT_EQ(op->new_txid, 1u);
  EXPECT_EQ(r.GetThin("p", "t1")->state, ThinState::kCreating);
  auto pending = r.GetPending("p");
  ASSERT_TRUE(pending.ok() && pending->has_value());
  EXPECT_EQ((*pending)->dev_id, 1u);

  // One operation at a time per pool.
  auto second = r.BeginCreate("p", "t2", 4096, std::nullopt);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.RemovePool("p").code(), absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(r.CommitOp(*op).ok());
  EXPECT_EQ(r.GetThin("p", "t1")->state, ThinState::kReady);
  EXPECT_EQ(r.GetPool("p")->transaction_id, 1u);
  EXPECT_FALSE(r.GetPending("p")->has_value());
  // Committing twice is refused: the op is gone.
  EXPECT_EQ(r.CommitOp(*op).code(), absl::StatusCode::kFailedPrecondition);

  // A snapshot records its origin.
  auto snap = r.BeginCreate("p", "s1", 4096, 1u);
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->kind, OpKind::kCreateSnap);
  EXPECT_EQ(snap->origin_id, std::optional<uint32_t>(1));
  ASSERT_TRUE(r.CommitOp(*snap).ok());
  EXPECT_EQ(r.GetThin("p", "s1")->parent_id, std::optional<uint32_t>(1));
  EXPECT_EQ(r.GetThinById("p", 2)->name, "s1");

  EXPECT_EQ(r.BeginCreate("p", "t1", 1, std::nullopt).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.BeginCreate("nope", "t1", 1, std::nullopt).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RegistryTest, AbortRollsBack) {
  auto state = OpenState();
  Registry& r = state->registry();
  ASSERT_TRUE(r.AddPool(Pool("p")).ok());
  auto op = r.BeginCreate("p", "t1", 4096, std::nullopt);
  ASSERT_TRUE(op.ok());
  ASSERT_TRUE(r.AbortOp(*op, std::nullopt).ok());
  EXPECT_EQ(r.GetThin("p", "t1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r.GetPool("p")->transaction_id, 0u);
  // The id was freed: the next create gets it again.
  EXPECT_EQ(Create(r, "p", "t1"), 1u);

  auto del = r.BeginDelete("p", "t1");
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(r.GetThin("p", "t1")->state, ThinState::kRemoving);
  EXPECT_EQ(r.BeginDelete("p", "t1").status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(r.AbortOp(*del, std::nullopt).ok());
  EXPECT_EQ(r.GetThin("p", "t1")->state, ThinState::kReady);

  del = r.BeginDelete("p", "t1");
  ASSERT_TRUE(del.ok());
  ASSERT_TRUE(r.CommitOp(*del).ok());
  EXPECT_EQ(r.GetThin("p", "t1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r.GetPool("p")->transaction_id, 2u);
  EXPECT_EQ(r.BeginDelete("p", "t1").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistryTest, IdsReusedAfterDeleteQuarantinedNeverReused) {
  auto state = OpenState();
  Registry& r = state->registry();
  ASSERT_TRUE(r.AddPool(Pool("p")).ok());
  ASSERT_TRUE(r.AddPool(Pool("q")).ok());
  for (int i = 1; i <= 5; ++i) {
    EXPECT_EQ(Create(r, "p", absl::StrCat("t", i)), uint32_t(i));
  }
  // Ids are per pool.
  EXPECT_EQ(Create(r, "q", "t1"), 1u);

  auto del = r.BeginDelete("p", "t2");
  ASSERT_TRUE(del.ok());
  ASSERT_TRUE(r.CommitOp(*del).ok());
  EXPECT_EQ(Create(r, "p", "again"), 2u);  // freed id reused

  // A crash left id 6 in an unknown state: quarantined, never handed out.
  auto op = r.BeginCreate("p", "t6", 1, std::nullopt);
  ASSERT_TRUE(op.ok());
  EXPECT_EQ(op->dev_id, 6u);
  ASSERT_TRUE(r.AbortOp(*op, "delete after crash failed: EIO").ok());
  auto q = r.ListQuarantined("p");
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->size(), 1u);
  EXPECT_EQ((*q)[0].dev_id, 6u);
  EXPECT_NE((*q)[0].reason.find("EIO"), std::string::npos);
  EXPECT_EQ(Create(r, "p", "t7"), 7u);

  // A deleting device that failed goes to quarantine too, and its row goes.
  del = r.BeginDelete("p", "t3");
  ASSERT_TRUE(del.ok());
  ASSERT_TRUE(r.AbortOp(*del, "delete message failed").ok());
  EXPECT_FALSE(r.GetThin("p", "t3").ok());
  EXPECT_EQ(Create(r, "p", "t8"), 8u);  // 3 and 6 skipped

  ASSERT_TRUE(r.Quarantine("p", 9, "found in kernel, not in registry").ok());
  EXPECT_EQ(Create(r, "p", "t10"), 10u);
  EXPECT_EQ(r.Quarantine("p", kMaxDeviceId + 1, "x").code(),
            absl::StatusCode::kInvalidArgument);

  // A freed id quarantined by hand is taken off the free list.
  del = r.BeginDelete("p", "t5");
  ASSERT_TRUE(del.ok());
  ASSERT_TRUE(r.CommitOp(*del).ok());
  ASSERT_TRUE(r.Quarantine("p", 5, "seen in the kernel after a crash").ok());
  EXPECT_EQ(Create(r, "p", "t11"), 11u);
  EXPECT_FALSE(r.Quarantine("nope", 1, "x").ok());

  std::set<uint32_t> ids;
  auto thins = r.ListThins("p");
  ASSERT_TRUE(thins.ok());
  for (const auto& t : *thins) EXPECT_TRUE(ids.insert(t.dev_id).second);
  EXPECT_EQ(ids.count(3), 0u);
  EXPECT_EQ(ids.count(6), 0u);
  EXPECT_EQ(ids.count(5), 0u);
}

TEST_F(RegistryTest, PendingSurvivesReopen) {
  PendingOp op;
  {
    auto state = OpenState();
    ASSERT_TRUE(state->registry().AddPool(Pool("p")).ok());
    auto begun = state->registry().BeginCreate("p", "t1", 42, std::nullopt);
    ASSERT_TRUE(begun.ok());
    op = *begun;
  }  // "crash": the registry is closed with the op pending
  auto state = OpenState();
  auto pending = state->registry().GetPending("p");
  ASSERT_TRUE(pending.ok() && pending->has_value());
  EXPECT_EQ((*pending)->dev_id, op.dev_id);
  EXPECT_EQ((*pending)->new_txid, op.new_txid);
  EXPECT_EQ(state->registry().GetThin("p", "t1")->size_bytes, 42u);
  ASSERT_TRUE(state->registry().CommitOp(**pending).ok());
}

TEST_F(RegistryTest, ManyDevicesAllocateQuickly) {
  auto state = OpenState();
  Registry& r = state->registry();
  ASSERT_TRUE(r.AddPool(Pool("p")).ok());
  for (int i = 0; i < 300; ++i) Create(r, "p", absl::StrCat("t", i));
  EXPECT_EQ(r.ListThins("p")->size(), 300u);
  EXPECT_EQ(r.ListThins("p")->back().dev_id, 300u);
}

// Several processes share one state dir: with the pool lock held around each
// operation, every create succeeds and no id is handed out twice.
TEST_F(RegistryTest, ConcurrentProcessesNeverShareAnId) {
  {
    auto state = OpenState();
    ASSERT_TRUE(state->registry().AddPool(Pool("p")).ok());
  }
  constexpr int kProcs = 4;
  constexpr int kEach = 25;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto state = StateDir::Open(dir_);
      if (!state.ok()) _exit(2);
      for (int i = 0; i < kEach; ++i) {
        auto lock = (*state)->LockPool("p");
        if (!lock.ok()) _exit(3);
        auto op = (*state)->registry().BeginCreate(
            "p", absl::StrCat("p", p, "-", i), 1, std::nullopt);
        if (!op.ok()) _exit(4);
        if (!(*state)->registry().CommitOp(*op).ok()) _exit(5);
      }
      _exit(0);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  auto state = OpenState();
  auto thins = state->registry().ListThins("p");
  ASSERT_TRUE(thins.ok());
  ASSERT_EQ(thins->size(), size_t(kProcs * kEach));
  std::set<uint32_t> ids;
  for (const auto& t : *thins) ids.insert(t.dev_id);
  EXPECT_EQ(ids.size(), size_t(kProcs * kEach));
  EXPECT_EQ(*ids.rbegin(), uint32_t(kProcs * kEach));
  EXPECT_EQ(state->registry().GetPool("p")->transaction_id,
            uint64_t(kProcs * kEach));
}

// Without the lock, the registry itself still refuses a second pending op.
TEST_F(RegistryTest, SecondConnectionSeesPendingOp) {
  auto s1 = OpenState();
  auto s2 = OpenState();
  ASSERT_TRUE(s1->registry().AddPool(Pool("p")).ok());
  auto op = s1->registry().BeginCreate("p", "a", 1, std::nullopt);
  ASSERT_TRUE(op.ok());
  EXPECT_EQ(s2->registry().BeginCreate("p", "b", 1, std::nullopt).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(s1->registry().CommitOp(*op).ok());
  EXPECT_TRUE(s2->registry().BeginCreate("p", "b", 1, std::nullopt).ok());
}

TEST_F(RegistryTest, NotADatabaseIsAClearError) {
  fs::create_directories(dir_);
  fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::replace);
  { std::ofstream(dir_ + "/.registry.db") << std::string(8192, 'z'); }
  auto state = StateDir::Open(dir_);
  ASSERT_FALSE(state.ok());
  EXPECT_NE(state.status().message().find("registry"), absl::string_view::npos)
      << state.status();
}

// What a registry of schema version 1 held on disk (the build before the
// thin states were base::RecordState's): a thin being deleted is
// 'deleting'.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE pools(
  name TEXT PRIMARY KEY,
  backing TEXT NOT NULL CHECK(backing IN ('files','devices')),
  data_path TEXT NOT NULL, metadata_path TEXT NOT NULL,
  data_bytes INTEGER NOT NULL, metadata_bytes INTEGER NOT NULL,
  block_sectors INTEGER NOT NULL, low_water_blocks INTEGER NOT NULL,
  features TEXT NOT NULL, transaction_id INTEGER NOT NULL,
  next_id INTEGER NOT NULL DEFAULT 1, created_unix INTEGER NOT NULL);
CREATE TABLE free_ids(
  pool TEXT NOT NULL REFERENCES pools(name) ON DELETE CASCADE,
  dev_id INTEGER NOT NULL, PRIMARY KEY(pool, dev_id));
CREATE TABLE thins(
  pool TEXT NOT NULL REFERENCES pools(name) ON DELETE CASCADE,
  dev_id INTEGER NOT NULL CHECK(dev_id BETWEEN 0 AND 16777215),
  name TEXT NOT NULL, size_bytes INTEGER NOT NULL, parent_id INTEGER,
  state TEXT NOT NULL CHECK(state IN ('creating','ready','deleting')),
  created_unix INTEGER NOT NULL,
  PRIMARY KEY(pool, dev_id), UNIQUE(pool, name));
CREATE INDEX thins_by_parent ON thins(pool, parent_id);
CREATE TABLE quarantine(
  pool TEXT NOT NULL REFERENCES pools(name) ON DELETE CASCADE,
  dev_id INTEGER NOT NULL, reason TEXT NOT NULL, at_unix INTEGER NOT NULL,
  PRIMARY KEY(pool, dev_id));
CREATE TABLE pending(
  pool TEXT PRIMARY KEY REFERENCES pools(name) ON DELETE CASCADE,
  kind TEXT NOT NULL CHECK(kind IN ('create_thin','create_snap','delete')),
  dev_id INTEGER NOT NULL, origin_id INTEGER,
  old_txid INTEGER NOT NULL, new_txid INTEGER NOT NULL,
  started_unix INTEGER NOT NULL);
INSERT INTO pools VALUES('p','files','/x/data','/x/metadata',1073741824,8388608,128,0,'',3,5,0);
INSERT INTO free_ids VALUES('p',4);
INSERT INTO thins VALUES('p',1,'base',4096,NULL,'ready',0);
INSERT INTO thins VALUES('p',2,'snap',4096,1,'ready',0);
INSERT INTO thins VALUES('p',3,'going',4096,NULL,'deleting',0);
INSERT INTO quarantine VALUES('p',9,'seen after a crash',0);
INSERT INTO pending VALUES('p','delete',3,NULL,3,4,0);
PRAGMA user_version=1;
)sql";

// Makes the state dir `dir` and writes in it a registry of schema version 1
// (kSchemaV1, then each of `then`); returns the registry's path.
std::string WriteVersion1Registry(const std::string& dir, const std::vector<std::string>& then = {}) {
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace);
  const std::string path = dir + "/.registry.db";
  auto db = base::sqlite::Db::Open(path);
  EXPECT_TRUE(db.ok()) << db.status();
  if (!db.ok()) return path;
  std::vector<std::string> sql = {kSchemaV1};
  sql.insert(sql.end(), then.begin(), then.end());
  for (const std::string& stmt : sql) {
    absl::Status s = (*db)->Exec(stmt);
    EXPECT_TRUE(s.ok()) << s << "\n" << stmt;
  }
  return path;
}

// A registry written by the previous schema opens with everything in it,
// 'deleting' read as removing, and is version 2 after one transaction.
TEST_F(RegistryTest, SchemaVersion1IsMigratedAtOpen) {
  const std::string path = WriteVersion1Registry(dir_);
  ASSERT_FALSE(HasFailure());
  auto state = OpenState();
  ASSERT_NE(state, nullptr);
  Registry& r = state->registry();
  auto thins = r.ListThins("p");
  ASSERT_TRUE(thins.ok()) << thins.status();
  ASSERT_EQ(thins->size(), 3u);
  EXPECT_EQ((*thins)[0].state, ThinState::kReady);
  EXPECT_EQ((*thins)[1].parent_id, std::optional<uint32_t>(1));
  EXPECT_EQ((*thins)[2].state, ThinState::kRemoving);
  EXPECT_EQ(ThinStateName((*thins)[2].state), "removing");
  EXPECT_EQ(SqlColumn(path, "PRAGMA user_version"), std::vector<std::string>{"2"});
  EXPECT_EQ(SqlColumn(path, "SELECT name FROM sqlite_schema WHERE tbl_name LIKE 'thins%' AND type='index' "
                       "AND name NOT LIKE 'sqlite_%'"),
            std::vector<std::string>{"thins_by_parent"});
  EXPECT_EQ(SqlColumn(path, "SELECT name FROM sqlite_schema WHERE name='thins_v1'"), std::vector<std::string>{});
  // The pending delete finishes; ids, quarantine and the free list carry over.
  auto pending = r.GetPending("p");
  ASSERT_TRUE(pending.ok() && pending->has_value());
  ASSERT_TRUE(r.CommitOp(**pending).ok());
  EXPECT_EQ(r.GetPool("p")->transaction_id, 4u);
  EXPECT_EQ(Create(r, "p", "a"), 3u);  // freed by the delete, lowest first
  EXPECT_EQ(Create(r, "p", "b"), 4u);
  EXPECT_EQ(Create(r, "p", "c"), 5u);
  EXPECT_EQ(Create(r, "p", "d"), 6u);
  ASSERT_EQ(r.ListQuarantined("p")->size(), 1u);
  auto del = r.BeginDelete("p", "a");
  ASSERT_TRUE(del.ok()) << del.status();
  EXPECT_EQ(r.GetThin("p", "a")->state, ThinState::kRemoving);
  ASSERT_TRUE(r.AbortOp(*del, std::nullopt).ok());
  // Reopened, nothing is migrated again.
  state.reset();
  state = OpenState();
  ASSERT_NE(state, nullptr);
  EXPECT_EQ(state->registry().ListThins("p")->size(), 6u);
}

// The migration is one transaction: when it fails half-way, the registry is
// left as it was, still version 1.
TEST_F(RegistryTest, FailedMigrationChangesNothing) {
  // A state no build wrote: version 2's CHECK refuses to copy it.
  const std::string path = WriteVersion1Registry(
      dir_, {"PRAGMA ignore_check_constraints=ON", "UPDATE thins SET state='bogus' WHERE dev_id=2"});
  ASSERT_FALSE(HasFailure());
  auto state = StateDir::Open(dir_);
  ASSERT_FALSE(state.ok());
  EXPECT_EQ(SqlColumn(path, "PRAGMA user_version"), std::vector<std::string>{"1"});
  EXPECT_EQ(SqlColumn(path, "SELECT state FROM thins ORDER BY dev_id"),
            (std::vector<std::string>{"ready", "bogus", "deleting"}));
  EXPECT_EQ(SqlColumn(path, "SELECT name FROM sqlite_schema WHERE name='thins_v1'"), std::vector<std::string>{});
}

// A state this build does not know is DataLoss, not a guess; a newer schema
// is refused before anything is read.
TEST_F(RegistryTest, UnknownStateIsDataLossNewerSchemaRefused) {
  const std::string path = dir_ + "/.registry.db";
  {
    auto state = OpenState();
    ASSERT_NE(state, nullptr);
    ASSERT_TRUE(state->registry().AddPool(Pool("p")).ok());
    Create(state->registry(), "p", "t1");
  }
  {
    auto db = base::sqlite::Db::Open(path, false);
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE((*db)->Exec("PRAGMA ignore_check_constraints=ON").ok());
    ASSERT_TRUE((*db)->Exec("UPDATE thins SET state='deleting'").ok());
  }
  {
    auto state = OpenState();
    ASSERT_NE(state, nullptr);
    auto t = state->registry().GetThin("p", "t1");
    EXPECT_EQ(t.status().code(), absl::StatusCode::kDataLoss) << t.status();
    EXPECT_NE(t.status().message().find("deleting"), absl::string_view::npos) << t.status();
    EXPECT_EQ(state->registry().ListThins("p").status().code(), absl::StatusCode::kDataLoss);
  }
  {
    auto db = base::sqlite::Db::Open(path, false);
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE((*db)->Exec("PRAGMA user_version=3").ok());
  }
  auto newer = StateDir::Open(dir_);
  EXPECT_EQ(newer.status().code(), absl::StatusCode::kFailedPrecondition) << newer.status();
}

}  // namespace
}  // namespace thinpool
