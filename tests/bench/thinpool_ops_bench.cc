// Thin create / snapshot / delete latency with 10, 100 and 1,000 existing
// devices in the pool, through libthinpool and through the same kernel steps
// done with the dmsetup program (message + set_transaction_id, no registry).
// Needs real device-mapper: run inside tests/vm/run.
//
//   build/bench/thinpool_ops_bench [REPS] [OUTPUT.md] [SIZES, e.g. 10,100,1000]
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "libdm/control.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"

extern char** environ;

namespace {

using thinpool::Pool;

bool RunQuiet(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0].c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return false;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

struct Stats {
  double median_ms = 0, p90_ms = 0;
};

Stats Summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  if (ms.empty()) return {};
  return {ms[ms.size() / 2], ms[std::min(ms.size() - 1, ms.size() * 9 / 10)]};
}

double Ms(absl::Time start) { return absl::ToDoubleMilliseconds(absl::Now() - start); }

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "thinpool_ops_bench: " << what << "\n";
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = argc > 1 ? std::atoi(argv[1]) : 30;
  std::string out_path = argc > 2 ? argv[2] : "";
  std::vector<int> sizes = {10, 100, 1000};
  if (argc > 3) {
    sizes.clear();
    for (absl::string_view part : absl::StrSplit(argv[3], ',')) {
      int v = 0;
      if (absl::SimpleAtoi(part, &v) && v > 0) sizes.push_back(v);
    }
  }
  if (access("/dev/mapper/control", F_OK) != 0) {
    std::cout << "thinpool_ops_bench: no device-mapper here; run it inside tests/vm/run\n";
    return 0;
  }
  auto dm = dm::Control::Open();
  if (!dm.ok()) Die(dm.status().ToString());
  std::string dir = absl::StrCat("/tmp/thinpool-bench-", getpid());
  auto state = thinpool::StateDir::Open(dir);
  if (!state.ok()) Die(state.status().ToString());
  thinpool::PoolOptions options;
  options.data_bytes = 4ull << 30;
  options.metadata_bytes = 64ull << 20;
  auto pool = Pool::Create(**state, **dm, "bench", options);
  if (!pool.ok()) Die(pool.status().ToString());
  const std::string pool_dm = (*pool)->dm_name();
  const bool have_dmsetup =
      std::getenv("DMTHIN_BENCH_NO_DMSETUP") == nullptr && RunQuiet({"dmsetup", "version"});

  std::vector<std::string> rows;
  int filled = 0;
  for (int n : sizes) {
    for (; filled < n; ++filled) {
      auto t = (*pool)->CreateThin(absl::StrCat("f", filled), 1ull << 30);
      if (!t.ok()) Die(t.status().ToString());
    }
    std::vector<double> create, snap, del;
    std::cerr << "measuring with " << n << " devices\n";
    for (int i = 0; i < reps; ++i) {
      absl::Time t0 = absl::Now();
      auto c = (*pool)->CreateThin(absl::StrCat("b", i), 1ull << 30);
      create.push_back(Ms(t0));
      if (!c.ok()) Die(c.status().ToString());
      t0 = absl::Now();
      auto s = (*pool)->Snapshot("f0", absl::StrCat("s", i));
      snap.push_back(Ms(t0));
      if (!s.ok()) Die(s.status().ToString());
    }
    for (int i = 0; i < reps; ++i) {
      absl::Time t0 = absl::Now();
      auto d = (*pool)->DeleteThin(absl::StrCat("b", i));
      del.push_back(Ms(t0));
      if (!d.ok()) Die(d.ToString());
      if (!(*pool)->DeleteThin(absl::StrCat("s", i)).ok()) Die("delete snapshot");
    }
    std::cerr << "measured with " << n << " devices\n";
    Stats c = Summarize(create), s = Summarize(snap), d = Summarize(del);
    rows.push_back(absl::StrFormat(
        "| %d | libthinpool | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f |", n, c.median_ms,
        c.p90_ms, s.median_ms, s.p90_ms, d.median_ms, d.p90_ms));

    if (have_dmsetup) {
      // The same kernel steps with the dmsetup program: message +
      // set_transaction_id per operation, ids far above ours. The pool's
      // transaction id is put back afterwards so the registry stays right.
      auto st = (*pool)->Status();
      if (!st.ok()) Die(st.status().ToString());
      uint64_t txid = st->transaction_id;
      const uint64_t saved = txid;
      auto msg = [&](const std::string& text) {
        return RunQuiet({"dmsetup", "message", pool_dm, "0", text});
      };
      auto step = [&](const std::string& text) {
        bool ok = msg(text) &&
                  msg(absl::StrCat("set_transaction_id ", txid, " ", txid + 1));
        ++txid;
        return ok;
      };
      std::vector<double> dc, ds, dd;
      uint32_t base_id = 1000000;
      auto f0 = (*pool)->GetThinInfo("f0");
      if (!f0.ok()) Die(f0.status().ToString());
      for (int i = 0; i < reps; ++i) {
        absl::Time t0 = absl::Now();
        if (!step(absl::StrCat("create_thin ", base_id + 2 * i))) Die("dmsetup create_thin");
        dc.push_back(Ms(t0));
        t0 = absl::Now();
        if (!step(absl::StrCat("create_snap ", base_id + 2 * i + 1, " ", f0->dev_id))) {
          Die("dmsetup create_snap");
        }
        ds.push_back(Ms(t0));
      }
      for (int i = 0; i < reps; ++i) {
        absl::Time t0 = absl::Now();
        if (!step(absl::StrCat("delete ", base_id + 2 * i))) Die("dmsetup delete");
        dd.push_back(Ms(t0));
        if (!step(absl::StrCat("delete ", base_id + 2 * i + 1))) Die("dmsetup delete");
      }
      if (!msg(absl::StrCat("set_transaction_id ", txid, " ", saved))) Die("restore txid");
      Stats a = Summarize(dc), b = Summarize(ds), e = Summarize(dd);
      rows.push_back(absl::StrFormat(
          "| %d | dmsetup (2 execs/op) | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f |", n,
          a.median_ms, a.p90_ms, b.median_ms, b.p90_ms, e.median_ms, e.p90_ms));
    }
    std::cerr << "done with " << n << " devices\n";
  }

  std::string table =
      "| devices in pool | client | create ms (median / p90) | snapshot ms | delete ms |\n"
      "|---|---|---|---|---|\n";
  for (const auto& r : rows) table += r + "\n";
  std::cout << table;
  if (!out_path.empty()) std::ofstream(out_path) << table;

  if (auto s = (*pool)->Destroy(/*force=*/true); !s.ok()) Die(s.ToString());
  std::filesystem::remove_all(dir);
  return 0;
}
