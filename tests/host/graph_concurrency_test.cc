// One layer store, used the way the servers over it use it: 2 processes × 8
// threads doing Prepare / Mounts / Commit / Walk / Usage / Update / Remove
// (and Mount/Unmount now and then) on overlay for a bounded time, some on
// names every thread fights over. Only containerd's expected answers may
// fail a call (AlreadyExists, NotFound, FailedPrecondition for a layer with
// children); afterwards `check` is clean and nothing is left mounted.
//
// DMTHIN_CONCURRENCY_SECONDS sets the time (default 20; the figure
// is 60).
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "graph/driver.h"
#include "graph/store.h"
#include "tests/support/scratch_dir.h"

namespace graph {
namespace {

constexpr int kProcesses = 2;
constexpr int kThreads = 8;

int Seconds() {
  const char* s = std::getenv("DMTHIN_CONCURRENCY_SECONDS");
  int n = s ? std::atoi(s) : 0;
  return n > 0 ? n : 20;
}

// Mounts whose mount point is below `root` (from /proc/self/mountinfo).
std::vector<std::string> MountsBelow(const std::string& root) {
  std::ifstream in("/proc/self/mountinfo");
  std::vector<std::string> found;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    size_t pos = 0;
    for (int i = 0; i < 5 && pos != std::string::npos; ++i) {
      size_t next = line.find(' ', pos);
      f.push_back(line.substr(pos, next == std::string::npos ? next : next - pos));
      pos = next == std::string::npos ? next : next + 1;
    }
    if (f.size() == 5 && f[4].rfind(root + "/", 0) == 0) found.push_back(f[4]);
  }
  return found;
}

struct Tally {
  std::atomic<long> ops{0};
  std::atomic<long> expected{0};
  std::atomic<long> unexpected{0};
  std::mutex mu;
  std::vector<std::string> errors;
};

// An error containerd's clients expect from racing calls.
bool Expected(const absl::Status& s) {
  return absl::IsAlreadyExists(s) || absl::IsNotFound(s) || absl::IsFailedPrecondition(s);
}

void Note(Tally& t, const absl::Status& s, const std::string& what) {
  t.ops++;
  if (s.ok()) return;
  if (Expected(s)) {
    t.expected++;
    return;
  }
  t.unexpected++;
  std::lock_guard<std::mutex> l(t.mu);
  if (t.errors.size() < 20) t.errors.push_back(absl::StrCat(what, ": ", s.ToString()));
}

void Worker(LayerStore& store, int proc, int thread, std::chrono::steady_clock::time_point end,
            Tally& t) {
  std::mt19937 rng(proc * 100 + thread);
  const std::string me = absl::StrCat("p", proc, "t", thread);
  for (int i = 0; std::chrono::steady_clock::now() < end; ++i) {
    // Own names: the whole life of a snapshot, as containerd drives it.
    std::string key = absl::StrCat("active-", me, "-", i);
    std::string name = absl::StrCat("committed-", me, "-", i);
    CreateLayerOptions opts;
    opts.labels = {{"owner", me}};
    absl::Status s = store.Create(key, "base", opts).status();
    Note(t, s, "prepare " + key);
    if (!s.ok()) continue;
    Note(t, store.Mounts(key).status(), "mounts " + key);
    if (i % 8 == 0) {
      absl::StatusOr<std::string> dir = store.Mount(key);
      Note(t, dir.status(), "mount " + key);
      if (dir.ok()) {
        std::ofstream(*dir + "/file-" + me) << i;
        Note(t, store.Unmount(key), "unmount " + key);
      }
    }
    Note(t, store.Usage(key).status(), "usage " + key);
    Note(t, store.Update(key, {{"seen", "1"}}, {"labels.seen"}).status(), "update " + key);
    Note(t, store.Commit(name, key, {{"owner", me}}).status(), "commit " + key);
    int walked = 0;
    Note(t, store.Walk(std::vector<std::string>{absl::StrCat("labels.owner==", me, ",kind==committed")},
                       [&](const LayerInfo&) {
                         ++walked;
                         return absl::OkStatus();
                       }),
         "walk");
    if (walked != 1) {
      Note(t, absl::InternalError(absl::StrCat(me, ": walk found ", walked, " committed, want 1")),
           "walk count");
    }
    Note(t, store.Remove(name), "remove " + name);

    // Shared names: every thread of both processes races on them.
    std::string shared = absl::StrCat("shared-", rng() % 4);
    switch (rng() % 5) {
      case 0: Note(t, store.Create(shared, "base", {}).status(), "prepare shared"); break;
      case 1: Note(t, store.Remove(shared), "remove shared"); break;
      case 2: Note(t, store.Usage(shared).status(), "usage shared"); break;
      case 3: Note(t, store.Mounts(shared).status(), "mounts shared"); break;
      case 4: {
        std::string child = absl::StrCat("child-", rng() % 4);
        absl::Status c = store.Commit(shared + "-c", shared).status();
        Note(t, c, "commit shared");
        Note(t, store.Create(child, shared + "-c", {}).status(), "prepare on shared");
        Note(t, store.Remove(child), "remove child");
        Note(t, store.Remove(shared + "-c"), "remove shared committed");
        break;
      }
    }
  }
}

// One process's share: its own store object, 8 threads.
int RunProcess(const std::string& root, int proc, std::chrono::steady_clock::time_point end) {
  absl::StatusOr<std::unique_ptr<LayerStore>> store = OpenLayerStore(root, "overlay");
  if (!store.ok()) {
    std::cerr << "open: " << store.status() << "\n";
    return 1;
  }
  Tally t;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] { Worker(**store, proc, i, end, t); });
  }
  for (std::thread& th : threads) th.join();
  std::cerr << "process " << proc << ": " << t.ops << " calls, " << t.expected
            << " expected errors, " << t.unexpected << " unexpected\n";
  for (const std::string& e : t.errors) std::cerr << "  " << e << "\n";
  return t.unexpected == 0 && t.ops > 0 ? 0 : 1;
}

TEST(GraphConcurrency, TwoProcessesEightThreadsEach) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  testsupport::ScratchDir dir("graph-concurrency");
  const std::string root = dir.Sub("store");
  {
    absl::StatusOr<std::unique_ptr<LayerStore>> store = OpenLayerStore(root, "overlay");
    if (!store.ok() && GetUnsupported(store.status()).has_value()) GTEST_SKIP() << store.status();
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Create("base-prep", "", {}).ok());
    ASSERT_TRUE((*store)->Commit("base", "base-prep").ok());
  }
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(Seconds());
  // Fork before any thread exists; each child runs its own store.
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) ::_exit(RunProcess(root, p, end));
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "worker process " << pid << " saw unexpected errors (its stderr says which)";
  }

  absl::StatusOr<std::unique_ptr<LayerStore>> store = OpenLayerStore(root, "overlay");
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<CheckReport> report = (*store)->Check(false);
  ASSERT_TRUE(report.ok()) << report.status();
  for (const std::string& p : report->problems) ADD_FAILURE() << "check: " << p;
  EXPECT_TRUE(MountsBelow(root).empty()) << "leaked mount: " << MountsBelow(root)[0];
  // Every thread's own snapshots are gone; only shared ones may remain.
  absl::StatusOr<std::vector<LayerInfo>> left = (*store)->List();
  ASSERT_TRUE(left.ok());
  for (const LayerInfo& l : *left) {
    EXPECT_TRUE(l.name == "base" || l.name.rfind("shared-", 0) == 0 || l.name.rfind("child-", 0) == 0)
        << "left behind: " << l.name;
  }
  EXPECT_TRUE((*store)->driver().Cleanup().ok());
}

}  // namespace
}  // namespace graph
