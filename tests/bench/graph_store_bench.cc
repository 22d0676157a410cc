// Benchmark: the layer store as a runtime's storage core (issue 12's
// figures), on overlay, through graph::LayerStore as the snapshotter calls it:
//
//   prepare  Create(key, base, active) + Mounts(key): containerd's Prepare,
//            the mounts described, nothing mounted
//   remove   Remove(key) of that layer
//   walk     Walk over a store of --layers snapshots (default 10,000; two
//            labels each, as containerd's gc and snapshot labels): with a
//            label filter matching 1%, and unfiltered (every layer)
//   usage    Usage of an active layer holding --files entries (default
//            6,800: a debootstrap --variant=minbase tree has 6,768), made
//            here: directories of files of 0..16 KiB, symlinks, hard links
//
//   build/bench/graph_store_bench [--runs N] [--dir SCRATCH] [--layers N] [--files N]
//                                 [--data DIR]
//
// The store lives in SCRATCH (default /tmp; overlay needs a filesystem that
// is not itself overlay). Prints a markdown table of medians and 90th
// percentiles against the targets, and where a target is missed the
// split of its time; with --data DIR also writes DIR/store.dat (gnuplot:
// tests/bench/graph_store_bench.gp).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "graph/store.h"

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

[[noreturn]] void Die(const absl::Status& s, const std::string& what) {
  std::fprintf(stderr, "graph_store_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

template <typename T>
T Must(absl::StatusOr<T> v, const std::string& what) {
  if (!v.ok()) Die(v.status(), what);
  return std::move(*v);
}

void Must(const absl::Status& s, const std::string& what) {
  if (!s.ok()) Die(s, what);
}

// A root-filesystem-like tree of `entries` entries under `dir`: about one
// directory per 17 entries (debootstrap's minbase: ~400 of 6,768), 2% symlinks
// and 1% hard links, the rest regular files of 0..16 KiB. Returns the number
// of entries made.
int MakeTree(const std::string& dir, int entries) {
  int made = 0;
  int dirs = std::max(1, entries / 17);
  std::string block(16384, 'x');
  std::vector<std::string> files;
  for (int d = 0; d < dirs && made < entries; ++d) {
    std::string sub = absl::StrCat(dir, "/usr/share/d", d / 20, "/e", d);
    std::filesystem::create_directories(sub);
    ++made;
    for (int f = 0; made < entries && f < entries / dirs; ++f, ++made) {
      std::string path = absl::StrCat(sub, "/f", f);
      int kind = (d * 31 + f) % 100;
      if (kind < 2) {
        (void)::symlink("../../target", path.c_str());
      } else if (kind < 3 && !files.empty()) {
        (void)::link(files.back().c_str(), path.c_str());
      } else {
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) continue;
        size_t size = static_cast<size_t>((d * 7919 + f * 104729) % 16385);
        (void)!::write(fd, block.data(), size);
        ::close(fd);
        files.push_back(path);
      }
    }
  }
  return made;
}

struct Row {
  std::string what;
  std::vector<double> ms;   // wall
  double target_ms = 0;     // 0: none
  std::string note;
  std::vector<double> cpu;  // this thread's CPU time (user + sys)
};

// Wall and thread CPU time: on a shared machine the wall time of CPU-bound
// work (Walk, Usage) includes waiting for a core; its CPU time does not.
struct Stamp {
  Clock::time_point wall;
  double cpu_ms;
};

Stamp Now() {
  struct timespec ts;
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return {Clock::now(), static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6};
}

void Add(Row& row, const Stamp& a, const Stamp& b) {
  row.ms.push_back(Ms(a.wall, b.wall));
  row.cpu.push_back(b.cpu_ms - a.cpu_ms);
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 200;
  int layers = 10000;
  int files = 6800;
  std::string scratch = "/tmp";
  std::string data_dir;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "graph_store_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--runs") runs = std::max(1, std::atoi(next().c_str()));
    else if (a == "--dir") scratch = next();
    else if (a == "--layers") layers = std::max(1, std::atoi(next().c_str()));
    else if (a == "--files") files = std::max(1, std::atoi(next().c_str()));
    else if (a == "--data") data_dir = next();
    else {
      std::fprintf(stderr,
                   "usage: graph_store_bench [--runs N] [--dir SCRATCH] [--layers N] [--files N] [--data DIR]\n");
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::printf("graph_store_bench: skipped (needs root: overlay)\n");
    return 0;
  }
  std::string base_dir = absl::StrCat(scratch, "/graph-store-bench-", ::getpid());
  std::string root = base_dir + "/root";
  if (::mkdir(base_dir.c_str(), 0700) != 0) Die(absl::InternalError(std::strerror(errno)), "mkdir " + base_dir);
  std::vector<Row> rows;
  {
    auto opened = graph::OpenLayerStore(root, "overlay");
    if (!opened.ok()) {
      std::printf("graph_store_bench: skipped (overlay: %s)\n", opened.status().ToString().c_str());
      std::filesystem::remove_all(base_dir);
      return 0;
    }
    std::unique_ptr<graph::LayerStore> store = std::move(*opened);
    // The image every snapshot sits on: a committed (empty) layer.
    graph::CreateLayerOptions rw;
    rw.kind = graph::LayerKind::kActive;
    Must(store->Create("base-rw", "", rw).status(), "create base");
    graph::LayerInfo base = Must(store->Commit("base", "base-rw"), "commit base");

    // Prepare (described) and Remove, on an empty store and then again
    // once it holds --layers snapshots.
    int phase = 0;
    auto prepare_remove = [&](const std::string& tag) {
      ++phase;
      Row prepare{absl::StrCat("Prepare (Create + Mounts, described), ", tag), {}, 1.0, "", {}};
      Row create{absl::StrCat("  of which Create, ", tag), {}, 0, "", {}};
      Row remove{absl::StrCat("Remove, ", tag), {}, 0, "", {}};
      for (int r = -5; r < runs; ++r) {
        std::string key = absl::StrCat("prepare-", phase, "-", r);
        graph::CreateLayerOptions o;
        o.kind = graph::LayerKind::kActive;
        o.labels = {{"containerd.io/snapshot.ref", key}};
        Stamp t0 = Now();
        Must(store->Create(key, base.name, o).status(), "create " + key);
        Stamp t1 = Now();
        auto mounts = Must(store->Mounts(key), "mounts " + key);
        Stamp t2 = Now();
        Must(store->Remove(key), "remove " + key);
        Stamp t3 = Now();
        if (mounts.empty()) Die(absl::InternalError("no mounts"), key);
        if (r < 0) continue;  // warm-up
        Add(prepare, t0, t2);
        Add(create, t0, t1);
        Add(remove, t2, t3);
      }
      // The same on the driver alone (no registry), and the floor of one
      // durable commit on this filesystem: an fdatasync of a 4 KiB append.
      Row dcreate{absl::StrCat("  overlay driver alone: Create, ", tag), {}, 0, "", {}};
      Row dremove{absl::StrCat("  overlay driver alone: Remove, ", tag), {}, 0, "", {}};
      Row sync{absl::StrCat("  fdatasync of a 4 KiB append, ", tag), {}, 0, "", {}};
      std::string probe = base_dir + "/sync-probe";
      int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      std::string page(4096, 's');
      graph::CreateOptions rw;
      rw.read_write = true;
      for (int r = -5; r < runs; ++r) {
        std::string id = absl::StrCat("driver-", phase, "-", r);
        Stamp t0 = Now();
        Must(store->driver().Create(id, base.cache_id, rw), "driver create");
        Stamp t1 = Now();
        Must(store->driver().Remove(id), "driver remove");
        Stamp t2 = Now();
        (void)!::write(fd, page.data(), page.size());
        ::fdatasync(fd);
        Stamp t3 = Now();
        if (r < 0) continue;
        Add(dcreate, t0, t1);
        Add(dremove, t1, t2);
        Add(sync, t2, t3);
      }
      ::close(fd);
      ::unlink(probe.c_str());
      rows.push_back(prepare);
      rows.push_back(create);
      rows.push_back(dcreate);
      rows.push_back(sync);
      rows.push_back(remove);
      rows.push_back(dremove);
    };
    prepare_remove("empty store");

    // --layers snapshots, two labels each; every 100th in group "7". Made
    // by 8 threads (the store is thread-safe; its commits serialise).
    auto t_fill = Clock::now();
    {
      std::vector<std::thread> fillers;
      std::atomic<int> next{0};
      for (int t = 0; t < 8; ++t) {
        fillers.emplace_back([&] {
          for (int i = next++; i < layers; i = next++) {
            graph::CreateLayerOptions o;
            o.kind = i % 2 ? graph::LayerKind::kActive : graph::LayerKind::kView;
            o.labels = {{"containerd.io/gc.root", "2026-11-30T00:00:00Z"},
                        {"bench.group", std::to_string(i % 100)}};
            Must(store->Create(absl::StrCat("snap-", i), base.name, o).status(), "fill");
          }
        });
      }
      for (std::thread& t : fillers) t.join();
    }
    double fill_s = Ms(t_fill, Clock::now()) / 1000;
    Row walk_f{absl::StrCat("Walk ", layers, " snapshots, filter labels.\"bench.group\"==7"), {}, 50.0, "", {}};
    Row walk_a{absl::StrCat("Walk ", layers, " snapshots, no filter"), {}, 0, "", {}};
    size_t matched = 0, all = 0;
    int walk_runs = std::max(5, runs / 10);
    for (int r = -1; r < walk_runs; ++r) {
      size_t n = 0;
      Stamp t0 = Now();
      Must(store->Walk(std::vector<std::string>{"labels.\"bench.group\"==7"},
                       [&](const graph::LayerInfo&) {
                         ++n;
                         return absl::OkStatus();
                       }),
           "walk filtered");
      Stamp t1 = Now();
      matched = n;
      n = 0;
      Must(store->Walk(std::vector<std::string>{}, [&](const graph::LayerInfo&) {
             ++n;
             return absl::OkStatus();
           }),
           "walk");
      Stamp t2 = Now();
      all = n;
      if (r < 0) continue;
      Add(walk_f, t0, t1);
      Add(walk_a, t1, t2);
    }
    walk_f.note = absl::StrCat(matched, " matched");
    walk_a.note = absl::StrCat(all, " listed");
    rows.push_back(walk_f);
    rows.push_back(walk_a);
    prepare_remove(absl::StrCat(layers, " snapshots"));

    // Usage of an active layer holding a root-filesystem-like tree.
    graph::CreateLayerOptions o;
    o.kind = graph::LayerKind::kActive;
    Must(store->Create("usage", base.name, o).status(), "create usage");
    std::string dir = Must(store->Mount("usage"), "mount usage");
    int entries = MakeTree(dir, files);
    Must(store->Unmount("usage"), "unmount usage");
    Row usage{absl::StrCat("Usage of an active layer, ", entries, " entries"), {}, 0, "", {}};
    graph::DiskUsage du;
    for (int r = -1; r < std::max(5, runs / 10); ++r) {
      Stamp t0 = Now();
      du = Must(store->Usage("usage"), "usage");
      Stamp t1 = Now();
      if (r >= 0) Add(usage, t0, t1);
    }
    usage.note = absl::StrCat(du.bytes / 1024 / 1024, " MiB, ", du.inodes, " inodes (warm cache)");
    rows.push_back(usage);
    std::printf("(store filled with %d snapshots in %.1f s: %.2f ms each)\n", layers, fill_s,
                fill_s * 1000 / layers);
    // Nothing is mounted: the scratch directory goes as a whole.
  }
  std::filesystem::remove_all(base_dir);

  std::printf("\n### LayerStore on overlay (%d runs; Walk and Usage %d runs; ms)\n\n", runs,
              std::max(5, runs / 10));
  std::printf("| operation | median | p90 | CPU median | target | |\n|---|---:|---:|---:|---:|---|\n");
  for (const Row& r : rows) {
    double med = Percentile(r.ms, 0.5);
    std::string target = r.target_ms > 0 ? absl::StrCat("<= ", r.target_ms) : "";
    std::string verdict = r.target_ms > 0 ? (med <= r.target_ms ? "met" : "**missed**") : "";
    if (!r.note.empty()) verdict = verdict.empty() ? r.note : absl::StrCat(verdict, "; ", r.note);
    std::printf("| %s | %.3f | %.3f | %.3f | %s | %s |\n", r.what.c_str(), med, Percentile(r.ms, 0.9),
                Percentile(r.cpu, 0.5), target.c_str(), verdict.c_str());
  }
  if (!data_dir.empty()) {
    std::ofstream out(data_dir + "/store.dat");
    out << "# operation median_ms p90_ms target_ms cpu_median_ms\n";
    for (const Row& r : rows) {
      if (r.what.rfind("  ", 0) == 0) continue;
      std::string label = r.what;  // quoted for gnuplot: inner quotes become '
      std::replace(label.begin(), label.end(), '"', '\'');
      out << '"' << label << "\" " << Percentile(r.ms, 0.5) << " " << Percentile(r.ms, 0.9) << " "
          << r.target_ms << " " << Percentile(r.cpu, 0.5) << "\n";
    }
  }
  return 0;
}
