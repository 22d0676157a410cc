// Layer store: chain ids, refcounts, kinds, labels, init layers and the
// crash-safe registry (interrupted operations in real child processes),
// over a directory-backed test driver (no privileges needed).
#include "graph/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "graph/store/init_layer.h"
#include "tests/support/graph_conformance.h"

namespace graph {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

std::string TestDigest(absl::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return absl::StrCat("sha256:", absl::BytesToHexString(absl::string_view(
                                     reinterpret_cast<const char*>(md), len)));
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// A driver that keeps each layer as a directory `root`/<id> holding the
// applied tar bytes in `tar` and a `view` directory. Enough to exercise the
// store's bookkeeping; the real drivers are covered by the host-tier
// conformance suite. Failure points can be armed to fail or to kill the
// process (simulating a crash).
class DirDriver : public Driver {
 public:
  enum class Fault { kNone, kFail, kExit };
  explicit DirDriver(std::string root, std::string name = "dirtest")
      : root_(std::move(root)), name_(std::move(name)) {
    ::mkdir(root_.c_str(), 0700);
  }
  Fault apply_fault = Fault::kNone;
  Fault remove_fault = Fault::kNone;

  std::string Name() const override { return name_; }
  std::string Dir(const std::string& id) const { return root_ + "/" + id; }

  absl::Status Create(const std::string& id, const std::string& parent,
                      const CreateOptions&) override {
    if (Exists(id)) return absl::AlreadyExistsError(id);
    if (!parent.empty() && !Exists(parent)) return absl::NotFoundError(parent);
    if (::mkdir(Dir(id).c_str(), 0700) != 0) return absl::InternalError("mkdir");
    ::mkdir((Dir(id) + "/view").c_str(), 0755);
    std::ofstream(Dir(id) + "/parent") << parent;
    return absl::OkStatus();
  }
  absl::Status Remove(const std::string& id) override {
    if (!Exists(id)) return absl::NotFoundError(id);
    if (remove_fault == Fault::kExit) ::_exit(3);
    if (remove_fault == Fault::kFail) return absl::InternalError("injected remove failure");
    return testing::RemoveTree(Dir(id));
  }
  absl::StatusOr<std::string> Get(const std::string& id, const std::string&) override {
    if (!Exists(id)) return absl::NotFoundError(id);
    refs_[id]++;
    return Dir(id) + "/view";
  }
  absl::Status Put(const std::string& id) override {
    if (refs_[id] == 0) return absl::FailedPreconditionError("not mounted");
    refs_[id]--;
    return absl::OkStatus();
  }
  absl::StatusOr<int> MountCount(const std::string& id) const override {
    auto it = refs_.find(id);
    return it == refs_.end() ? 0 : it->second;
  }
  bool Exists(const std::string& id) const override { return PathExists(Dir(id)); }
  absl::StatusOr<std::vector<std::string>> List() const override {
    std::vector<std::string> ids;
    DIR* d = ::opendir(root_.c_str());
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") ids.push_back(n);
    }
    ::closedir(d);
    return ids;
  }
  std::vector<std::pair<std::string, std::string>> Status() const override { return {}; }
  absl::StatusOr<std::map<std::string, std::string>> Metadata(const std::string& id) const override {
    return std::map<std::string, std::string>{{"Dir", Dir(id)}};
  }
  absl::Status Cleanup() override { return absl::OkStatus(); }
  absl::StatusOr<DiffResult> Diff(const std::string& id, const std::string&,
                                  ByteSink& sink) override {
    std::string data = ReadAll(Dir(id) + "/tar");
    RETURN_IF_ERROR(sink.Write(data.data(), data.size()));
    return DiffResult{data.size(), TestDigest(data)};
  }
  absl::StatusOr<ApplyDiffResult> ApplyDiff(const std::string& id, const std::string&,
                                            ByteSource& source) override {
    std::string data;
    char buf[4096];
    for (;;) {
      ASSIGN_OR_RETURN(size_t n, source.Read(buf, sizeof(buf)));
      if (n == 0) break;
      data.append(buf, n);
      if (apply_fault == Fault::kExit) ::_exit(3);  // crash mid-stream
    }
    if (apply_fault == Fault::kFail) return absl::DataLossError("injected truncated stream");
    std::ofstream(Dir(id) + "/tar") << data;
    return ApplyDiffResult{static_cast<int64_t>(data.size()), data.size(), TestDigest(data)};
  }
  absl::StatusOr<std::vector<Change>> Changes(const std::string&, const std::string&) override {
    return std::vector<Change>{};
  }
  absl::StatusOr<int64_t> DiffSize(const std::string& id, const std::string&) override {
    return static_cast<int64_t>(ReadAll(Dir(id) + "/tar").size());
  }
  absl::StatusOr<std::vector<MountSpec>> Mounts(const std::string& id) const override {
    return std::vector<MountSpec>{{"bind", Dir(id) + "/view", "", {"rbind", "rw"}}};
  }

 private:
  std::string root_;
  std::string name_;
  std::map<std::string, int> refs_;
};

constexpr char kD0[] = "sha256:4fbec69b941195fd56f8212a5000e304129451d82efca94ff0e0fb2d5355472e";
constexpr char kD1[] = "sha256:77ea7eee3d80b1a38f83906dd3048e2689457eb90e18a7d12f839c5ae37106a2";
constexpr char kChain01[] = "sha256:ef232af0eb422cdfd7917631657cd8ed2bfd5b9461b37c427aa0d3e0a19adf79";

TEST(ChainIdTest, MatchesTheOciDefinition) {
  EXPECT_EQ(TestDigest("layer0"), kD0);
  EXPECT_EQ(*ChainId("", kD0), kD0);
  EXPECT_EQ(*ChainId(kD0, kD1), kChain01);
  EXPECT_EQ(ChainId("", "sha256:short").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChainId("md5:x", kD1).status().code(), absl::StatusCode::kInvalidArgument);
  std::string a = NewCacheId(), b = NewCacheId();
  EXPECT_EQ(a.size(), 64u);
  EXPECT_NE(a, b);
  EXPECT_TRUE(ValidateLayerId(a).ok());
  EXPECT_TRUE(ValidateLayerId(a + "-init").ok());
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = testing::ScratchDir::Create("graph-store");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = std::move(*dir);
    Reopen();
  }
  void Reopen() {
    store_.reset();
    auto driver = std::make_unique<DirDriver>(dir_->path() + "/driver");
    driver_ = driver.get();
    auto store = LayerStore::Open(dir_->path() + "/store", std::move(driver));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  absl::StatusOr<LayerInfo> Import(const std::string& data, const std::string& parent = "") {
    StringSource src(data);
    ImportOptions opts;
    opts.parent = parent;
    return store_->Import(src, opts);
  }
  std::set<std::string> DriverIds() {
    auto ids = driver_->List();
    return std::set<std::string>(ids->begin(), ids->end());
  }
  // Runs `fn` in a child process and returns its exit code.
  int InChild(const std::function<void()>& fn) {
    pid_t pid = ::fork();
    if (pid == 0) {
      fn();
      ::_exit(0);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }

  std::unique_ptr<testing::ScratchDir> dir_;
  DirDriver* driver_ = nullptr;
  std::unique_ptr<LayerStore> store_;
};

TEST_F(StoreTest, ImportNamesLayersByChainIdAndCountsReferences) {
  auto l0 = Import("layer0");
  ASSERT_TRUE(l0.ok()) << l0.status();
  EXPECT_EQ(l0->name, kD0);
  EXPECT_EQ(l0->chain_id, kD0);
  EXPECT_EQ(l0->diff_id, kD0);
  EXPECT_EQ(l0->size, 6);
  EXPECT_EQ(l0->tar_size, 6u);
  EXPECT_EQ(l0->kind, LayerKind::kCommitted);
  EXPECT_EQ(l0->refs, 1);
  EXPECT_EQ(l0->cache_id.size(), 64u);
  EXPECT_TRUE(driver_->Exists(l0->cache_id));

  auto l1 = Import("layer1", kD0);
  ASSERT_TRUE(l1.ok()) << l1.status();
  EXPECT_EQ(l1->name, kChain01);
  EXPECT_EQ(l1->diff_id, kD1);
  EXPECT_EQ(l1->parent, kD0);

  // Same layer again: a second reference, no second driver layer.
  auto again = Import("layer1", kD0);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->cache_id, l1->cache_id);
  EXPECT_EQ(again->refs, 2);
  EXPECT_EQ(DriverIds().size(), 2u);

  absl::Status busy = store_->Remove(kD0);
  EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(busy.message(), HasSubstr("1 child"));

  ASSERT_TRUE(store_->Remove(kChain01).ok());
  EXPECT_EQ(store_->Stat(kChain01)->refs, 1);
  ASSERT_TRUE(store_->Remove(kChain01).ok());
  EXPECT_TRUE(absl::IsNotFound(store_->Stat(kChain01).status()));
  ASSERT_TRUE(store_->Remove(kD0).ok());
  EXPECT_TRUE(DriverIds().empty());
  EXPECT_TRUE(absl::IsNotFound(store_->Remove(kD0)));

  // The registry survives reopening.
  ASSERT_TRUE(Import("layer0").ok());
  Reopen();
  EXPECT_EQ(store_->Stat(kD0)->diff_id, kD0);
}

TEST_F(StoreTest, ImportParentMustBeAnImportedLayer) {
  EXPECT_TRUE(absl::IsNotFound(Import("x", kD0).status()));
  ASSERT_TRUE(store_->Create("scratch", "", {}).ok());
  ASSERT_TRUE(store_->Commit("committed", "scratch").ok());
  EXPECT_EQ(Import("x", "committed").status().code(), absl::StatusCode::kFailedPrecondition);
}

// Docker's graphdriver face (dmthin-docker-plugin): dockerd names image
// layers itself, and puts a container layer on its read-write -init layer.
TEST_F(StoreTest, NamedImportsAndLayersOnActiveParentsAsDockerdMakesThem) {
  const std::string d0 = "layer0", d1 = "layer1";
  StringSource src0(d0);
  ImportOptions opts;
  opts.name = "c0ffee";
  auto l0 = store_->Import(src0, opts);
  ASSERT_TRUE(l0.ok()) << l0.status();
  EXPECT_EQ(l0->name, "c0ffee");
  EXPECT_EQ(l0->chain_id, kD0);
  EXPECT_EQ(l0->diff_id, kD0);
  EXPECT_EQ(l0->kind, LayerKind::kCommitted);
  StringSource src1(d1);
  opts.name = "beef";
  opts.parent = "c0ffee";
  auto l1 = store_->Import(src1, opts);
  ASSERT_TRUE(l1.ok()) << l1.status();
  EXPECT_EQ(l1->chain_id, kChain01);
  EXPECT_EQ(l1->parent, "c0ffee");
  // A taken name is AlreadyExists, not a second reference; nothing is left.
  StringSource again(d1);
  EXPECT_TRUE(absl::IsAlreadyExists(store_->Import(again, opts).status()));
  EXPECT_EQ(store_->Stat("beef")->refs, 1);
  EXPECT_EQ(DriverIds().size(), 2u);

  CreateLayerOptions rw;
  rw.kind = LayerKind::kActive;
  ASSERT_TRUE(store_->Create("ctr-init", "beef", rw).ok());
  EXPECT_EQ(store_->Create("ctr", "ctr-init", rw).status().code(), absl::StatusCode::kInvalidArgument);
  rw.any_parent = true;
  auto ctr = store_->Create("ctr", "ctr-init", rw);
  ASSERT_TRUE(ctr.ok()) << ctr.status();
  EXPECT_EQ(ctr->parent, "ctr-init");
  EXPECT_EQ(store_->Remove("ctr-init").code(), absl::StatusCode::kFailedPrecondition);
  for (const char* name : {"ctr", "ctr-init", "beef", "c0ffee"}) EXPECT_TRUE(store_->Remove(name).ok()) << name;
  EXPECT_TRUE(DriverIds().empty());
}

TEST_F(StoreTest, SnapshotterKindsParentsAndCommit) {
  CreateLayerOptions active;
  auto a = store_->Create("prep", "", active);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->kind, LayerKind::kActive);
  EXPECT_EQ(a->created, a->updated);
  EXPECT_EQ(store_->Create("prep", "", active).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->Create("x", "prep", active).status().code(),
            absl::StatusCode::kInvalidArgument) << "parents must be committed (containerd's errdefs)";
  EXPECT_TRUE(absl::IsNotFound(store_->Create("x", "nope", active).status()));

  auto c = store_->Commit("base", "prep", {{"l", "1"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, LayerKind::kCommitted);
  EXPECT_EQ(c->cache_id, a->cache_id) << "commit renames, it does not copy";
  EXPECT_TRUE(absl::IsNotFound(store_->Stat("prep").status()));
  EXPECT_EQ(store_->Commit("again", "base").status().code(), absl::StatusCode::kFailedPrecondition);

  CreateLayerOptions view;
  view.kind = LayerKind::kView;
  ASSERT_TRUE(store_->Create("v", "base", view).ok());
  ASSERT_TRUE(store_->Create("child", "base", active).ok());
  EXPECT_EQ(store_->Stat("child")->parent, "base");
  EXPECT_EQ(store_->Stat("base")->children, 2);
  EXPECT_EQ(store_->Commit("v2", "v").status().code(), absl::StatusCode::kFailedPrecondition);

  // Views and committed layers mount read-only; active ones read-write.
  auto vm = store_->Mounts("v");
  ASSERT_TRUE(vm.ok());
  EXPECT_THAT((*vm)[0].options, ::testing::Contains("ro"));
  EXPECT_THAT((*vm)[0].options, ::testing::Not(::testing::Contains("rw")));
  EXPECT_THAT((*store_->Mounts("child"))[0].options, ::testing::Contains("rw"));

  // The name of a removed layer is free again at once; keys are free-form.
  ASSERT_TRUE(store_->Remove("child").ok());
  ASSERT_TRUE(store_->Create("child", "", active).ok());
  ASSERT_TRUE(store_->Create("/tmp/work dir/preparing", "", active).ok());

  auto list = store_->List();
  ASSERT_TRUE(list.ok());
  std::vector<std::string> names;
  for (const auto& l : *list) names.push_back(l.name);
  EXPECT_THAT(names, UnorderedElementsAre("base", "v", "child", "/tmp/work dir/preparing"));
  EXPECT_EQ((*store_->Counts())["active"], 2);
}

TEST_F(StoreTest, UpdateOnlyTouchesLabels) {
  ASSERT_TRUE(store_->Create("a", "", {}).ok());
  auto u = store_->Update("a", {{"l1", "v1"}, {"l2", "v2"}});
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->labels.size(), 2u);
  EXPECT_GT(u->updated, u->created);
  u = store_->Update("a", {{"l1", "new"}, {"l3", "v3"}}, {"labels.l1", "labels.l2"});
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->labels, (std::map<std::string, std::string>{{"l1", "new"}}));
  u = store_->Update("a", {{"x", "y"}}, {"labels"});
  EXPECT_EQ(u->labels, (std::map<std::string, std::string>{{"x", "y"}}));
  EXPECT_EQ(store_->Update("a", {}, {"parent"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Stat("a")->labels.size(), 1u);
}

TEST_F(StoreTest, LabelsAreLimitedAsContainerdLimitsThem) {
  CreateLayerOptions big;
  big.labels["k"] = std::string(4095, 'v');  // key + value = 4096: fine
  ASSERT_TRUE(store_->Create("a", "", big).ok());
  big.labels["k"].push_back('v');
  EXPECT_EQ(store_->Create("b", "", big).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Update("a", big.labels).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Commit("c", "a", big.labels).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::IsNotFound(store_->Stat("b").status()));
}

TEST_F(StoreTest, WalkFiltersAsContainerd) {
  CreateLayerOptions opts;
  opts.labels = {{"containerd.io/gc.root", "yes"}, {"team", "a"}};
  ASSERT_TRUE(store_->Create("prep", "", opts).ok());
  ASSERT_TRUE(store_->Commit("base", "prep").ok());
  CreateLayerOptions view;
  view.kind = LayerKind::kView;
  view.labels = {{"team", "b"}};
  ASSERT_TRUE(store_->Create("v1", "base", view).ok());
  ASSERT_TRUE(store_->Create("w1", "base", {}).ok());
  auto walk = [&](std::vector<std::string> filters) {
    std::vector<std::string> names;
    absl::Status s = store_->Walk(filters, [&](const LayerInfo& info) {
      names.push_back(info.name);
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s;
    return names;
  };
  using ::testing::ElementsAre;
  EXPECT_THAT(walk({}), ElementsAre("base", "v1", "w1"));
  EXPECT_THAT(walk({"kind==view"}), ElementsAre("v1"));
  EXPECT_THAT(walk({"parent==base"}), ElementsAre("v1", "w1"));
  EXPECT_THAT(walk({"labels.\"containerd.io/gc.root\""}), ElementsAre("base"));
  EXPECT_THAT(walk({"labels.team==b|kind==active"}), ElementsAre("v1", "w1"));
  EXPECT_THAT(walk({"labels.team==a", "name==w1"}), ElementsAre("base", "w1"));
  EXPECT_THAT(walk({"name~=^[bv]", "kind!=committed"}), ElementsAre("base", "v1", "w1"));
  EXPECT_THAT(walk({"name~=^[bv],kind!=committed"}), ElementsAre("v1"));
  // Labels come with the infos; a bad filter is InvalidArgument.
  ASSERT_TRUE(store_->Walk(std::vector<std::string>{"name==base"}, [](const LayerInfo& info) {
    EXPECT_EQ(info.labels.at("team"), "a");
    EXPECT_EQ(info.children, 2);
    return absl::OkStatus();
  }).ok());
  EXPECT_EQ(store_->Walk(std::vector<std::string>{"name=base"}, [](const LayerInfo&) {
    return absl::OkStatus();
  }).code(), absl::StatusCode::kInvalidArgument);
  // Walk joins parents and children itself: every info equals Stat's.
  ASSERT_TRUE(store_->Walk(Filter(), [&](const LayerInfo& info) {
    absl::StatusOr<LayerInfo> stat = store_->Stat(info.name);
    EXPECT_TRUE(stat.ok()) << stat.status();
    if (!stat.ok()) return absl::OkStatus();
    EXPECT_EQ(info.parent, stat->parent) << info.name;
    EXPECT_EQ(info.children, stat->children) << info.name;
    EXPECT_EQ(info.labels, stat->labels) << info.name;
    EXPECT_EQ(info.cache_id, stat->cache_id) << info.name;
    EXPECT_EQ(info.kind, stat->kind) << info.name;
    EXPECT_EQ(info.updated, stat->updated) << info.name;
    return absl::OkStatus();
  }).ok());
  // The callback's error stops the walk; the callback may call the store.
  int calls = 0;
  absl::Status stopped = store_->Walk(Filter(), [&](const LayerInfo& info) {
    ++calls;
    EXPECT_TRUE(store_->Stat(info.name).ok());
    return absl::CancelledError("enough");
  });
  EXPECT_EQ(stopped.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 1);
}

TEST_F(StoreTest, ContainerLayerGetsAnInitLayer) {
  ASSERT_TRUE(Import("layer0").ok());
  CreateLayerOptions rw;
  rw.init_layer = true;
  auto c = store_->Create("ctr", kD0, rw);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->init_id, c->cache_id + "-init");
  ASSERT_TRUE(driver_->Exists(c->init_id));
  std::string init = driver_->Dir(c->init_id) + "/view";
  for (const char* f : {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/dev/console",
                        "/proc", "/sys", "/dev/pts", "/dev/shm", "/etc/mtab"}) {
    EXPECT_TRUE(PathExists(init + f)) << f;
  }
  EXPECT_EQ(ReadAll(driver_->Dir(c->cache_id) + "/parent"), c->init_id)
      << "the rw layer sits on the init layer";
  EXPECT_EQ(ReadAll(driver_->Dir(c->init_id) + "/parent"), store_->Stat(kD0)->cache_id);
  ASSERT_TRUE(store_->Remove("ctr").ok());
  EXPECT_FALSE(driver_->Exists(c->init_id));
  EXPECT_FALSE(driver_->Exists(c->cache_id));
}

TEST_F(StoreTest, FailedImportLeavesNothing) {
  driver_->apply_fault = DirDriver::Fault::kFail;
  EXPECT_EQ(Import("layer0").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(store_->List()->empty());
  EXPECT_TRUE(DriverIds().empty());
  EXPECT_EQ((*store_->Counts())["incomplete"], 0);
  auto report = store_->Check(false);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->clean());
}

TEST_F(StoreTest, CrashDuringImportIsInvisibleAndRepaired) {
  int code = InChild([&] {
    driver_->apply_fault = DirDriver::Fault::kExit;
    (void)Import(std::string(100000, 'x'));
  });
  ASSERT_EQ(code, 3);
  Reopen();
  EXPECT_TRUE(store_->List()->empty()) << "a half layer must never be visible";
  EXPECT_EQ((*store_->Counts())["incomplete"], 1);
  EXPECT_EQ(DriverIds().size(), 1u);

  auto report = store_->Check(false);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->problems.size(), 1u);
  EXPECT_THAT(report->problems[0], HasSubstr("interrupted create"));
  EXPECT_EQ(DriverIds().size(), 1u) << "check without repair changes nothing";

  report = store_->Check(true);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->repaired.size(), 1u);
  EXPECT_TRUE(DriverIds().empty());
  EXPECT_TRUE(store_->Check(false)->clean());
  EXPECT_EQ((*store_->Counts())["incomplete"], 0);
}

TEST_F(StoreTest, CrashDuringRemoveHidesTheLayerAndRepairReapsIt) {
  ASSERT_TRUE(store_->Create("victim", "", {}).ok());
  std::string cache = store_->Stat("victim")->cache_id;
  int code = InChild([&] {
    driver_->remove_fault = DirDriver::Fault::kExit;
    (void)store_->Remove("victim");
  });
  ASSERT_EQ(code, 3);
  Reopen();
  EXPECT_TRUE(absl::IsNotFound(store_->Stat("victim").status()));
  EXPECT_TRUE(driver_->Exists(cache));
  ASSERT_TRUE(store_->Create("victim", "", {}).ok()) << "the name is free at once";
  auto report = store_->Check(true);
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report->problems.size(), 1u);
  EXPECT_THAT(report->problems[0], HasSubstr("interrupted remove"));
  EXPECT_FALSE(driver_->Exists(cache));
  EXPECT_TRUE(store_->Check(false)->clean());
  EXPECT_TRUE(store_->Stat("victim").ok());
}

TEST_F(StoreTest, FailedRemoveStaysHiddenUntilRepair) {
  ASSERT_TRUE(store_->Create("stuck", "", {}).ok());
  driver_->remove_fault = DirDriver::Fault::kFail;
  absl::Status s = store_->Remove("stuck");
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("check --repair"));
  EXPECT_TRUE(absl::IsNotFound(store_->Stat("stuck").status()));
  driver_->remove_fault = DirDriver::Fault::kNone;
  EXPECT_EQ(store_->Check(true)->repaired.size(), 1u);
  EXPECT_TRUE(DriverIds().empty());
}

// check runs SQLite's own check: an index that disagrees with its table is
// reported, and --repair rebuilds it (REINDEX).
TEST_F(StoreTest, CheckFindsRegistryIndexDamage) {
  ASSERT_TRUE(Import("layer0").ok());
  ASSERT_TRUE(Import("layer1", kD0).ok());
  store_.reset();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_->path() + "/store/layers.db").c_str(), &db), SQLITE_OK);
    // Redeclare the parent index over another column: its entries no longer
    // match the table, as after a torn index page.
    ASSERT_EQ(sqlite3_exec(db,
                           "PRAGMA writable_schema=ON; UPDATE sqlite_master SET sql = "
                           "'CREATE INDEX layers_parent ON layers(cache_id)' WHERE name = 'layers_parent';",
                           nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  Reopen();
  auto report = store_->Check(false);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(absl::StrJoin(report->problems, "\n"), HasSubstr("is damaged"));
  report = store_->Check(true);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(absl::StrJoin(report->repaired, "\n"), HasSubstr("REINDEX"));
  EXPECT_TRUE(store_->Check(false)->clean()) << absl::StrJoin(store_->Check(false)->problems, "\n");
}

TEST_F(StoreTest, MountedLayerIsNotRemovedWithoutForce) {
  ASSERT_TRUE(store_->Create("busy", "", {}).ok());
  ASSERT_TRUE(store_->Mount("busy").ok());
  absl::Status s = store_->Remove("busy");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(base::HasErrno(s, EBUSY)) << s;
  EXPECT_THAT(s.message(), HasSubstr("\"busy\": it is mounted (1 mount reference)"));
  EXPECT_THAT(s.message(), HasSubstr("umount"));
  EXPECT_TRUE(store_->Stat("busy").ok()) << "a refused remove hides nothing";
  EXPECT_TRUE(store_->Check(false)->clean());
  ASSERT_TRUE(store_->Unmount("busy").ok());
  // Unmount of a layer nobody mounted names the layer, not its cache id.
  absl::Status again = store_->Unmount("busy");
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store_->Mount("busy").ok());
  RemoveOptions force;
  force.force = true;
  EXPECT_TRUE(store_->Remove("busy", force).ok());
  EXPECT_TRUE(DriverIds().empty());
}

TEST_F(StoreTest, CheckFindsOrphansAndMissingDriverLayers) {
  ASSERT_TRUE(driver_->Create("orphan", "", {}).ok());
  ASSERT_TRUE(store_->Create("lost", "", {}).ok());
  ASSERT_TRUE(testing::RemoveTree(driver_->Dir(store_->Stat("lost")->cache_id)).ok());
  auto report = store_->Check(false);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->problems.size(), 2u);
  // Repair drops the record whose data is gone, but never deletes driver
  // data no record accounts for unless told to (prune).
  report = store_->Check(true);
  EXPECT_EQ(report->repaired.size(), 1u);
  EXPECT_EQ(DriverIds(), std::set<std::string>{"orphan"});
  EXPECT_THAT(absl::StrJoin(report->problems, "\n"), HasSubstr("--prune"));
  EXPECT_TRUE(absl::IsNotFound(store_->Stat("lost").status()));
  EXPECT_FALSE(store_->Check(false)->clean());
  report = store_->Check(true, /*prune=*/true);
  EXPECT_EQ(report->repaired.size(), 1u);
  EXPECT_TRUE(DriverIds().empty());
  EXPECT_TRUE(store_->Check(false)->clean());
}

TEST_F(StoreTest, RepairLeavesOperationsInProgressAlone) {
  int to_child[2];
  ASSERT_EQ(::pipe(to_child), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(to_child[1]);
    // Import from a pipe the parent holds open: blocks mid-create.
    FdSource src(to_child[0]);
    auto drv = std::make_unique<DirDriver>(dir_->path() + "/driver");
    auto st = LayerStore::Open(dir_->path() + "/store", std::move(drv));
    if (!st.ok()) ::_exit(1);
    ::_exit((*st)->Import(src, {}).ok() ? 0 : 2);
  }
  ::close(to_child[0]);
  // Wait until the child's record exists.
  for (int i = 0; i < 500 && (*store_->Counts())["incomplete"] == 0; ++i) ::usleep(10000);
  ASSERT_EQ((*store_->Counts())["incomplete"], 1);
  auto report = store_->Check(true);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->clean());
  ASSERT_EQ(report->skipped.size(), 1u);
  EXPECT_THAT(report->skipped[0], HasSubstr("being created"));
  ASSERT_EQ(::write(to_child[1], "layer0", 6), 6);
  ::close(to_child[1]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  EXPECT_TRUE(store_->Stat(kD0).ok());
  EXPECT_TRUE(store_->Check(false)->clean());
}

TEST_F(StoreTest, ConcurrentImportsOfOneLayerShareIt) {
  constexpr int kProcs = 6;
  std::vector<pid_t> pids;
  for (int i = 0; i < kProcs; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      auto drv = std::make_unique<DirDriver>(dir_->path() + "/driver");
      auto st = LayerStore::Open(dir_->path() + "/store", std::move(drv));
      if (!st.ok()) ::_exit(1);
      const std::string data = "layer0";
      StringSource src(data);
      ::_exit((*st)->Import(src, {}).ok() ? 0 : 2);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int st = 0;
    ::waitpid(pid, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  auto layer = store_->Stat(kD0);
  ASSERT_TRUE(layer.ok()) << layer.status();
  EXPECT_EQ(layer->refs, kProcs);
  EXPECT_EQ(DriverIds().size(), 1u) << "losers of the race drop their copies";
  EXPECT_EQ((*store_->Counts())["incomplete"], 0);
  EXPECT_TRUE(store_->Check(false)->clean());
}

TEST_F(StoreTest, StoreRemembersItsDriver) {
  store_.reset();
  EXPECT_EQ(*LayerStore::RecordedDriver(dir_->path() + "/store"), "dirtest");
  EXPECT_EQ(*LayerStore::RecordedDriver(dir_->path() + "/none"), "");
  auto other = LayerStore::Open(dir_->path() + "/store",
                                std::make_unique<DirDriver>(dir_->path() + "/d2", "other"));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.status().message(), HasSubstr("dirtest"));
}

TEST(InitLayerTest, NeverFollowsSymlinksOutOfTheLayer) {
  auto dir = testing::ScratchDir::Create("graph-init");
  ASSERT_TRUE(dir.ok());
  std::string layer = (*dir)->path() + "/layer", outside = (*dir)->path() + "/outside";
  ASSERT_EQ(::mkdir(layer.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  ASSERT_EQ(::symlink(outside.c_str(), (layer + "/etc").c_str()), 0);
  ASSERT_EQ(::mkdir((layer + "/dev").c_str(), 0755), 0);
  std::ofstream(layer + "/dev/console") << "keep";
  ASSERT_TRUE(store::PopulateInitLayer(layer).ok());
  EXPECT_FALSE(PathExists(outside + "/hosts"));
  EXPECT_FALSE(PathExists(outside + "/resolv.conf"));
  EXPECT_EQ(ReadAll(layer + "/dev/console"), "keep") << "existing entries are kept";
  EXPECT_TRUE(PathExists(layer + "/proc"));
  EXPECT_TRUE(PathExists(layer + "/dev/pts"));
  EXPECT_FALSE(PathExists(outside + "/mtab"));
  ASSERT_TRUE(store::PopulateInitLayer(layer).ok()) << "idempotent";
}

}  // namespace
}  // namespace graph
