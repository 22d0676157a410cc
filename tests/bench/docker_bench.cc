// Benchmark: dockerd on dmthin-docker-plugin against dockerd's own storage
// driver, side by side in one run: `docker load` of an image, N × `docker run
// --rm --network none IMAGE true`, then `docker rmi`. Each configuration gets
// a fresh dockerd (and plugin) with its own roots in a scratch dir; both run
// at once and take turns at every step (paired under the same load).
//
//   build/bench/docker_bench [--runs N]
//       host: the plugin on overlay vs dockerd's overlay2; the image is made
//       here: busybox-static, then a copy of /usr/share/zoneinfo (~900 files).
//   build/bench/docker_bench --rootfs ROOTFS.tar --image-out IMAGE.tar
//       makes the image only: a root filesystem tarball (a debootstrap;
//       tests/bench/graph_import.sh makes one) as first layer, then two small
//       layers (/usr/share/zoneinfo, /etc/ssl), as a docker-archive.
//   tests/vm/run -- build/bench/docker_bench --devicemapper --image IMAGE.tar [--runs N]
//       in the vm guest: the plugin on devicemapper vs dockerd's own
//       devicemapper with its loop-lvm defaults (sparse files under its data
//       root; dm.override_udev_sync_check=true, the guest has no udev).
//       Both pools live on the guest's tmpfs.
//
// (root) Prints a markdown table (seconds; run = median and total of N) and
// the ratio plugin / built-in (< 1 means the plugin is faster).
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

void PrintRow(const Row& r) {
  std::printf("| %s | %.3f | %.3f | %.2f | %.3f |\n", r.name.c_str(), r.load, r.run_median, r.run_total, r.rmi);
  std::fflush(stdout);
}

// One configuration under test: a dockerd with its storage driver (and,
// for the plugin, dmthin-docker-plugin on its own socket), up for the whole
// run so that the two configurations can take turns step by step.
class Config {
 public:
  // `plugin_driver` "" = dockerd's own `builtin` driver; `opts` are the
  // driver's storage options (dockerd's --storage-opt, or the plugin's).
  Config(std::string name, const std::string& dir, const std::string& plugin_driver, const std::string& builtin,
         const std::vector<std::string>& opts)
      : row_{std::move(name)} {
    ::mkdir(dir.c_str(), 0700);
    std::string driver = builtin;
    if (!plugin_driver.empty()) {
      driver = testsupport::UniqueName("dmthin-bench");
      plugin_socket_ = "/run/docker/plugins/" + driver + ".sock";
      ::mkdir("/run/docker", 0700);
      ::mkdir("/run/docker/plugins", 0700);
      std::vector<std::string> argv = {testsupport::BuiltTool("dmthin-docker-plugin"), "--root", dir + "/plugin",
                                       "--socket", plugin_socket_, "--driver", plugin_driver};
      for (const std::string& o : opts) argv.insert(argv.end(), {"--storage-opt", o});
      auto d = Daemon::Start(argv, dir + "/plugin.log");
      Must(d.status());
      plugind_ = std::move(*d);
      Must(plugind_->WaitForListening(plugin_socket_, absl::Seconds(120)), plugind_->Log());
    }
    dockerd_ = std::make_unique<testsupport::Dockerd>(dir + "/docker", driver,
                                                      plugin_driver.empty() ? opts : std::vector<std::string>{});
    // In the vm guest (TCG) containerd is slow to answer: started here, not by dockerd.
    if (builtin == "devicemapper" || plugin_driver == "devicemapper") dockerd_->OwnContainerd();
    Must(dockerd_->Start(), plugind_ ? plugind_->Log() : "");
  }
  ~Config() {
    dockerd_->Stop();
    if (plugind_) plugind_->Stop(SIGTERM).IgnoreError();
    if (!plugin_socket_.empty()) ::unlink(plugin_socket_.c_str());
  }

  void Load(const std::string& image) { row_.load = Timed({"load", "-i", image}); }
  void Run() { runs_.push_back(Timed({"run", "--rm", "--network", "none", "dmthin-bench:1", "true"})); }
  void Rmi() { row_.rmi = Timed({"rmi", "dmthin-bench:1"}); }

  const Row& Finish() {
    row_.run_total = 0;
    for (double t : runs_) row_.run_total += t;
    std::vector<double> sorted = runs_;
    std::sort(sorted.begin(), sorted.end());
    row_.run_median = sorted.empty() ? 0 : sorted[sorted.size() / 2];
    return row_;
  }

 private:
  double Timed(const std::vector<std::string>& args) {
    double t0 = Now();
    Must(dockerd_->Docker(args));
    double t = Now() - t0;
    std::fprintf(stderr, "docker_bench: %s: docker %s %.3f s\n", row_.name.c_str(), args[0].c_str(), t);
    return t;
  }

  Row row_;
  std::vector<double> runs_;
  std::string plugin_socket_;
  std::unique_ptr<Daemon> plugind_;
  std::unique_ptr<testsupport::Dockerd> dockerd_;
};

}  // namespace

int main(int argc, char** argv) {
  int runs = 20;
  bool devicemapper = false;
  std::string rootfs, image, image_out;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--devicemapper") {
      devicemapper = true;
    } else if (a == "--rootfs" && i + 1 < argc) {
      rootfs = argv[++i];
    } else if (a == "--image" && i + 1 < argc) {
      image = argv[++i];
    } else if (a == "--image-out" && i + 1 < argc) {
      image_out = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: docker_bench [--runs N] [--devicemapper --image TAR] [--rootfs TAR --image-out TAR]\n");
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
  if (devicemapper && ::access("/dev/mapper/control", F_OK) != 0) {
    std::printf("docker_bench: --devicemapper skipped (no /dev/mapper/control: run it in tests/vm/run)\n");
    return 0;
  }
  testsupport::ScratchDir dir("docker-bench");
  if (image.empty()) {
    // Layer 1 busybox-static (or the root filesystem), then small layers.
    auto built = rootfs.empty()
                     ? testsupport::BuildBusyboxImage(dir.Sub("image"), "dmthin-bench:1", {"sh", "true"}, {},
                                                      {{"/usr/share/zoneinfo", "/usr/share/zoneinfo"}})
                     : testsupport::BuildRootfsImage(dir.Sub("image"), "dmthin-bench:1", rootfs,
                                                     {{"/usr/share/zoneinfo", "/usr/share/zoneinfo"},
                                                      {"/etc/ssl", "/etc/ssl"}});
    Must(built.status());
    image = *built;
  }
  if (!image_out.empty()) {
    Must(testsupport::Run({"cp", "--", image, image_out}));
    std::printf("docker_bench: image written to %s\n", image_out.c_str());
    return 0;
  }
  // Both configurations up at once and taking turns at every step (the
  // order flips on every run), so that both see the same machine load: on
  // a shared machine a TCG guest's speed follows the host's load, and one
  // configuration after the other measured the load as much as the driver.
  std::string builtin_name = devicemapper ? "dockerd devicemapper (built in, loop-lvm)" : "dockerd overlay2 (built in)";
  std::string plugin_driver = devicemapper ? "devicemapper" : "overlay";
  // The plugin's devicemapper needs a pool: sparse loop files like dockerd's
  // loop-lvm (its default data file is 100 GB sparse).
  std::vector<std::string> plugin_opts;
  if (devicemapper) plugin_opts = {"dm.loopdatasize=100G"};
  Config builtin(builtin_name, dir.Sub("builtin"), "", devicemapper ? "devicemapper" : "overlay2",
                 devicemapper ? std::vector<std::string>{"dm.override_udev_sync_check=true"}
                              : std::vector<std::string>{});
  Config plugin("dmthin-docker-plugin, " + plugin_driver, dir.Sub("plugin"), plugin_driver, "", plugin_opts);
  builtin.Load(image);
  plugin.Load(image);
  for (int i = 0; i < runs; ++i) {
    Config& first = i % 2 == 0 ? builtin : plugin;
    Config& second = i % 2 == 0 ? plugin : builtin;
    first.Run();
    second.Run();
  }
  plugin.Rmi();
  builtin.Rmi();
  const Row& b = builtin.Finish();
  const Row& p = plugin.Finish();
  std::printf("| storage | docker load (s) | docker run --rm true, median (s) | %d runs total (s) | docker rmi (s) |\n",
              runs);
  std::printf("|---|---:|---:|---:|---:|\n");
  for (const Row* r : {&b, &p}) PrintRow(*r);
  std::printf("| plugin / built-in | %.2f | %.2f | %.2f | %.2f |\n", p.load / b.load, p.run_median / b.run_median,
              p.run_total / b.run_total, p.rmi / b.rmi);
  return 0;
}
