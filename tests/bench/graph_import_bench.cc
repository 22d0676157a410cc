// Benchmark: import of a real root filesystem tarball with graph::ApplyLayer
// and with the graphctl tool (`graphctl --root FRESH import TARBALL`: store
// open, registry, the overlay driver's layer, diff id) against GNU tar
// extracting the same file.
//
//   build/bench/graph_import_bench [--runs N] [--dir SCRATCH] [--graphctl PATH] TARBALL
//
// Contenders, each run in turn (the order rotates every run): ApplyLayer in
// this process; ApplyLayer in a fresh process (this program re-run with
// --apply-into DIR: what a tool pays for starting, its first import's cold
// buffers included); LayerStore::Import in this process on a fresh overlay
// store; graphctl import (a fresh store); GNU tar -x. Child processes are
// all started the same way (bench_run_child: /usr/bin/time when installed).
// Each run extracts into a fresh directory (graphctl: a fresh store) on the
// scratch filesystem (default the tarball's directory), timing only the
// extraction; directories are removed between runs. The median is reported.
// Prints a markdown table row per tool and the ratios (tar time / graph
// time: > 1 means graph is faster; graphctl / tar: the paired ratio of
// issue 17, target <= 1.1).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "graph/archive.h"
#include "graph/fsutil.h"
#include "graph/store.h"
#include "tests/bench/bench_child.h"

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double CpuSeconds(int who) {
  struct rusage ru;
  getrusage(who, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

double SysSeconds(int who) {
  struct rusage ru;
  getrusage(who, &ru);
  return ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int RunTar(const std::vector<std::string>& args, bool quiet = false) {
  pid_t pid = fork();
  if (pid == 0) {
    if (quiet) {
      int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
    }
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 5;
  bool only_graph = false;  // for profiling
  std::string tarball, scratch;
  std::string apply_into;  // internal: one ApplyLayer into this directory, then exit
  // <build>/bench/graph_import_bench → <build>/bin/graphctl
  std::string graphctl = std::string(argv[0]);
  graphctl = graphctl.substr(0, graphctl.rfind('/') == std::string::npos ? 0 : graphctl.rfind('/'));
  graphctl = (graphctl.empty() ? std::string(".") : graphctl) + "/../bin/graphctl";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) scratch = argv[++i];
    else if (a == "--only-graph") only_graph = true;
    else if (a == "--graphctl" && i + 1 < argc) graphctl = argv[++i];
    else if (a == "--apply-into" && i + 1 < argc) apply_into = argv[++i];
    else tarball = a;
  }
  if (tarball.empty() || runs < 1) {
    std::fprintf(stderr, "usage: %s [--runs N] [--dir SCRATCH] TARBALL\n", argv[0]);
    return 2;
  }
  if (!apply_into.empty()) {
    base::UniqueFd in(open(tarball.c_str(), O_RDONLY | O_CLOEXEC));
    base::UniqueFd root(open(apply_into.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    graph::FdSource src(in.get());
    auto res = graph::ApplyLayer(root.get(), src, graph::ApplyOptions{});
    return res.ok() ? 0 : 1;
  }
  if (scratch.empty()) {
    size_t slash = tarball.rfind('/');
    scratch = slash == std::string::npos ? "." : tarball.substr(0, slash);
  }
  struct stat st;
  if (stat(tarball.c_str(), &st) != 0) {
    std::perror(tarball.c_str());
    return 1;
  }
  const bool with_graphctl = !only_graph && access(graphctl.c_str(), X_OK) == 0;
  // Per tool: wall, CPU (user+sys) and system seconds of each run.
  enum Tool { kApply, kTar, kGraphctl, kStore, kFresh, kTools };
  const char* const names[kTools] = {"graph::ApplyLayer (+sha256 diff id)", "GNU tar -x",
                                     "graphctl import (fresh store, overlay)",
                                     "LayerStore::Import in process (fresh store, overlay)",
                                     "graph::ApplyLayer in a fresh process"};
  std::vector<double> wall[kTools], cpu[kTools], sys[kTools];
  std::vector<double> sum_t, sum_cpu;
  long ctl_rss_kib = 0;
  std::string diff_id;
  std::vector<Tool> order = {kApply};
  if (!only_graph) order = {kApply, kTar, kStore, kFresh};
  if (with_graphctl) order.push_back(kGraphctl);
  for (int r = 0; r < runs; ++r) {
    for (size_t k = 0; k < order.size(); ++k) {
      const Tool which = order[(k + static_cast<size_t>(r)) % order.size()];  // rotate who goes first
      std::string dir = scratch + "/import-bench-" + std::to_string(getpid()) + "-" + std::to_string(which);
      (void)graph::RemoveTree(dir);
      if (mkdir(dir.c_str(), 0755) != 0) {
        std::perror(dir.c_str());
        return 1;
      }
      sync();
      const bool child = which == kTar || which == kGraphctl || which == kFresh;
      const int who = child ? RUSAGE_CHILDREN : RUSAGE_SELF;
      double t0 = Now();
      double c0 = CpuSeconds(who), s0 = SysSeconds(who);
      if (which == kApply) {
        base::UniqueFd in(open(tarball.c_str(), O_RDONLY | O_CLOEXEC));
        base::UniqueFd root(open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        graph::FdSource src(in.get());
        graph::ApplyOptions o;
        auto res = graph::ApplyLayer(root.get(), src, o);
        if (!res.ok()) {
          std::fprintf(stderr, "ApplyLayer: %s\n", std::string(res.status().message()).c_str());
          return 1;
        }
        diff_id = res->diff_id;
      } else if (which == kStore) {
        // What graphctl import does, minus the process: a fresh store, the
        // overlay layer, the registry commit, the diff id.
        auto store = graph::OpenLayerStore(dir + "/store", "overlay");
        if (!store.ok()) {
          std::fprintf(stderr, "OpenLayerStore: %s\n", std::string(store.status().message()).c_str());
          return 1;
        }
        base::UniqueFd in(open(tarball.c_str(), O_RDONLY | O_CLOEXEC));
        graph::FdSource src(in.get());
        auto layer = (*store)->Import(src, graph::ImportOptions{});
        if (!layer.ok()) {
          std::fprintf(stderr, "LayerStore::Import: %s\n", std::string(layer.status().message()).c_str());
          return 1;
        }
      } else if (which == kFresh) {
        char exe[4096];
        ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
        std::string self(exe, len > 0 ? static_cast<size_t>(len) : 0);
        char* args[] = {self.data(), const_cast<char*>("--apply-into"), dir.data(), tarball.data(), nullptr};
        int rc = bench_run_child(args, nullptr, nullptr);
        if (rc != 0) {
          std::fprintf(stderr, "ApplyLayer child exited %d\n", rc);
          return 1;
        }
      } else if (which == kGraphctl) {
        std::string store = dir + "/store";
        char* args[] = {graphctl.data(), const_cast<char*>("--root"), store.data(),
                        const_cast<char*>("--driver"), const_cast<char*>("overlay"),
                        const_cast<char*>("import"), tarball.data(), nullptr};
        long rss = 0;
        int rc = bench_run_child(args, nullptr, &rss);
        if (rc != 0) {
          std::fprintf(stderr, "graphctl import exited %d\n", rc);
          return 1;
        }
        ctl_rss_kib = std::max(ctl_rss_kib, rss);
      } else {
        char* args[] = {const_cast<char*>("tar"), const_cast<char*>("-xf"), tarball.data(),
                        const_cast<char*>("-C"), dir.data(), nullptr};
        int rc = bench_run_child(args, nullptr, nullptr);
        if (rc != 0) {
          std::fprintf(stderr, "tar -x exited %d\n", rc);
          return 1;
        }
      }
      wall[which].push_back(Now() - t0);
      cpu[which].push_back(CpuSeconds(who) - c0);
      sys[which].push_back(SysSeconds(who) - s0);
      (void)graph::RemoveTree(dir);
    }
    if (!only_graph) {
      // What GNU tar would need on top to produce the diff id.
      double t0 = Now();
      double c0 = CpuSeconds(RUSAGE_CHILDREN);
      if (RunTar({"sha256sum", tarball}, true) != 0) return 1;
      sum_t.push_back(Now() - t0);
      sum_cpu.push_back(CpuSeconds(RUSAGE_CHILDREN) - c0);
    }
  }
  std::printf("tarball: %s (%.1f MB), %d runs, median\n", tarball.c_str(), st.st_size / 1e6, runs);
  std::printf("diff id: %s\n", diff_id.c_str());
  std::printf("| tool | wall s | MB/s | CPU s (user+sys) | of which sys s |\n|---|---|---|---|---|\n");
  for (Tool t : {kApply, kFresh, kStore, kGraphctl, kTar}) {
    if (wall[t].empty()) continue;
    double w = Median(wall[t]);
    std::printf("| %s | %.3f | %.0f | %.3f | %.3f |\n", names[t], w, st.st_size / 1e6 / w, Median(cpu[t]),
                Median(sys[t]));
  }
  if (only_graph) return 0;
  double g = Median(wall[kApply]), t = Median(wall[kTar]);
  double gc = Median(cpu[kApply]), tc = Median(cpu[kTar]);
  double s = Median(sum_t), sc = Median(sum_cpu);
  std::printf("| GNU tar -x, then sha256sum | %.3f | %.0f | %.3f | |\n", t + s, st.st_size / 1e6 / (t + s), tc + sc);
  std::printf("LayerStore::Import / tar -x: wall %.2f, CPU %.2f\n", Median(wall[kStore]) / t,
              Median(cpu[kStore]) / tc);
  if (with_graphctl) {
    double c = Median(wall[kGraphctl]), cc = Median(cpu[kGraphctl]);
    std::printf("graphctl import / tar -x: wall %.2f, CPU %.2f (target wall <= 1.1); graphctl peak RSS %.1f MiB\n",
                c / t, cc / tc, ctl_rss_kib / 1024.0);
  }
  std::printf("ratio wall (tar / graph): %.2f   ratio CPU (tar / graph): %.2f\n", t / g, tc / gc);
  std::printf("ratio wall (tar+sha256sum / graph): %.2f   ratio CPU: %.2f   load avg at end: ", (t + s) / g,
              (tc + sc) / gc);
  std::fflush(stdout);
  RunTar({"cat", "/proc/loadavg"});
  return 0;
}
