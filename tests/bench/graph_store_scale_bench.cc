// Benchmark: a layer store at scale (issue 17). Imports chains of small
// layers (default 40 chains × 125 deep = 5,000 layers) into one store and,
// when the store reaches each of 10, 100, 1,000 and 5,000 layers, measures:
// the import latency at that size, `graphctl ls` and `graphctl check` as
// fresh processes (store open included; wall time and peak RSS from wait4),
// and List in-process. Host tier (overlay, or --driver NAME).
//
//   build/bench/graph_store_scale_bench [--chains N] [--depth D] [--dir SCRATCH]
//                                       [--driver overlay] [--storage-opt K=V ...] [--keep]
//
// --keep leaves the store in place (its root is printed) for profiling.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "graph/store.h"
#include "graph/stream.h"
#include "tests/bench/bench_child.h"
#include "tests/support/graph_tar.h"

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Child {
  int rc = -1;
  bench_child_usage u{};
};

Child RunChild(std::vector<std::string> argv) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  Child c;
  c.rc = bench_run_child_usage(args.data(), &c.u);
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  int chains = 40, depth = 125;
  std::string scratch = "/tmp", driver = "overlay";
  std::map<std::string, std::string> opts;
  bool keep = false;
  std::string graphctl = std::string(argv[0]);
  graphctl = graphctl.substr(0, graphctl.rfind('/') == std::string::npos ? 0 : graphctl.rfind('/'));
  graphctl = (graphctl.empty() ? std::string(".") : graphctl) + "/../bin/graphctl";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "graph_store_scale_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--chains") chains = std::atoi(next().c_str());
    else if (a == "--depth") depth = std::atoi(next().c_str());
    else if (a == "--dir") scratch = next();
    else if (a == "--driver") driver = next();
    else if (a == "--keep") keep = true;
    else if (a == "--storage-opt") {
      std::vector<std::string> kv = absl::StrSplit(next(), absl::MaxSplits('=', 1));
      if (kv.size() == 2) opts[kv[0]] = kv[1];
    } else {
      std::fprintf(stderr,
                   "usage: graph_store_scale_bench [--chains N] [--depth D] [--dir SCRATCH] "
                   "[--driver NAME] [--storage-opt K=V] [--keep]\n");
      return 2;
    }
  }
  if (chains < 1 || depth < 1) return 2;
  if (::access(graphctl.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "graph_store_scale_bench: %s is not built\n", graphctl.c_str());
    return 1;
  }
  const std::string root = absl::StrCat(scratch, "/graph-store-scale-", ::getpid());
  const int total = chains * depth;
  std::vector<int> marks;
  for (int m : {10, 100, 1000, 5000, 10000}) {
    if (m < total) marks.push_back(m);
  }
  marks.push_back(total);

  std::vector<std::string> rows;
  int rc = 0;
  {
    auto store = graph::OpenLayerStore(root, driver, opts);
    if (!store.ok()) {
      std::fprintf(stderr, "opening the store: %s\n", store.status().ToString().c_str());
      return 1;
    }
    std::vector<std::string> chain_top(static_cast<size_t>(chains));
    std::vector<double> window;  // import ms since the last mark
    size_t mark = 0;
    auto t_all = Clock::now();
    int made = 0;
    // Breadth first: chain c's layer d after every chain's layer d-1, so the
    // store holds chains of every depth up to `depth` at the end.
    for (int d = 0; d < depth && rc == 0; ++d) {
      for (int c = 0; c < chains && rc == 0; ++c) {
        std::string tar = testsupport::BuildTar(
            {{.path = absl::StrCat("c", c, "/"), .type = '5', .mode = 0755},
             {.path = absl::StrCat("c", c, "/d", d), .data = absl::StrCat("chain ", c, " depth ", d, "\n")}});
        graph::StringSource src(tar);
        graph::ImportOptions io;
        io.parent = chain_top[static_cast<size_t>(c)];
        auto t0 = Clock::now();
        auto layer = (*store)->Import(src, io);
        window.push_back(Ms(t0, Clock::now()));
        if (!layer.ok()) {
          std::fprintf(stderr, "import %d/%d: %s\n", c, d, layer.status().ToString().c_str());
          rc = 1;
          break;
        }
        chain_top[static_cast<size_t>(c)] = layer->name;
        ++made;
        if (mark < marks.size() && made == marks[mark]) {
          ++mark;
          // Store open + List in-process: a second LayerStore on the same root.
          auto o0 = Clock::now();
          double open_ms = 0, list_ms = 0;
          {
            auto again = graph::OpenLayerStore(root, driver, opts);
            auto l0 = Clock::now();
            open_ms = Ms(o0, l0);
            auto all = again.ok() ? (*again)->List() : again.status();
            list_ms = Ms(l0, Clock::now());
            if (!all.ok()) {
              std::fprintf(stderr, "open + List: %s\n", all.status().ToString().c_str());
              rc = 1;
              break;
            }
          }
          std::vector<std::string> base = {graphctl, "--root", root, "--driver", driver};
          for (const auto& [k, v] : opts) {
            base.push_back("--storage-opt");
            base.push_back(absl::StrCat(k, "=", v));
          }
          auto with = [&](const char* verb) {
            auto a = base;
            a.push_back(verb);
            return a;
          };
          Child ls = RunChild(with("ls"));
          Child check = RunChild(with("check"));
          if (ls.rc != 0 || check.rc != 0) {
            std::fprintf(stderr, "graphctl ls exited %d, check exited %d at %d layers\n", ls.rc, check.rc,
                         made);
            rc = 1;
          }
          struct rusage ru {};
          getrusage(RUSAGE_SELF, &ru);
          char row[512];
          std::snprintf(row, sizeof row,
                        "| %d | %.1f | %.1f + %.1f | %.0f / %.0f | %.1f | %.0f / %.0f | %.1f | %s | %.1f |",
                        made, Median(window), open_ms, list_ms, ls.u.wall_ms, ls.u.cpu_ms,
                        ls.u.max_rss_kib / 1024.0, check.u.wall_ms, check.u.cpu_ms,
                        check.u.max_rss_kib / 1024.0, check.rc == 0 ? "clean" : "PROBLEMS",
                        ru.ru_maxrss / 1024.0);
          rows.push_back(row);
          std::fprintf(stderr, "%s\n", row);
          window.clear();
        }
      }
    }
    std::printf("store: %s (%s), %d chains x %d deep = %d layers, made in %.1f s\n\n", root.c_str(),
                driver.c_str(), chains, depth, made, Ms(t_all, Clock::now()) / 1000);
    std::printf(
        "| layers | import ms (median since previous row) | in-process: store open + List ms | "
        "graphctl ls ms wall / CPU | its peak RSS MiB | graphctl check ms wall / CPU | its peak RSS MiB | "
        "check | bench peak RSS MiB |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|\n");
    for (const auto& r : rows) std::printf("%s\n", r.c_str());
  }
  if (!keep) {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
  return rc;
}
