// Benchmark: import of a real root filesystem tarball with graph::ApplyLayer
// and with the graphctl tool (`graphctl --root FRESH import TARBALL`: store
// open, registry, the overlay driver's layer, diff id) against GNU tar
// extracting the same file.
//
//   build/bench/graph_import_bench [--runs N] [--dir SCRATCH] [--graphctl PATH] TARBALL
//
// Each run extracts into a fresh directory (graphctl: a fresh store) on the
// scratch filesystem (default the tarball's directory), timing only the
// extraction; directories are removed between runs. Runs rotate which tool
// goes first; the median is reported. Prints a markdown table row per tool
// and the ratios (tar time / graph time: > 1 means graph is faster; graphctl
// / tar: the paired ratio of issue 17, target <= 1.1).
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
    else tarball = a;
  }
  if (tarball.empty() || runs < 1) {
    std::fprintf(stderr, "usage: %s [--runs N] [--dir SCRATCH] TARBALL\n", argv[0]);
    return 2;
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
  std::vector<double> graph_t, tar_t, graph_cpu, tar_cpu, sum_t, sum_cpu, ctl_t, ctl_cpu;
  long ctl_rss_kib = 0;
  std::string diff_id;
  for (int r = 0; r < runs; ++r) {
    const int tools = with_graphctl ? 3 : 2;
    for (int tool = 0; tool < tools; ++tool) {
      int which = (tool + r) % tools;  // rotate who goes first
      if (only_graph && which != 0) continue;
      std::string dir = scratch + "/import-bench-" + std::to_string(getpid()) + "-" + std::to_string(which);
      (void)graph::RemoveTree(dir);
      if (mkdir(dir.c_str(), 0755) != 0) {
        std::perror(dir.c_str());
        return 1;
      }
      sync();
      double t0 = Now();
      double c0 = CpuSeconds(which == 0 ? RUSAGE_SELF : RUSAGE_CHILDREN);  // 1, 2: children
      if (which == 0) {
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
        graph_t.push_back(Now() - t0);
        graph_cpu.push_back(CpuSeconds(RUSAGE_SELF) - c0);
      } else if (which == 2) {
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
        ctl_t.push_back(Now() - t0);
        ctl_cpu.push_back(CpuSeconds(RUSAGE_CHILDREN) - c0);
        ctl_rss_kib = std::max(ctl_rss_kib, rss);
      } else {
        int rc = RunTar({"tar", "-xf", tarball, "-C", dir});
        if (rc != 0) {
          std::fprintf(stderr, "tar -x exited %d\n", rc);
          return 1;
        }
        tar_t.push_back(Now() - t0);
        tar_cpu.push_back(CpuSeconds(RUSAGE_CHILDREN) - c0);
      }
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
  if (only_graph) {
    tar_t.push_back(0);
    tar_cpu.push_back(0);
    sum_t.push_back(0);
    sum_cpu.push_back(0);
  }
  double g = Median(graph_t), t = Median(tar_t);
  std::printf("tarball: %s (%.1f MB), %d runs, median\n", tarball.c_str(), st.st_size / 1e6, runs);
  std::printf("diff id: %s\n", diff_id.c_str());
  double gc = Median(graph_cpu), tc = Median(tar_cpu);
  std::printf("| tool | wall s | MB/s | CPU s (user+sys) |\n|---|---|---|---|\n");
  std::printf("| graph::ApplyLayer (+sha256 diff id) | %.3f | %.0f | %.3f |\n", g, st.st_size / 1e6 / g, gc);
  std::printf("| GNU tar -x | %.3f | %.0f | %.3f |\n", t, st.st_size / 1e6 / t, tc);
  double s = Median(sum_t), sc = Median(sum_cpu);
  std::printf("| GNU tar -x, then sha256sum | %.3f | %.0f | %.3f |\n", t + s, st.st_size / 1e6 / (t + s), tc + sc);
  if (with_graphctl) {
    double c = Median(ctl_t), cc = Median(ctl_cpu);
    std::printf("| graphctl import (fresh store, overlay) | %.3f | %.0f | %.3f |\n", c, st.st_size / 1e6 / c, cc);
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
