// Benchmark: import of a real root filesystem tarball with graph::ApplyLayer
// against GNU tar extracting the same file.
//
//   build/bench/graph_import_bench [--runs N] [--dir SCRATCH] TARBALL
//
// Each run extracts into a fresh directory on the scratch filesystem (default
// the tarball's directory), timing only the extraction; directories are
// removed between runs. Runs alternate between the two tools; the median is
// reported. Prints a markdown table row per tool and the ratio
// (tar time / graph time: > 1 means graph is faster).
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
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (a == "--dir" && i + 1 < argc) scratch = argv[++i];
    else if (a == "--only-graph") only_graph = true;
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
  std::vector<double> graph_t, tar_t, graph_cpu, tar_cpu, sum_t, sum_cpu;
  std::string diff_id;
  for (int r = 0; r < runs; ++r) {
    for (int tool = 0; tool < 2; ++tool) {
      int which = (r % 2 == 0) ? tool : 1 - tool;  // alternate who goes first
      if (only_graph && which == 1) continue;
      std::string dir = scratch + "/import-bench-" + std::to_string(getpid()) + "-" + std::to_string(which);
      (void)graph::RemoveTree(dir);
      if (mkdir(dir.c_str(), 0755) != 0) {
        std::perror(dir.c_str());
        return 1;
      }
      sync();
      double t0 = Now();
      double c0 = CpuSeconds(which == 0 ? RUSAGE_SELF : RUSAGE_CHILDREN);
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
  std::printf("ratio wall (tar / graph): %.2f   ratio CPU (tar / graph): %.2f\n", t / g, tc / gc);
  std::printf("ratio wall (tar+sha256sum / graph): %.2f   ratio CPU: %.2f   load avg at end: ", (t + s) / g,
              (tc + sc) / gc);
  std::fflush(stdout);
  RunTar({"cat", "/proc/loadavg"});
  return 0;
}
