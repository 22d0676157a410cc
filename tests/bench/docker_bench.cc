// Benchmark: dockerd on dmthin-docker-plugin (overlay driver) against dockerd's
// own overlay2, side by side in one run: `docker load` of a two-layer image
// (busybox-static; a copy of /usr/share/zoneinfo, ~900 files), N × `docker
// run --rm --network none IMAGE true`, then `docker rmi`. Each configuration
// gets a fresh dockerd (and plugin) with its own roots in a scratch dir.
//
//   build/bench/docker_bench [--runs N]      (root; default N = 20)
//
// Prints a markdown table (seconds; run = median and total of N) and the
// ratio plugin / overlay2 (< 1 means the plugin is faster).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tests/support/daemon.h"
#include "tests/support/dockerd.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"

namespace {

using testsupport::Daemon;
using testsupport::RunResult;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Must(const RunResult& r) {
  if (!r.ok()) {
    std::fprintf(stderr, "docker_bench: %s\n%s\n", r.Describe().c_str(), r.out.c_str());
    std::exit(1);
  }
}

void Must(const absl::Status& s, const std::string& log = "") {
  if (!s.ok()) {
    std::fprintf(stderr, "docker_bench: %s\n%s\n", s.ToString().c_str(), log.c_str());
    std::exit(1);
  }
}

struct Row {
  std::string name;
  double load = 0, run_median = 0, run_total = 0, rmi = 0;
};

Row Measure(const std::string& name, const std::string& dir, bool plugin, const std::string& image, int runs) {
  ::mkdir(dir.c_str(), 0700);
  std::unique_ptr<Daemon> plugind;
  std::string driver = "overlay2";
  std::string plugin_socket;
  if (plugin) {
    driver = testsupport::UniqueName("dmthin-bench");
    plugin_socket = "/run/docker/plugins/" + driver + ".sock";
    auto d = Daemon::Start({testsupport::BuiltTool("dmthin-docker-plugin"), "--root", dir + "/plugin",
                            "--socket", plugin_socket, "--driver", "overlay"},
                           dir + "/plugin.log");
    Must(d.status());
    plugind = std::move(*d);
    Must(plugind->WaitForListening(plugin_socket), plugind->Log());
  }
  testsupport::Dockerd dockerd(dir + "/docker", driver);
  Must(dockerd.Start());
  auto docker = [&](std::vector<std::string> args) { return dockerd.Docker(args); };
  Row row{name};
  double t0 = Now();
  Must(docker({"load", "-i", image}));
  row.load = Now() - t0;
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    double t = Now();
    Must(docker({"run", "--rm", "--network", "none", "dmthin-bench:1", "true"}));
    times.push_back(Now() - t);
  }
  for (double t : times) row.run_total += t;
  std::sort(times.begin(), times.end());
  row.run_median = times[times.size() / 2];
  t0 = Now();
  Must(docker({"rmi", "dmthin-bench:1"}));
  row.rmi = Now() - t0;
  dockerd.Stop();
  if (plugind) plugind->Stop(SIGTERM).IgnoreError();
  ::unlink(plugin_socket.c_str());
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 20;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: docker_bench [--runs N]\n");
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::printf("docker_bench: skipped (needs root: dockerd)\n");
    return 0;
  }
  if (std::string missing = testsupport::MissingDockerTools(); !missing.empty()) {
    std::printf("docker_bench: skipped (%s)\n", missing.c_str());
    return 0;
  }
  testsupport::ScratchDir dir("docker-bench");
  // Layer 1 busybox-static, layer 2 a copy of /usr/share/zoneinfo.
  auto built = testsupport::BuildBusyboxImage(dir.Sub("image"), "dmthin-bench:1", {"sh", "true"}, {},
                                              {{"/usr/share/zoneinfo", "/usr/share/zoneinfo"}});
  Must(built.status());
  std::string image = *built;
  // One each, overlay2 first.
  Row builtin = Measure("dockerd overlay2 (built in)", dir.Sub("overlay2"), false, image, runs);
  Row plugin = Measure("dmthin-docker-plugin, overlay", dir.Sub("plugin"), true, image, runs);
  std::printf("| storage | docker load (s) | docker run --rm true, median (s) | %d runs total (s) | docker rmi (s) |\n",
              runs);
  std::printf("|---|---:|---:|---:|---:|\n");
  for (const Row& r : {builtin, plugin}) {
    std::printf("| %s | %.3f | %.3f | %.2f | %.3f |\n", r.name.c_str(), r.load, r.run_median, r.run_total, r.rmi);
  }
  std::printf("| plugin / overlay2 | %.2f | %.2f | %.2f | %.2f |\n", plugin.load / builtin.load,
              plugin.run_median / builtin.run_median, plugin.run_total / builtin.run_total,
              plugin.rmi / builtin.rmi);
  return 0;
}
