// Thin create / snapshot / delete latency at 10, 100, 1,000 and 10,000
// devices in one pool, through libthinpool and through the bare kernel steps
// (tests/bench/libdm_bare_ioctl.c: the pool message, then set_transaction_id;
// no registry, no lock, no check), interleaved one by one in the same run.
// The pool is file-backed with the default options (data size aside): its
// default metadata must take the 10,000 creates (issue 17). At each size the
// dmthin tool runs `thin create` and `pool check` as a child (peak RSS from
// wait4); at the end Pool::Check compares thin_dump's ids with the registry's.
// Needs real device-mapper: run inside tests/vm/run.
//
//   build/bench/thinpool_ops_bench [REPS] [OUTPUT.md] [SIZES, e.g. 10,100,1000,10000]
//   DMTHIN_BENCH_DMSETUP=1: also the same steps with the dmsetup program
#include <sys/resource.h>
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
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "libdm/control.h"
#include "tests/bench/bench_child.h"
#include "tests/bench/libdm_bare_ioctl.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"

namespace {

using thinpool::Pool;

struct Child {
  bool ok = false;
  double ms = 0;
  long max_rss_kib = 0;
};

// Runs argv (no shell), stdout to /dev/null; wall time and peak RSS (wait4).
Child RunChild(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  Child c;
  c.ok = bench_run_child(args.data(), &c.ms, &c.max_rss_kib) == 0;
  return c;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double P90(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, v.size() * 9 / 10)];
}

double Ms(absl::Time start) { return absl::ToDoubleMilliseconds(absl::Now() - start); }

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "thinpool_ops_bench: " << what << "\n";
  std::exit(1);
}

long PeakRssKib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

// The bare kernel steps of one pool operation: its message, then
// set_transaction_id (as every client must to make the change durable and
// detectable); then, untimed, the transaction id put back so the registry
// stays right.
class Bare {
 public:
  Bare(const Pool& pool) : pool_(pool.dm_name()), record_pool_(pool) {
    fd_ = bare_open();
    if (fd_ < 0) Die("opening /dev/mapper/control");
  }
  ~Bare() { ::close(fd_); }
  // Timed: the message and the transaction id; returns ms.
  double Step(const std::string& message) {
    // The registry's transaction id (libthinpool's operations in between
    // moved it), read untimed.
    auto rec = record_pool_.Record();
    if (!rec.ok()) Die(rec.status().ToString());
    const uint64_t txid_ = rec->transaction_id;
    const std::string set = absl::StrCat("set_transaction_id ", txid_, " ", txid_ + 1);
    const std::string back = absl::StrCat("set_transaction_id ", txid_ + 1, " ", txid_);
    absl::Time t0 = absl::Now();
    if (bare_message(fd_, pool_.c_str(), message.c_str()) < 0) Die("bare " + message);
    if (bare_message(fd_, pool_.c_str(), set.c_str()) < 0) Die("bare " + set);
    double ms = Ms(t0);
    if (bare_message(fd_, pool_.c_str(), back.c_str()) < 0) Die("bare " + back);
    return ms;
  }

 private:
  std::string pool_;
  const Pool& record_pool_;
  int fd_ = -1;
};

}  // namespace

int main(int argc, char** argv) {
  int reps = argc > 1 ? std::atoi(argv[1]) : 20;
  std::string out_path = argc > 2 ? argv[2] : "";
  std::vector<int> sizes = {10, 100, 1000, 10000};
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
  // The dmthin tool of this build: <build>/bench/X → <build>/bin/dmthin.
  const std::string dmthin =
      (std::filesystem::absolute(argv[0]).parent_path().parent_path() / "bin/dmthin").string();
  const bool have_dmthin = access(dmthin.c_str(), X_OK) == 0;
  auto dm = dm::Control::Open();
  if (!dm.ok()) Die(dm.status().ToString());
  std::string dir = absl::StrCat("/tmp/thinpool-bench-", getpid());
  auto state = thinpool::StateDir::Open(dir);
  if (!state.ok()) Die(state.status().ToString());
  thinpool::PoolOptions options;  // default metadata size and block size
  options.data_bytes = 4ull << 30;
  auto pool = Pool::Create(**state, **dm, "bench", options);
  if (!pool.ok()) Die(pool.status().ToString());
  const std::string pool_dm = (*pool)->dm_name();
  const bool with_dmsetup = std::getenv("DMTHIN_BENCH_DMSETUP") != nullptr &&
                            RunChild({"dmsetup", "version"}).ok;
  {
    auto st = (*pool)->Status();
    if (!st.ok()) Die(st.status().ToString());
    std::cerr << "pool: " << st->Summary() << "\n";
  }

  std::vector<std::string> rows, scale_rows;
  int filled = 0;
  for (int n : sizes) {
    absl::Time fill0 = absl::Now();
    const int before = filled;
    for (; filled < n; ++filled) {
      auto t = (*pool)->CreateThin(absl::StrCat("f", filled), 1ull << 30);
      if (!t.ok()) Die(absl::StrCat("filling to ", n, " at ", filled, ": ", t.status().ToString()));
    }
    const double fill_ms_each = filled > before ? Ms(fill0) / (filled - before) : 0;
    auto f0 = (*pool)->GetThinInfo("f0");
    if (!f0.ok()) Die(f0.status().ToString());
    Bare bare(**pool);
    // Ids far above the registry's (24-bit: at most 16,777,215).
    const uint32_t bare_id = 16000000;
    std::vector<double> create, snap, del, bcreate, bsnap, bdel;
    std::cerr << "measuring with " << n << " devices\n";
    for (int i = 0; i < reps; ++i) {
      // Rotate which goes first so neither always follows the other.
      const bool bare_first = i % 2 == 1;
      auto lib_ops = [&] {
        absl::Time t0 = absl::Now();
        auto c = (*pool)->CreateThin(absl::StrCat("b", i), 1ull << 30);
        create.push_back(Ms(t0));
        if (!c.ok()) Die(c.status().ToString());
        t0 = absl::Now();
        auto s = (*pool)->Snapshot("f0", absl::StrCat("s", i));
        snap.push_back(Ms(t0));
        if (!s.ok()) Die(s.status().ToString());
      };
      auto bare_ops = [&] {
        bcreate.push_back(bare.Step(absl::StrCat("create_thin ", bare_id + 2 * i)));
        bsnap.push_back(bare.Step(absl::StrCat("create_snap ", bare_id + 2 * i + 1, " ", f0->dev_id)));
      };
      if (bare_first) bare_ops();
      lib_ops();
      if (!bare_first) bare_ops();
    }
    for (int i = 0; i < reps; ++i) {
      const bool bare_first = i % 2 == 1;
      auto lib_ops = [&] {
        absl::Time t0 = absl::Now();
        auto d = (*pool)->DeleteThin(absl::StrCat("b", i));
        del.push_back(Ms(t0));
        if (!d.ok()) Die(d.ToString());
        if (!(*pool)->DeleteThin(absl::StrCat("s", i)).ok()) Die("delete snapshot");
      };
      auto bare_ops = [&] {
        bdel.push_back(bare.Step(absl::StrCat("delete ", bare_id + 2 * i)));
        (void)bare.Step(absl::StrCat("delete ", bare_id + 2 * i + 1));
      };
      if (bare_first) bare_ops();
      lib_ops();
      if (!bare_first) bare_ops();
    }
    auto ratio = [](const std::vector<double>& a, const std::vector<double>& b) {
      return Median(b) > 0 ? Median(a) / Median(b) : 0;
    };
    rows.push_back(absl::StrFormat(
        "| %d | %.1f / %.1f | %.1f / %.1f | **%.2f** | %.1f / %.1f | %.1f / %.1f | **%.2f** | "
        "%.1f / %.1f | %.1f / %.1f | **%.2f** |",
        n, Median(create), P90(create), Median(bcreate), P90(bcreate), ratio(create, bcreate),
        Median(snap), P90(snap), Median(bsnap), P90(bsnap), ratio(snap, bsnap), Median(del),
        P90(del), Median(bdel), P90(bdel), ratio(del, bdel)));

    // The dmthin tool at this size: a thin create and a pool check (thin_dump
    // ids vs the registry's), each a fresh process; peak RSS from wait4.
    std::string tool_cells = "— | — | — | —";
    if (have_dmthin) {
      Child c = RunChild({dmthin, "--state-dir", dir, "thin", "create", "bench", "t", "--size", "1G"});
      if (!c.ok) Die("dmthin thin create");
      Child k = RunChild({dmthin, "--state-dir", dir, "pool", "check", "bench"});
      if (!k.ok) Die(absl::StrCat("dmthin pool check bench at ", n, " devices is not clean"));
      if (!RunChild({dmthin, "--state-dir", dir, "thin", "delete", "bench", "t"}).ok) {
        Die("dmthin thin delete");
      }
      tool_cells = absl::StrFormat("%.0f | %.1f | %.0f | %.1f", c.ms, c.max_rss_kib / 1024.0, k.ms,
                                   k.max_rss_kib / 1024.0);
    }
    std::cerr << rows.back() << "\n";
    auto after = (*pool)->Status();
    if (!after.ok()) Die(after.status().ToString());
    scale_rows.push_back(absl::StrFormat(
        "| %d | %.1f | %s | %s | %.1f | %s |", n, fill_ms_each,
        absl::StrCat(after->metadata_used_bytes >> 10, " / ", after->metadata_total_bytes >> 10),
        absl::StrFormat("%.0f", after->metadata_total_bytes > 0
                                    ? 100.0 * after->metadata_used_bytes / after->metadata_total_bytes
                                    : 0.0),
        PeakRssKib() / 1024.0, tool_cells));
    std::cerr << scale_rows.back() << "\n";

    if (with_dmsetup) {
      // The same kernel steps with the dmsetup program (2 execs per op).
      std::vector<double> dc, ds, dd;
      auto rec = (*pool)->Record();
      if (!rec.ok()) Die(rec.status().ToString());
      const uint64_t txid = rec->transaction_id;
      auto step = [&](const std::string& text) {
        absl::Time t0 = absl::Now();
        bool ok = RunChild({"dmsetup", "message", pool_dm, "0", text}).ok &&
                  RunChild({"dmsetup", "message", pool_dm, "0",
                            absl::StrCat("set_transaction_id ", txid, " ", txid + 1)})
                      .ok;
        double ms = Ms(t0);
        ok = ok && RunChild({"dmsetup", "message", pool_dm, "0",
                             absl::StrCat("set_transaction_id ", txid + 1, " ", txid)})
                       .ok;
        if (!ok) Die("dmsetup " + text);
        return ms;
      };
      for (int i = 0; i < reps; ++i) {
        dc.push_back(step(absl::StrCat("create_thin ", bare_id + 2 * i)));
        ds.push_back(step(absl::StrCat("create_snap ", bare_id + 2 * i + 1, " ", f0->dev_id)));
      }
      for (int i = 0; i < reps; ++i) {
        dd.push_back(step(absl::StrCat("delete ", bare_id + 2 * i)));
        (void)step(absl::StrCat("delete ", bare_id + 2 * i + 1));
      }
      rows.push_back(absl::StrFormat("| %d (dmsetup program, 2 execs/op) | %.1f / %.1f ||| %.1f / %.1f ||| %.1f / %.1f |||",
                                     n, Median(dc), P90(dc), Median(ds), P90(ds), Median(dd), P90(dd)));
    }
    std::cerr << "done with " << n << " devices\n";
  }

  // The registry against the kernel's metadata (thin_dump on a metadata
  // snapshot): ids, transaction id, nothing pending.
  auto report = (*pool)->Check(/*repair=*/false);
  if (!report.ok()) Die(report.status().ToString());
  if (!report->clean()) {
    for (const auto& f : report->findings) std::cerr << "check: " << f << "\n";
    Die("Pool::Check found problems");
  }
  for (const auto& note : report->notes) std::cerr << "check note: " << note << "\n";
  auto thins = (*pool)->ListThins();
  if (!thins.ok()) Die(thins.status().ToString());

  std::string table = absl::StrFormat(
      "%d operations of each kind per size, interleaved one by one with the bare sequence; ms "
      "median / p90; ratio = libthinpool median / bare median\n\n"
      "| devices in pool | create: libthinpool | create: bare | ratio | snapshot: libthinpool | "
      "snapshot: bare | ratio | delete: libthinpool | delete: bare | ratio |\n"
      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
      reps);
  for (const auto& r : rows) table += r + "\n";
  table +=
      "\n| devices in pool | fill: ms per CreateThin | metadata used / total KiB | metadata used % "
      "| bench peak RSS MiB | dmthin thin create ms | its peak RSS MiB | dmthin pool check ms | "
      "its peak RSS MiB |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : scale_rows) table += r + "\n";
  table += absl::StrFormat(
      "\nPool::Check clean: thin_dump's ids equal the registry's (%d thin devices).\n",
      static_cast<int>(thins->size()));
  std::cout << table;
  if (!out_path.empty()) std::ofstream(out_path) << table;

  if (auto s = (*pool)->Destroy(/*force=*/true); !s.ok()) Die(s.ToString());
  std::filesystem::remove_all(dir);
  return 0;
}
