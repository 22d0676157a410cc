// Benchmark: containerd on dmthin-snapshotter (proxy plugin, overlay
// driver) against containerd's built-in overlayfs snapshotter, side by side
// in one run on one containerd: the test image (tests/support/oci_image) is
// imported into both, then N rounds, alternating the two, of
//   prepare  `ctr snapshots prepare KEY TOP` (a new active snapshot)
//   remove   `ctr snapshots rm KEY`
//   run      `ctr run --rm IMAGE ID true`: prepare + mount + run + remove
// Each figure includes ctr's own start (the same for both).
//
//   build/bench/snapshotter_bench [--runs N]      (root; default N = 20)
//
// Prints a markdown table of medians (ms) and the ratio proxy / built-in.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/containerd.h"
#include "tests/support/daemon.h"
#include "tests/support/oci_image.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"

namespace {

using testsupport::RunResult;

constexpr char kImage[] = "docker.io/library/dmthin-bench:latest";

double NowMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Must(const RunResult& r) {
  if (!r.ok()) {
    std::fprintf(stderr, "snapshotter_bench: %s\n", r.Describe().c_str());
    std::exit(1);
  }
}

void Must(const absl::Status& s, const std::string& log = "") {
  if (!s.ok()) {
    std::fprintf(stderr, "snapshotter_bench: %s\n%s\n", s.ToString().c_str(), log.c_str());
    std::exit(1);
  }
}

// The image's top snapshot: the committed key that is nobody's parent.
std::string TopSnapshot(const testsupport::TestContainerd& c, const std::string& snapshotter) {
  RunResult ls = c.Ctr({"snapshots", "--snapshotter", snapshotter, "ls"});
  Must(ls);
  std::istringstream lines(ls.out);
  std::string line;
  std::getline(lines, line);  // header
  std::vector<std::string> keys;
  std::set<std::string> parents;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    if (f.empty()) continue;
    keys.push_back(f[0]);
    if (f.size() == 3) parents.insert(f[1]);
  }
  for (const std::string& k : keys) {
    if (parents.count(k) == 0) return k;
  }
  std::fprintf(stderr, "snapshotter_bench: no top snapshot in\n%s\n", ls.out.c_str());
  std::exit(1);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 20;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: snapshotter_bench [--runs N]\n");
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::printf("snapshotter_bench: skipped (needs root: containerd)\n");
    return 0;
  }
  std::string missing = testsupport::TestContainerd::Missing();
  for (const char* tool : {"umoci", "skopeo"}) {
    if (missing.empty() && !testsupport::HaveProgram(tool)) missing = std::string("no ") + tool;
  }
  if (!missing.empty()) {
    std::printf("snapshotter_bench: skipped (%s)\n", missing.c_str());
    return 0;
  }
  testsupport::ScratchDir dir("snapshotter-bench");
  std::string image = testsupport::MakeTestImage(dir.path(), kImage);
  std::string sock = dir.Sub("snapshotter.sock");
  auto s = testsupport::Daemon::Start({testsupport::BuiltTool("dmthin-snapshotter"), "--root", dir.Sub("store"),
                                       "--address", sock, "--driver", "overlay"},
                                      dir.Sub("snapshotter.log"));
  Must(s.status());
  std::unique_ptr<testsupport::Daemon> snapshotter = std::move(*s);
  Must(snapshotter->WaitForListening(sock), snapshotter->Log());
  auto c = testsupport::TestContainerd::Start(dir.path(), "dmthin", sock);
  Must(c.status());
  std::unique_ptr<testsupport::TestContainerd> containerd = std::move(*c);

  const std::vector<std::string> names = {"dmthin", "overlayfs"};
  std::map<std::string, double> import_ms;
  std::map<std::string, std::string> top;
  for (const std::string& n : names) {
    double t = NowMs();
    Must(containerd->Ctr({"images", "import", "--snapshotter", n, image}));
    import_ms[n] = NowMs() - t;
    top[n] = TopSnapshot(*containerd, n);
  }
  std::map<std::string, std::vector<double>> prepare, remove, run;
  for (int i = 0; i < runs; ++i) {
    for (const std::string& n : names) {
      std::string key = testsupport::UniqueName("bench-" + n);
      double t = NowMs();
      Must(containerd->Ctr({"snapshots", "--snapshotter", n, "prepare", key, top[n]}));
      prepare[n].push_back(NowMs() - t);
      t = NowMs();
      Must(containerd->Ctr({"snapshots", "--snapshotter", n, "rm", key}));
      remove[n].push_back(NowMs() - t);
      t = NowMs();
      Must(containerd->Ctr({"run", "--rm", "--snapshotter", n, kImage, key, "/bin/true"}));
      run[n].push_back(NowMs() - t);
    }
  }
  std::printf("| snapshotter | import (ms) | prepare, median (ms) | remove, median (ms) | "
              "run --rm true, median (ms) |\n|---|---:|---:|---:|---:|\n");
  for (const std::string& n : names) {
    std::printf("| %s | %.0f | %.1f | %.1f | %.1f |\n",
                n == "dmthin" ? "dmthin-snapshotter (proxy, overlay)" : "overlayfs (built in)", import_ms[n],
                Median(prepare[n]), Median(remove[n]), Median(run[n]));
  }
  std::printf("| proxy / built-in | %.2f | %.2f | %.2f | %.2f |\n", import_ms["dmthin"] / import_ms["overlayfs"],
              Median(prepare["dmthin"]) / Median(prepare["overlayfs"]),
              Median(remove["dmthin"]) / Median(remove["overlayfs"]), Median(run["dmthin"]) / Median(run["overlayfs"]));
  std::printf("(%d rounds, alternating; each figure includes ctr's start)\n", runs);
  containerd->Stop().IgnoreError();
  snapshotter->Stop(SIGTERM).IgnoreError();
  return 0;
}
